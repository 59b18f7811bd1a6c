// End-to-end prefill and decode tokens/s, mlx-bun vs mlx_lm.generate on the same checkpoint and prompt
// ids, greedy, same token count; plus copy bandwidth measured in the shim and the bound it implies.
import { existsSync } from "node:fs";
import { join } from "node:path";
import { generate, type GenerationStats } from "../src/generate.ts";
import { check, native } from "../src/native/ffi.ts";
import { loadModel } from "../src/models/index.ts";
import { Tokenizer } from "../src/tokenizer.ts";
import { PEER_PYTHON, runPeer } from "./peer.ts";
import { summarize, table } from "./stats.ts";

const ROOT = join(import.meta.dir, "..");
const PROMPT_TOKENS = 128;
const MAX_TOKENS = 32;
const REPEATS = 3;

function copyBandwidth(): number {
  const out = new Float64Array(1);
  check(native().mlx_bench_copy_bandwidth(out, 256 * 2 ** 20, 10), "copy bandwidth");
  return out[0]!;
}

/** The models to run: MLXB_BENCH_MODELS, comma-separated: "default", or a shape of
 * make_bench_model.py with an optional ":bf16" (qwen3-0.6b, qwen3-8b:bf16, ...). */
const MODELS = (process.env.MLXB_BENCH_MODELS ?? "default,qwen3-0.6b").split(",").map((m) => m.trim());

/** A checkpoint directory: the default model, or a 4-bit random-weight one made on first use. */
function benchModel(name: string): string {
  if (name === "default") return join(ROOT, ".cache", "models", "default");
  const [shape, dtype] = name.split(":");
  if (dtype !== undefined && dtype !== "bf16") throw new Error(`bench model '${name}': the only dtype suffix is ':bf16'`);
  const dir = join(ROOT, ".cache", "models", `${shape}-shape-4bit${dtype ? "-bf16" : ""}`);
  if (!existsSync(join(dir, "config.json"))) {
    const script = join(import.meta.dir, "peers", "make_bench_model.py");
    const args = [dir, join(ROOT, ".cache", "models", "default"), shape!, dtype ? "bfloat16" : "float32"];
    const made = Bun.spawnSync([PEER_PYTHON, script, ...args]);
    if (made.exitCode !== 0) throw new Error(`make_bench_model.py ${name} failed: ${made.stderr}`);
  }
  return dir;
}

async function ours(dir: string, prompt: number[]) {
  const model = loadModel(dir);
  const tokenizer = Tokenizer.fromDir(dir);
  const runs: { prefill: number; decode: number }[] = [];
  let tokens: number[] = [];
  for (let r = 0; r <= REPEATS; r++) {
    const stats: Partial<GenerationStats> = {};
    tokens = [];
    for await (const chunk of generate(model, tokenizer, prompt, { maxTokens: MAX_TOKENS, ignoreEos: true, temperature: 0 }, stats)) {
      tokens.push(chunk.token);
    }
    if (r > 0) runs.push({ prefill: stats.promptTokens! / stats.prefillSeconds!, decode: (stats.generatedTokens! - 1) / stats.decodeSeconds! });
  }
  const bytes = [...model.checkpoint.weights.values()].reduce((n, t) => n + t.nbytes, 0);
  model.dispose();
  return { runs, bytes, tokens };
}

export async function run(): Promise<Record<string, unknown>> {
  const bandwidth = copyBandwidth();
  const results: Record<string, unknown> = { copyBandwidthGBs: bandwidth / 1e9 };
  const rows: (string | number)[][] = [];
  for (const dir of MODELS.map(benchModel)) {
    const prompt = Array.from({ length: PROMPT_TOKENS }, (_, i) => (i * 37) % 1000);
    const mine = await ours(dir, prompt);
    const peer = runPeer("decode.py", [dir, JSON.stringify(prompt), String(MAX_TOKENS), String(REPEATS)]) as {
      runs: { prefill: number; decode: number }[];
      tokens: number[];
    };
    let same = 0;
    while (same < MAX_TOKENS && mine.tokens[same] === peer.tokens[same]) same++;
    const pick = (runs: { prefill: number; decode: number }[], key: "prefill" | "decode") => summarize(runs.map((r) => r[key]));
    const name = dir.split("/").pop()!;
    const bound = bandwidth / mine.bytes;
    for (const key of ["prefill", "decode"] as const) {
      const a = pick(mine.runs, key);
      const b = pick(peer.runs, key);
      const decode = key === "decode";
      rows.push([`${name} ${key}`, a.median, b.median, a.median / b.median, decode ? bound : "-", decode ? `${same}/${MAX_TOKENS}` : "-", a.spread, b.spread]);
      results[`${name} ${key}`] = { mlxBun: a, mlxLm: b, boundTokensPerSecond: decode ? bound : undefined, sameGreedyTokens: decode ? same : undefined };
    }
  }
  table(
    `End to end, greedy, ${PROMPT_TOKENS}-token prompt, ${MAX_TOKENS} tokens (tokens/s); copy bandwidth ${(bandwidth / 1e9).toFixed(1)} GB/s; ` +
      "bound = bandwidth / weight bytes read per token; same = leading greedy tokens equal to mlx-lm's. " +
      "mlx-bun runs its default (rewritten) graph.",
    ["model, phase", "mlx-bun", "mlx-lm", "ratio bun/lm", "bound", "same", "spread bun", "spread lm"],
    rows,
  );
  return results;
}
