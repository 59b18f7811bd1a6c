// End-to-end prefill and decode tokens/s, mlx-bun vs mlx_lm.generate on the same checkpoint and prompt
// ids, greedy, same token count, for a short and a long case; plus where a decode step's time goes
// on each side (host build, the async eval call, the wait for the token, primitives per step), and
// copy bandwidth measured in the shim with the bound it implies.
import { existsSync } from "node:fs";
import { join } from "node:path";
import { generate, type GenerateOptions, type GenerationStats } from "../src/engine/generate.ts";
import { check, native } from "../src/native/ffi.ts";
import { DEFAULT_MODEL_DIR, loadModel, type Model } from "../src/models/index.ts";
import { BREAKDOWN_STEPS, type Breakdown, kindRows, STEP_COLUMNS, stepBreakdown, stepColumns } from "./step.ts";
import { Tokenizer } from "../src/tokenizer/tokenizer.ts";
import { PEER_PYTHON, runPeer } from "./peer.ts";
import { summarize, table } from "./stats.ts";

const ROOT = join(import.meta.dir, "..");

/** One generation's decode rate: tokens/s after the first, end-of-sequence ignored (`count` tokens,
 * an Error if fewer came). */
export async function decodeRate(
  model: Model,
  tokenizer: Tokenizer,
  prompt: number[],
  count: number,
  options: GenerateOptions = {},
): Promise<number> {
  let first = 0;
  let n = 0;
  for await (const _ of generate(model, tokenizer, prompt, { maxTokens: count, ignoreEos: true, ...options }))
    if (n++ === 0) first = performance.now();
  if (n !== count) throw new Error(`bench: ${n} tokens, expected ${count}`);
  return (n - 1) / ((performance.now() - first) / 1000);
}

/** Each mode once to warm up (round 0), then `rounds` alternating rounds: the rates by mode. */
export async function alternatingRounds(
  modes: Record<string, (round: number) => Promise<number>>,
  rounds: number,
): Promise<Record<string, number[]>> {
  for (const run of Object.values(modes)) await run(0);
  const rates: Record<string, number[]> = Object.fromEntries(Object.keys(modes).map((m) => [m, []]));
  for (let r = 1; r <= rounds; r++) for (const [mode, run] of Object.entries(modes)) rates[mode]!.push(await run(r));
  return rates;
}
/** Prompt tokens, generated tokens, timed repeats (after one warm-up). */
const CASES = [
  { name: "short", prompt: 128, tokens: 32, repeats: 3 },
  { name: "long", prompt: 1024, tokens: 256, repeats: 3 },
] as const;

export function copyBandwidth(): number {
  const out = new Float64Array(1);
  check(native().mlx_bench_copy_bandwidth(out, 256 * 2 ** 20, 10), "copy bandwidth");
  return out[0]!;
}

/** The models to run: MLXB_BENCH_MODELS, comma-separated: "default", or a shape of
 * make_bench_model.py with an optional ":bf16" (qwen3-0.6b, qwen3-8b:bf16, ...). */
export const MODELS = (process.env.MLXB_BENCH_MODELS ?? "default,qwen3-0.6b").split(",").map((m) => m.trim());

/** A checkpoint directory: the default model, or a 4-bit random-weight one made on first use. */
export function benchModel(name: string): string {
  if (name === "default") return DEFAULT_MODEL_DIR;
  const [shape, dtype] = name.split(":");
  if (dtype !== undefined && dtype !== "bf16")
    throw new Error(`bench model '${name}': the only dtype suffix is ':bf16'`);
  const dir = join(ROOT, ".cache", "models", `${shape}-shape-4bit${dtype ? "-bf16" : ""}`);
  if (!existsSync(join(dir, "config.json"))) {
    const script = join(import.meta.dir, "peers", "make_bench_model.py");
    const args = [dir, DEFAULT_MODEL_DIR, shape!, dtype ? "bfloat16" : "float32"];
    const made = Bun.spawnSync([PEER_PYTHON, script, ...args]);
    if (made.exitCode !== 0) throw new Error(`make_bench_model.py ${name} failed: ${made.stderr}`);
  }
  return dir;
}

async function ours(dir: string, prompt: number[], maxTokens: number, repeats: number) {
  const model = loadModel(dir, { backend: "mlx" });
  const tokenizer = Tokenizer.fromDir(dir);
  const runs: { prefill: number; decode: number }[] = [];
  let tokens: number[] = [];
  for (let r = 0; r <= repeats; r++) {
    const stats: Partial<GenerationStats> = {};
    tokens = [];
    for await (const chunk of generate(
      model,
      tokenizer,
      prompt,
      { maxTokens, ignoreEos: true, temperature: 0, exceedContext: true },
      stats,
    )) {
      tokens.push(chunk.token);
    }
    if (r > 0)
      runs.push({
        prefill: stats.promptTokens! / stats.prefillSeconds!,
        decode: (stats.generatedTokens! - 1) / stats.decodeSeconds!,
      });
  }
  const bytes = [...model.checkpoint.weights.values()].reduce((n, t) => n + t.nbytes, 0);
  model.dispose();
  return { runs, bytes, tokens };
}

export async function run(): Promise<Record<string, unknown>> {
  const bandwidth = copyBandwidth();
  const results: Record<string, unknown> = { copyBandwidthGBs: bandwidth / 1e9 };
  const rows: (string | number)[][] = [];
  const steps: (string | number)[][] = [];
  const kinds: (string | number)[][] = [];
  for (const dir of MODELS.map(benchModel)) {
    const name = dir.split("/").pop()!;
    for (const c of CASES) {
      const prompt = Array.from({ length: c.prompt }, (_, i) => (i * 37) % 1000);
      const mine = await ours(dir, prompt, c.tokens, c.repeats);
      const peer = runPeer("decode.py", [dir, JSON.stringify(prompt), String(c.tokens), String(c.repeats)]) as {
        runs: { prefill: number; decode: number }[];
        tokens: number[];
      };
      let same = 0;
      while (same < c.tokens && mine.tokens[same] === peer.tokens[same]) same++;
      const pick = (runs: { prefill: number; decode: number }[], key: "prefill" | "decode") =>
        summarize(runs.map((r) => r[key]));
      const bound = bandwidth / mine.bytes;
      for (const key of ["prefill", "decode"] as const) {
        const a = pick(mine.runs, key);
        const b = pick(peer.runs, key);
        const decode = key === "decode";
        const label = `${name} ${c.name} ${key}`;
        rows.push([
          label,
          a.median,
          b.median,
          a.median / b.median,
          decode ? bound : "-",
          decode ? `${same}/${c.tokens}` : "-",
          a.spread,
          b.spread,
        ]);
        results[label] = {
          mlxBun: a,
          mlxLm: b,
          boundTokensPerSecond: decode ? bound : undefined,
          sameGreedyTokens: decode ? same : undefined,
        };
      }
    }
    const model = loadModel(dir, { backend: "mlx" });
    for (const c of CASES) {
      const prompt = Array.from({ length: c.prompt }, (_, i) => (i * 37) % 1000);
      const replayed = stepBreakdown(model, prompt, true);
      const executor = stepBreakdown(model, prompt, false);
      const lm = runPeer("step.py", [dir, JSON.stringify(prompt), String(BREAKDOWN_STEPS)]) as Breakdown;
      for (const [who, b] of [
        ["mlx-bun (replay)", replayed],
        ["mlx-bun (executor)", executor],
        ["mlx-lm", lm],
      ] as const) {
        steps.push([`${name} ${c.name} ${who}`, ...stepColumns(b, lm)]);
      }
      results[`${name} ${c.name} step`] = { replayed, executor, mlxLm: lm };
      if (c.name === "short") kinds.push(...kindRows(name, replayed, lm));
    }
    model.dispose();
  }
  table(
    `End to end, greedy (tokens/s): short = 128-token prompt, 32 tokens; long = 1024-token prompt, 256 tokens. Copy bandwidth ${(bandwidth / 1e9).toFixed(1)} GB/s; ` +
      "bound = bandwidth / weight bytes read per token; same = leading greedy tokens equal to mlx-lm's. " +
      "mlx-bun runs its default (rewritten) graph with replayed decode steps.",
    ["model, case, phase", "mlx-bun", "mlx-lm", "ratio bun/lm", "bound", "same", "spread bun", "spread lm"],
    rows,
  );
  table(
    `One decode step (ms, mean of ${BREAKDOWN_STEPS - 4} after 4; after the short case's 128-token prompt or the long case's 1024): host build, the async eval call, the wait for the token; primitives per step`,
    ["model, who", ...STEP_COLUMNS],
    steps,
  );
  table(
    "Primitives per decode step by kind, where mlx-bun's (replay) and mlx-lm's counts differ (short case)",
    ["model, primitive", "mlx-bun", "mlx-lm"],
    kinds,
  );
  return results;
}
