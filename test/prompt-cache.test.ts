// Prompt cache: a second turn prefills only the new suffix and generates the tokens a full prefill
// does; save/load round-trips; bad use is an Error. Greedy on the shipped default model.
import { afterAll, describe, expect, test } from "bun:test";
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  DEFAULT_MODEL_DIR,
  generateText,
  type GenerationStats,
  generate,
  loadModel,
  loadSafetensors,
  type Model,
  PromptCache,
  saveSafetensors,
  Tokenizer,
} from "../src/index.ts";

const tokenizer = Tokenizer.fromDir(DEFAULT_MODEL_DIR);
const dir = mkdtempSync(join(tmpdir(), "mlxb-prompt-cache-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const GREEDY = { maxTokens: 12, ignoreEos: true };

async function run(model: Model, prompt: number[], promptCache?: PromptCache) {
  const stats: Partial<GenerationStats> = {};
  const tokens: number[] = [];
  for await (const chunk of generate(
    model,
    tokenizer,
    prompt,
    { ...GREEDY, ...(promptCache ? { promptCache } : {}) },
    stats,
  ))
    tokens.push(chunk.token);
  return { tokens, stats };
}

for (const backend of ["mlx", "cpu"] as const) {
  describe(`prompt cache (${backend})`, () => {
    const model = loadModel(DEFAULT_MODEL_DIR, { backend });
    afterAll(() => model.dispose());
    const budget = backend === "cpu" ? 240_000 : 60_000; // the CPU reference backend is slow
    const first = tokenizer.encode("The ship sailed");

    test(
      "a second turn reuses the first: same tokens as a full prefill, only the suffix prefilled",
      async () => {
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
      },
      budget,
    );

    test("bad use is an Error", async () => {
      using small = new PromptCache(model, 8);
      await expect(generateText(model, tokenizer, first, { maxTokens: 20, promptCache: small })).rejects.toThrow(
        "exceeds the prompt cache's 8 positions",
      );
      await expect(generateText(model, tokenizer, first, { promptCache: {} as PromptCache })).rejects.toThrow(
        "generate: promptCache must be a PromptCache made for this model",
      );
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
    expect(() => PromptCache.load(bert, path)).toThrow(
      /saved for another model; its config differs \(.*num_hidden_layers: saved 8, this model 2/,
    );
    writeFileSync(join(dir, "junk.safetensors"), "not a file");
    expect(() => PromptCache.load(model, join(dir, "junk.safetensors"))).toThrow();
    expect(() => PromptCache.load(model, join(DEFAULT_MODEL_DIR, "model.safetensors"))).toThrow("not a prompt cache");
    const cpu = loadModel(DEFAULT_MODEL_DIR, { backend: "cpu" });
    using hostCache = new PromptCache(cpu, 16);
    expect(() => hostCache.save(join(dir, "cpu.safetensors"))).toThrow(
      "PromptCache.save: the CPU reference backend's cache cannot be saved",
    );
    for (const m of [model, bert, cpu]) m.dispose();
  });

  /** A copy of the default model with config.json edited and the weights' bytes changed by `damage`. */
  function copyOfDefault(edit: (config: Record<string, unknown>) => void, damage?: (bytes: Buffer) => void): string {
    const copy = mkdtempSync(join(dir, "model-"));
    cpSync(DEFAULT_MODEL_DIR, copy, { recursive: true });
    const config = JSON.parse(readFileSync(join(copy, "config.json"), "utf8"));
    edit(config);
    writeFileSync(join(copy, "config.json"), JSON.stringify(config));
    if (damage) {
      const bytes = readFileSync(join(copy, "model.safetensors"));
      damage(bytes);
      writeFileSync(join(copy, "model.safetensors"), bytes);
    }
    return copy;
  }

  test("a cache from a model of the same shape, or an edited file, is refused with what differs", async () => {
    const model = loadModel(DEFAULT_MODEL_DIR, { backend: "mlx" });
    using cache = new PromptCache(model, 64);
    await run(model, tokenizer.encode("Water is"), cache);
    const path = join(dir, "fingerprint.safetensors");
    cache.save(path);
    // Same shapes, other rope_theta: the keys were rotated otherwise.
    const theta = loadModel(
      copyOfDefault((c) => (c["rope_theta"] = 1234567)),
      { backend: "mlx" },
    );
    expect(() => PromptCache.load(theta, path)).toThrow(
      /its config differs \(rope_theta: saved \d+, this model 1234567\)/,
    );
    // Same config, one weight byte changed (the first byte of the data: some tensor's first bytes).
    const weights = loadModel(
      copyOfDefault(
        () => {},
        (bytes) => {
          const at = 8 + Number(bytes.readBigUInt64LE(0));
          bytes[at] = bytes[at]! ^ 0x40;
        },
      ),
      { backend: "mlx" },
    );
    expect(() => PromptCache.load(weights, path)).toThrow("same config, but the weights differ");
    // The tokens metadata edited, then a tensor's bytes: the checksum no longer matches.
    const saved = loadSafetensors(path);
    const tokens = JSON.parse(saved.metadata["tokens"]!) as number[];
    tokens[0] = (tokens[0]! + 1) % 8192;
    const edited = join(dir, "edited.safetensors");
    saveSafetensors(edited, saved.tensors, { ...saved.metadata, tokens: JSON.stringify(tokens) });
    expect(() => PromptCache.load(model, edited)).toThrow("the checksum does not match");
    const bytes = readFileSync(path);
    bytes[bytes.length - 1] = bytes[bytes.length - 1]! ^ 0x01;
    writeFileSync(edited, bytes);
    expect(() => PromptCache.load(model, edited)).toThrow("the checksum does not match");
    using again = PromptCache.load(model, path, 64);
    expect(again.tokens).toEqual(cache.tokens);
    for (const t of saved.tensors.values()) t.dispose();
    for (const m of [model, theta, weights]) m.dispose();
  });
});
