// KV cache variants on the default model: memory per cached position (computed from the layout:
// layers x kv heads x 2 x (head_dim values, or packed head_dim + a scale and a bias per group); the
// plain cache's also measured as MLX active memory of a 4096-position cache) and greedy decode
// tokens/s of a 256-token prompt + 128 tokens with each: plain, kvBits 8 and 4, maxKvSize 320.
import { generate, type GenerateOptions, type GenerationStats } from "../src/engine/generate.ts";
import { itemSize } from "../src/dtype.ts";
import { createCache, DEFAULT_MODEL_DIR, loadModel } from "../src/models/index.ts";
import { evalAll } from "../src/ops/core.ts";
import { memory } from "../src/ops/memory.ts";
import { Tokenizer } from "../src/tokenizer/tokenizer.ts";
import { summarize, table } from "./stats.ts";

const POSITIONS = 4096;

export async function run(): Promise<Record<string, unknown>> {
  const model = loadModel(DEFAULT_MODEL_DIR, { backend: "mlx" });
  const tokenizer = Tokenizer.fromDir(DEFAULT_MODEL_DIR);
  const prompt = Array.from({ length: 256 }, (_, i) => 1 + ((i * 37) % 8000));
  const variants: [string, { kvBits?: number }, GenerateOptions][] = [
    ["plain", {}, {}],
    ["kvBits 8", { kvBits: 8 }, { kvBits: 8 }],
    ["kvBits 4", { kvBits: 4 }, { kvBits: 4 }],
    ["maxKvSize 320", {}, { maxKvSize: 320 }],
  ];
  const rows: (string | number)[][] = [];
  const results: Record<string, unknown> = {};
  for (const [name, cacheOptions, options] of variants) {
    const { layers, kvHeads, headDim } = model.config;
    const item = itemSize(model.dtype);
    const bits = cacheOptions.kvBits;
    const perPosition =
      2 * layers * kvHeads * (bits === undefined ? headDim * item : (headDim * bits) / 8 + 2 * (headDim / 64) * item);
    if (name === "plain") {
      const before = memory.active();
      const cache = createCache(model, 1, POSITIONS, cacheOptions);
      evalAll(cache.tensors());
      results["plain measured bytes/position"] = (memory.active() - before) / POSITIONS;
      cache.dispose();
    }
    const rates: number[] = [];
    for (let r = 0; r <= 3; r++) {
      const stats: Partial<GenerationStats> = {};
      for await (const _ of generate(model, tokenizer, prompt, { maxTokens: 128, ignoreEos: true, ...options }, stats));
      if (r > 0) rates.push((stats.generatedTokens! - 1) / stats.decodeSeconds!);
    }
    const s = summarize(rates);
    rows.push([
      name,
      name.startsWith("maxKvSize") ? `${perPosition} (320 positions at most)` : perPosition,
      s.median,
      s.spread,
    ]);
    results[name] = { bytesPerPosition: perPosition, decode: s };
  }
  model.dispose();
  table(
    `KV cache variants, default model (bytes per cached position, plain measured: ${results["plain measured bytes/position"]}; decode tokens/s, 256-token prompt + 128)`,
    ["cache", "bytes/position", "decode tok/s", "spread"],
    rows,
  );
  return results;
}
