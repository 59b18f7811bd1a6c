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

function ensureBenchModel(): string {
  const dir = join(ROOT, ".cache", "models", "qwen3-0.6b-shape-4bit");
  if (!existsSync(join(dir, "config.json"))) {
    const made = Bun.spawnSync([PEER_PYTHON, join(import.meta.dir, "peers", "make_bench_model.py"), dir, join(ROOT, ".cache", "models", "default")]);
    if (made.exitCode !== 0) throw new Error(`make_bench_model.py failed: ${made.stderr}`);
  }
  return dir;
}

async function ours(dir: string, prompt: number[]) {
  const model = loadModel(dir);
  const tokenizer = Tokenizer.fromDir(dir);
  const runs: { prefill: number; decode: number }[] = [];
  for (let r = 0; r <= REPEATS; r++) {
    const stats: Partial<GenerationStats> = {};
    for await (const _ of generate(model, tokenizer, prompt, { maxTokens: MAX_TOKENS, ignoreEos: true, temperature: 0 }, stats)) {
    }
    if (r > 0) runs.push({ prefill: stats.promptTokens! / stats.prefillSeconds!, decode: (stats.generatedTokens! - 1) / stats.decodeSeconds! });
  }
  const bytes = [...model.checkpoint.weights.values()].reduce((n, t) => n + t.nbytes, 0);
  model.dispose();
  return { runs, bytes };
}

export async function run(): Promise<Record<string, unknown>> {
  const bandwidth = copyBandwidth();
  const results: Record<string, unknown> = { copyBandwidthGBs: bandwidth / 1e9 };
  const rows: (string | number)[][] = [];
  for (const dir of [join(ROOT, ".cache", "models", "default"), ensureBenchModel()]) {
    const prompt = Array.from({ length: PROMPT_TOKENS }, (_, i) => (i * 37) % 1000);
    const mine = await ours(dir, prompt);
    const peer = runPeer("decode.py", [dir, JSON.stringify(prompt), String(MAX_TOKENS), String(REPEATS)]) as { prefill: number; decode: number }[];
    const pick = (runs: { prefill: number; decode: number }[], key: "prefill" | "decode") => summarize(runs.map((r) => r[key]));
    const name = dir.split("/").pop()!;
    const bound = bandwidth / mine.bytes;
    for (const key of ["prefill", "decode"] as const) {
      const a = pick(mine.runs, key);
      const b = pick(peer, key);
      rows.push([`${name} ${key}`, a.median, b.median, a.median / b.median, key === "decode" ? bound : "-", a.spread, b.spread]);
      results[`${name} ${key}`] = { mlxBun: a, mlxLm: b, boundTokensPerSecond: key === "decode" ? bound : undefined };
    }
  }
  table(
    `End to end, greedy, ${PROMPT_TOKENS}-token prompt, ${MAX_TOKENS} tokens (tokens/s); copy bandwidth ${(bandwidth / 1e9).toFixed(1)} GB/s; ` +
      "bound = bandwidth / weight bytes read per token. mlx-bun runs its default (rewritten) graph.",
    ["model, phase", "mlx-bun", "mlx-lm", "ratio bun/lm", "bound", "spread bun", "spread lm"],
    rows,
  );
  return results;
}
