// End-to-end prefill and decode tokens/s, mlx-bun vs mlx_lm.generate on the same checkpoint and prompt
// ids, greedy, same token count, for each case (MLXB_BENCH_CASES), with llama.cpp's CUDA build as a
// third side on a GPU; plus (unless MLXB_BENCH_BREAKDOWN=0) where a decode step's time goes
// on each side (host build, the async eval call, the wait for the token, primitives per step), and
// the device's read bandwidth measured in the shim with the decode bound it implies.
import { existsSync } from "node:fs";
import { join } from "node:path";
import { generate, type GenerateOptions, type GenerationStats } from "../src/engine/generate.ts";
import { itemSize } from "../src/dtype.ts";
import { deviceInfo } from "../src/native/device.ts";
import { check, native } from "../src/native/ffi.ts";
import { DEFAULT_MODEL_DIR, loadModel, type Model } from "../src/models/index.ts";
import { BREAKDOWN_STEPS, type Breakdown, kindRows, STEP_COLUMNS, stepBreakdown, stepColumns } from "./step.ts";
import { Tokenizer } from "../src/tokenizer/tokenizer.ts";
import { PEER_PYTHON, runLlamaCpp, runPeer } from "./peer.ts";
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
/** The cases: prompt tokens + generated tokens, from MLXB_BENCH_CASES ("128+32,1024+256" unless
 * set; e.g. "512+128"); each timed 3 times after one warm-up. */
const CASES = (process.env.MLXB_BENCH_CASES ?? "128+32,1024+256").split(",").map((c) => {
  const [prompt, tokens] = c.split("+").map(Number);
  if (!Number.isInteger(prompt) || !Number.isInteger(tokens) || prompt! < 1 || tokens! < 2)
    throw new Error(`MLXB_BENCH_CASES: '${c}' is not PROMPT+TOKENS (integers, at least 1 and 2)`);
  return { name: c.trim(), prompt: prompt!, tokens: tokens!, repeats: 3 };
});

/** A GGUF file of random Q4_0 weights in the shape of the checkpoint in `dir`, for llama.cpp
 * (peers/make_bench_gguf.py; made on first use, in .cache/models/). */
export function randomQ4Gguf(dir: string): string {
  const file = join(ROOT, ".cache", "models", `${dir.split("/").pop()}-random-q4_0.gguf`);
  if (!existsSync(file)) runPeer("make_bench_gguf.py", [dir, file]);
  return file;
}

/** llama.cpp (node-llama-cpp's CUDA build, every layer on the GPU) as a third side when MLX runs on
 * a GPU, unless MLXB_BENCH_LLAMA=0, on a random Q4_0 GGUF file of the checkpoint's shape. */
function llamaCppCuda(
  dir: string,
  prompt: number[],
  tokens: number,
  repeats: number,
): { prefill: number; decode: number }[] {
  const file = randomQ4Gguf(dir);
  return Array.from(
    { length: repeats },
    () =>
      runLlamaCpp("llama-cpp-rate.mjs", [file, JSON.stringify(prompt), String(tokens), "4", "cuda"]) as {
        prefill: number;
        decode: number;
      },
  );
}

/** The default device's read bandwidth (bytes/s): best of 10 sums of a 4 GiB buffer on a GPU (on CUDA
 * each a kernel of the shim's reading it 4 times), 1 GiB on a CPU (the shim's
 * mlx_bench_read_bandwidth). */
export function readBandwidth(): number {
  const out = new Float64Array(1);
  const bytes = deviceInfo().device === "gpu" ? 4 * 2 ** 30 : 2 ** 30;
  check(native().mlx_bench_read_bandwidth(out, bytes, 10), "read bandwidth");
  return out[0]!;
}

/** Bytes one decode step reads at `context` positions: every weight once, except an embedding table
 * that is not also the output layer (its lookup reads one row), plus the keys and values of the KV
 * cache (the model's activation dtype). */
export function bytesPerToken(model: Model, context: number): number {
  const c = model.config;
  let bytes = 0;
  for (const [name, t] of model.checkpoint.weights) {
    const lookupOnly = !c.tieEmbeddings && name.startsWith("model.embed_tokens.");
    bytes += lookupOnly ? t.nbytes / c.vocabSize : t.nbytes;
  }
  return bytes + 2 * c.layers * c.kvHeads * c.headDim * context * itemSize(model.dtype);
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
  // The mean context of a decode step: the prompt plus half the generated tokens.
  const bytes = bytesPerToken(model, prompt.length + maxTokens / 2);
  model.dispose();
  return { runs, bytes, tokens };
}

export async function run(): Promise<Record<string, unknown>> {
  const bandwidth = readBandwidth();
  const results: Record<string, unknown> = { readBandwidthGBs: bandwidth / 1e9 };
  const rows: (string | number)[][] = [];
  const steps: (string | number)[][] = [];
  const kinds: (string | number)[][] = [];
  const withLlama = deviceInfo().device === "gpu" && process.env.MLXB_BENCH_LLAMA !== "0";
  for (const dir of MODELS.map(benchModel)) {
    const name = dir.split("/").pop()!;
    for (const c of CASES) {
      const prompt = Array.from({ length: c.prompt }, (_, i) => (i * 37) % 1000);
      const mine = await ours(dir, prompt, c.tokens, c.repeats);
      const peer = runPeer("decode.py", [dir, JSON.stringify(prompt), String(c.tokens), String(c.repeats)]) as {
        runs: { prefill: number; decode: number }[];
        tokens: number[];
      };
      const llama = withLlama ? llamaCppCuda(dir, prompt, c.tokens, c.repeats) : null;
      let same = 0;
      while (same < c.tokens && mine.tokens[same] === peer.tokens[same]) same++;
      const pick = (runs: { prefill: number; decode: number }[], key: "prefill" | "decode") =>
        summarize(runs.map((r) => r[key]));
      const bound = bandwidth / mine.bytes;
      for (const key of ["prefill", "decode"] as const) {
        const a = pick(mine.runs, key);
        const b = pick(peer.runs, key);
        const l = llama ? pick(llama, key) : null;
        const decode = key === "decode";
        const label = `${name} ${c.name} ${key}`;
        rows.push([
          label,
          a.median,
          b.median,
          l ? l.median : "-",
          a.median / b.median,
          l ? a.median / l.median : "-",
          decode ? mine.bytes / 1e6 : "-",
          decode ? bound : "-",
          decode ? a.median / bound : "-",
          decode ? `${same}/${c.tokens}` : "-",
          a.spread,
          b.spread,
          l ? l.spread : "-",
        ]);
        results[label] = {
          mlxBun: a,
          mlxLm: b,
          llamaCppCuda: l ?? undefined,
          bytesPerToken: decode ? mine.bytes : undefined,
          boundTokensPerSecond: decode ? bound : undefined,
          sameGreedyTokens: decode ? same : undefined,
        };
      }
    }
    if (process.env.MLXB_BENCH_BREAKDOWN === "0") continue;
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
      if (c === CASES[0]) kinds.push(...kindRows(name, replayed, lm));
    }
    model.dispose();
  }
  table(
    `End to end, greedy (tokens/s), case = prompt tokens + generated tokens. Read bandwidth ${(bandwidth / 1e9).toFixed(1)} GB/s (best of 10 sums of a ${deviceInfo().device === "gpu" ? "4 GiB buffer, on CUDA each reading it 4 times" : "1 GiB buffer"}); ` +
      "MB read/token = weights read by a decode step (an untied embedding table: one row) + the KV cache at the mean context; " +
      "bound = read bandwidth / those bytes; share = mlx-bun / bound; same = leading greedy tokens equal to mlx-lm's; " +
      "llama.cpp = node-llama-cpp's CUDA build on a random Q4_0 GGUF of the same shape (on a GPU only). " +
      "mlx-bun runs its default (rewritten) graph with replayed decode steps.",
    [
      "model, case, phase",
      "mlx-bun",
      "mlx-lm",
      "llama.cpp",
      "bun/lm",
      "bun/llama.cpp",
      "MB read/token",
      "bound",
      "share",
      "same",
      "spread bun",
      "spread lm",
      "spread llama.cpp",
    ],
    rows,
  );
  table(
    `One decode step (ms, mean of ${BREAKDOWN_STEPS - 4} after 4; after each case's prompt): host build, the async eval call, the wait for the token; primitives per step`,
    ["model, who", ...STEP_COLUMNS],
    steps,
  );
  table(
    "Primitives per decode step by kind, where mlx-bun's (replay) and mlx-lm's counts differ (first case)",
    ["model, primitive", "mlx-bun", "mlx-lm"],
    kinds,
  );
  return results;
}
