// KV cache variants against mlx-lm (scripts/fixtures/kv_variants.py): rotating caches (generate's
// maxKvSize, the first 4 positions kept as mlx-lm's max_kv_size; a Mistral's sliding window), greedy
// well past the bound on MLX and the CPU reference; quantized caches (kvBits 4 and 8) on MLX.
import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import {
  createCache,
  DEFAULT_MODEL_DIR,
  forward,
  generateText,
  type Graph,
  loadModel,
  rewrite,
  Tensor,
  Tokenizer,
} from "../src/index.ts";
import { decode, type EncodedArray, fixture, maxAbsDiff } from "./helpers.ts";

const f = fixture<{
  prompt: number[];
  qwen3: { maxKvSize: number; tokens: number[]; unbounded: number[] };
  mistral: { slidingWindow: number; tokens: number[]; unbounded: number[] };
}>("kv_variants.json");
const dir = (name: string) => join(import.meta.dir, "fixtures", "data", "models", name);

for (const backend of ["mlx", "cpu"] as const) {
  describe(`rotating KV caches (${backend})`, () => {
    test("maxKvSize: mlx-lm's tokens with max_kv_size (they differ from an unbounded cache's)", async () => {
      const model = loadModel(dir("qwen3"), { backend });
      const tokenizer = Tokenizer.fromDir(dir("qwen3"));
      const options = { maxTokens: f.qwen3.tokens.length, ignoreEos: true };
      expect(
        (await generateText(model, tokenizer, f.prompt, { ...options, maxKvSize: f.qwen3.maxKvSize })).tokens,
      ).toEqual(f.qwen3.tokens);
      expect((await generateText(model, tokenizer, f.prompt, options)).tokens).toEqual(f.qwen3.unbounded);
      expect(f.qwen3.tokens).not.toEqual(f.qwen3.unbounded);
      await expect(generateText(model, tokenizer, f.prompt, { maxKvSize: 4 })).rejects.toThrow(
        "generate: maxKvSize must be an integer > 4",
      );
      await expect(generateText(model, tokenizer, f.prompt, { maxKvSize: 6, maxTokens: 8 })).rejects.toThrow(
        "the prompt (8 tokens) is longer than maxKvSize (6)",
      );
      model.dispose();
    });

    test("a Mistral's sliding window: mlx-lm's tokens with the window applied", async () => {
      const model = loadModel(dir("mistral-window"), { backend });
      expect(model.config.slidingWindow).toBe(f.mistral.slidingWindow);
      const tokenizer = Tokenizer.fromDir(dir("mistral-window"));
      const { tokens } = await generateText(model, tokenizer, f.prompt, {
        maxTokens: f.mistral.tokens.length,
        ignoreEos: true,
      });
      expect(tokens).toEqual(f.mistral.tokens);
      expect(f.mistral.tokens).not.toEqual(f.mistral.unbounded);
      model.dispose();
    });
  });
}

test("a rotating cache takes one position at a time once full, no padding, no going back", () => {
  const model = loadModel(dir("qwen3"), { backend: "mlx" });
  using cache = createCache(model, 1, 8, { keep: 2 });
  expect(() => cache.setLeftPadding([1])).toThrow("a rotating cache takes no padding");
  expect(() => createCache(model, 1, 8, { keep: 8 })).toThrow("keep must be an integer in [0, 8)");
  model.dispose();
});

describe("quantized KV cache (kvBits, MLX)", () => {
  const q = fixture<{
    quantized: Record<"plain" | "4" | "8", { tokens: number[]; logprobs: EncodedArray }> & { prompt: number[] };
  }>("kv_variants.json").quantized;

  /** Log-probabilities of the token after the prompt, through a cache made with `options`. */
  function firstLogprobs(
    model: ReturnType<typeof loadModel>,
    options: { kvBits?: number },
    graph?: Graph,
  ): Float32Array {
    const cache = createCache(model, 1, 64, options);
    const head = Tensor.from(Int32Array.from(q.prompt.slice(0, -1)), [1, q.prompt.length - 1]);
    const last = Tensor.from(Int32Array.of(q.prompt.at(-1)!), [1, 1]);
    forward(model, head, { cache, graph }).dispose();
    using logits = forward(model, last, { cache, graph });
    for (const t of [head, last]) t.dispose();
    cache.dispose();
    const x = logits.toFloat32Array();
    const max = Math.max(...x);
    const sum = x.reduce((s, v) => s + Math.exp(v - max), 0);
    return x.map((v) => v - max - Math.log(sum));
  }

  test("4 and 8 bits: mlx-lm's log-probabilities (1e-3) and greedy tokens; quantization is applied", async () => {
    const model = loadModel(DEFAULT_MODEL_DIR, { backend: "mlx" });
    const tokenizer = Tokenizer.fromDir(DEFAULT_MODEL_DIR);
    const plain = firstLogprobs(model, {});
    expect(maxAbsDiff(plain, decode(q.plain.logprobs).toFloat32Array())).toBeLessThanOrEqual(1e-3);
    // The plain graph attends over the dequantized cache; the rewritten one (native_attention, what
    // generate runs) through quantized matmuls, as mlx-lm.
    const rewritten = rewrite(model.graph("last"));
    for (const bits of [4, 8] as const) {
      const ours = firstLogprobs(model, { kvBits: bits });
      const want = decode(q[bits].logprobs).toFloat32Array();
      expect(maxAbsDiff(ours, want)).toBeLessThanOrEqual(1e-3);
      expect(maxAbsDiff(firstLogprobs(model, { kvBits: bits }, rewritten), want)).toBeLessThanOrEqual(1e-3);
      // The quantized cache changes the result measurably (more at 4 bits than at 8).
      expect(maxAbsDiff(ours, plain)).toBeGreaterThan(bits === 4 ? 1e-2 : 1e-4);
      const { tokens } = await generateText(model, tokenizer, q.prompt, {
        maxTokens: q[bits].tokens.length,
        ignoreEos: true,
        kvBits: bits,
      });
      expect(tokens).toEqual(q[bits].tokens);
    }
    await expect(generateText(model, tokenizer, q.prompt, { kvBits: 3 })).rejects.toThrow("kvBits must be 4 or 8");
    await expect(generateText(model, tokenizer, q.prompt, { kvBits: 4, kvGroupSize: 48 })).rejects.toThrow(
      "kvGroupSize must divide head_dim 64",
    );
    model.dispose();
    const cpu = loadModel(DEFAULT_MODEL_DIR, { backend: "cpu" });
    await expect(generateText(cpu, tokenizer, q.prompt, { kvBits: 4 })).rejects.toThrow(
      "a quantized KV cache needs the MLX backend",
    );
    cpu.dispose();
  });
});
