// Rotating KV caches against mlx-lm (scripts/fixtures/rotating.py): generate's maxKvSize (the first 4
// positions kept, mlx-lm's max_kv_size) and a Mistral's sliding window, greedy, well past the bound,
// on MLX and on the CPU reference.
import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { createCache, generateText, loadModel, Tokenizer } from "../src/index.ts";
import { fixture } from "./helpers.ts";

const f = fixture<{ prompt: number[]; qwen3: { maxKvSize: number; tokens: number[]; unbounded: number[] }; mistral: { slidingWindow: number; tokens: number[]; unbounded: number[] } }>("rotating.json");
const dir = (name: string) => join(import.meta.dir, "fixtures", "data", "models", name);

for (const backend of ["mlx", "cpu"] as const) {
  describe(`rotating KV caches (${backend})`, () => {
    test("maxKvSize: mlx-lm's tokens with max_kv_size (they differ from an unbounded cache's)", async () => {
      const model = loadModel(dir("qwen3"), { backend });
      const tokenizer = Tokenizer.fromDir(dir("qwen3"));
      const options = { maxTokens: f.qwen3.tokens.length, ignoreEos: true };
      expect((await generateText(model, tokenizer, f.prompt, { ...options, maxKvSize: f.qwen3.maxKvSize })).tokens).toEqual(f.qwen3.tokens);
      expect((await generateText(model, tokenizer, f.prompt, options)).tokens).toEqual(f.qwen3.unbounded);
      expect(f.qwen3.tokens).not.toEqual(f.qwen3.unbounded);
      await expect(generateText(model, tokenizer, f.prompt, { maxKvSize: 4 })).rejects.toThrow("generate: maxKvSize must be an integer > 4");
      await expect(generateText(model, tokenizer, f.prompt, { maxKvSize: 6, maxTokens: 8 })).rejects.toThrow("the prompt (8 tokens) is longer than maxKvSize (6)");
      model.dispose();
    });

    test("a Mistral's sliding window: mlx-lm's tokens with the window applied", async () => {
      const model = loadModel(dir("mistral-window"), { backend });
      expect(model.config.slidingWindow).toBe(f.mistral.slidingWindow);
      const tokenizer = Tokenizer.fromDir(dir("mistral-window"));
      const { tokens } = await generateText(model, tokenizer, f.prompt, { maxTokens: f.mistral.tokens.length, ignoreEos: true });
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
