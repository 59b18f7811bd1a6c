// Batch generation throughput (generated tokens/s, greedy, 32 tokens per prompt) at N = 1, 4 and 16
// prompts of 8 to 40 tokens, mlx-bun's generateBatch and mlx-lm's batch_generate side by side on
// the same libmlx and checkpoint (MLXB_BENCH_MODELS, default: the default model; names as decode.ts).
import { tmpdir } from "node:os";
import { join } from "node:path";
import { writeFileSync } from "node:fs";
import { generateBatch } from "../src/engine/batch.ts";
import { loadModel } from "../src/models/index.ts";
import { benchModel } from "./decode.ts";
import { Tokenizer } from "../src/tokenizer/tokenizer.ts";
import { runPeer } from "./peer.ts";
import { summarize, table } from "./stats.ts";

const SIZES = [1, 4, 16];
const MAX_TOKENS = 32;
const REPS = 3;
const PROMPTS = Array.from({ length: 16 }, (_, i) =>
  Array.from({ length: 8 + ((i * 7) % 33) }, (_, t) => 1 + ((i * 131 + t * 37) % 8000)),
);

export async function run(): Promise<Record<string, unknown>> {
  const results: Record<string, unknown> = {};
  for (const name of (process.env.MLXB_BENCH_MODELS ?? "default").split(","))
    results[name] = await runModel(name.trim());
  return results;
}

async function runModel(name: string): Promise<Record<string, unknown>> {
  const dir = benchModel(name);
  const model = loadModel(dir, { backend: "mlx" });
  const tokenizer = Tokenizer.fromDir(dir);
  const ours: Record<string, number[]> = {};
  for (const n of SIZES) {
    const prompts = PROMPTS.slice(0, n);
    for await (const _ of generateBatch(model, tokenizer, prompts, { maxTokens: 4, ignoreEos: true }));
    ours[n] = [];
    for (let r = 0; r < REPS; r++) {
      const start = performance.now();
      let tokens = 0;
      for await (const chunk of generateBatch(model, tokenizer, prompts, { maxTokens: MAX_TOKENS, ignoreEos: true }))
        if (!chunk.stop) tokens++;
      ours[n]!.push(tokens / ((performance.now() - start) / 1000));
    }
  }
  model.dispose();
  const spec = join(tmpdir(), `mlxb-batch-${process.pid}.json`);
  writeFileSync(spec, JSON.stringify({ prompts: PROMPTS, max_tokens: MAX_TOKENS, sizes: SIZES, reps: REPS }));
  const peer = runPeer("batch.py", [dir, spec]) as Record<string, number[]>;
  const rows = SIZES.map((n) => {
    const a = summarize(ours[n]!);
    const b = summarize(peer[n]!);
    return [n, a.median, b.median, a.median / b.median, a.spread, b.spread];
  });
  table(
    `Batch generation, ${name}, ${MAX_TOKENS} tokens per prompt (generated tokens/s)`,
    ["prompts", "mlx-bun", "mlx-lm", "ratio", "spread bun", "spread lm"],
    rows,
  );
  return { ours, peer };
}
