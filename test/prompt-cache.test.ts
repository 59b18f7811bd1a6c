// Prompt cache: a second turn prefills only the new suffix and generates the tokens a full prefill
// does; save/load round-trips; bad use is an Error. Greedy on the shipped default model.
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DEFAULT_MODEL_DIR, generateText, type GenerationStats, generate, loadModel, type Model, PromptCache, Tokenizer } from "../src/index.ts";

const tokenizer = Tokenizer.fromDir(DEFAULT_MODEL_DIR);
const dir = mkdtempSync(join(tmpdir(), "mlxb-prompt-cache-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const GREEDY = { maxTokens: 12, ignoreEos: true };

async function run(model: Model, prompt: number[], promptCache?: PromptCache) {
  const stats: Partial<GenerationStats> = {};
  const tokens: number[] = [];
  for await (const chunk of generate(model, tokenizer, prompt, { ...GREEDY, ...(promptCache ? { promptCache } : {}) }, stats)) tokens.push(chunk.token);
  return { tokens, stats };
}

for (const backend of ["mlx", "cpu"] as const) {
  describe(`prompt cache (${backend})`, () => {
    const model = loadModel(DEFAULT_MODEL_DIR, { backend });
    afterAll(() => model.dispose());
    const budget = backend === "cpu" ? 240_000 : 60_000; // the CPU reference backend is slow
    const first = tokenizer.encode("The ship sailed");

    test("a second turn reuses the first: same tokens as a full prefill, only the suffix prefilled", async () => {
      using cache = new PromptCache(model, 256);
      const one = await run(model, first, cache);
      expect(one.stats.cachedTokens).toBe(0);
      expect(cache.tokens).toEqual([...first, ...one.tokens].slice(0, cache.cache.offset));
      const second = [...first, ...one.tokens, ...tokenizer.encode(" The river")];
      // The last token generated was never fed back, so the cache holds all but it.
      const held = cache.tokens.length;
      expect(held).toBe(first.length + one.tokens.length - 1);
      const reused = await run(model, second, cache);
      const fresh = await run(model, second);
      expect(reused.tokens).toEqual(fresh.tokens);
      expect(reused.stats.cachedTokens).toBe(held);
      // A prompt that leaves the conversation reuses the common prefix only.
      const other = [...first, ...tokenizer.encode(" into the storm")];
      const branched = await run(model, other, cache);
      expect(branched.stats.cachedTokens).toBe(first.length);
      expect(branched.tokens).toEqual((await run(model, other)).tokens);
      // The same prompt again: all but its last token come from the cache.
      const again = await run(model, other, cache);
      expect(again.stats.cachedTokens).toBe(other.length - 1);
      expect(again.tokens).toEqual(branched.tokens);
    }, budget);

    test("bad use is an Error", async () => {
      using small = new PromptCache(model, 8);
      await expect(generateText(model, tokenizer, first, { maxTokens: 20, promptCache: small })).rejects.toThrow("exceeds the prompt cache's 8 positions");
      await expect(generateText(model, tokenizer, first, { promptCache: {} as PromptCache })).rejects.toThrow("generate: promptCache must be a PromptCache made for this model");
    });
  });
}

describe("prompt cache files", () => {
  test("save and load: the loaded cache continues the conversation as the original does", async () => {
    const model = loadModel(DEFAULT_MODEL_DIR, { backend: "mlx" });
    using cache = new PromptCache(model, 256);
    const first = tokenizer.encode("Water is");
    const one = await run(model, first, cache);
    const path = join(dir, "turn1.safetensors");
    cache.save(path);
    using loaded = PromptCache.load(model, path, 256);
    expect(loaded.tokens).toEqual(cache.tokens);
    const second = [...first, ...one.tokens, ...tokenizer.encode(" Then")];
    const fromFile = await run(model, second, loaded);
    expect(fromFile.stats.cachedTokens).toBe(cache.tokens.length);
    expect(fromFile.tokens).toEqual((await run(model, second, cache)).tokens);
    model.dispose();
  });

  test("a file that is not a prompt cache, or one for another model, is refused", () => {
    const model = loadModel(DEFAULT_MODEL_DIR, { backend: "mlx" });
    const bert = loadModel(join(import.meta.dir, "fixtures", "data", "models", "llama"), { backend: "mlx" });
    using cache = new PromptCache(model, 64);
    const path = join(dir, "empty.safetensors");
    cache.save(path);
    expect(() => PromptCache.load(bert, path)).toThrow("saved for layers 8, this model has");
    writeFileSync(join(dir, "junk.safetensors"), "not a file");
    expect(() => PromptCache.load(model, join(dir, "junk.safetensors"))).toThrow();
    expect(() => PromptCache.load(model, join(DEFAULT_MODEL_DIR, "model.safetensors"))).toThrow("not a prompt cache");
    const cpu = loadModel(DEFAULT_MODEL_DIR, { backend: "cpu" });
    using hostCache = new PromptCache(cpu, 16);
    expect(() => hostCache.save(join(dir, "cpu.safetensors"))).toThrow("PromptCache.save: the CPU reference backend's cache cannot be saved");
    for (const m of [model, bert, cpu]) m.dispose();
  });
});
