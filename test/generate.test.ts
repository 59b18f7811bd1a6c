// Generation against mlx-lm's greedy tokens, the tokenizer against Python `tokenizers`, and the
// sampling, stopping and streaming rules.
import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { pickOnHost } from "../src/engine/host-sampler.ts";
import { generate, generateText } from "../src/engine/generate.ts";
import { DEFAULT_SAMPLING } from "../src/engine/sampling.ts";
import { liveTensorCount, Tensor } from "../src/index.ts";
import { loadModel } from "../src/models/index.ts";
import { Tokenizer } from "../src/tokenizer/tokenizer.ts";
import { decodeIds, type EncodedArray, fixture } from "./helpers.ts";

const dir = join(import.meta.dir, "fixtures", "data", "models", "qwen3");
const cases = fixture<Record<string, { prompt: EncodedArray; tokens: number[]; text: string }>>("models.json");
const model = loadModel(dir);
const tokenizer = Tokenizer.fromDir(dir);
const promptIds = decodeIds(cases.qwen3!.prompt);
const expected = cases.qwen3!.tokens;

describe("tokenizer vs Python tokenizers", () => {
  test("encode and decode", () => {
    const { encode } = fixture<{ encode: Record<string, number[]> }>("tokenizer.json");
    for (const [text, ids] of Object.entries(encode)) {
      expect(tokenizer.encode(text)).toEqual(ids);
      expect(tokenizer.decode(ids)).toBe(text);
    }
    expect(tokenizer.decode(expected)).toBe(cases.qwen3!.text);
  });
});

describe("generate", () => {
  test("greedy: the tokens mlx-lm generates, streamed text equal to the decoded whole", async () => {
    const { text, tokens, stats } = await generateText(model, tokenizer, promptIds, { maxTokens: expected.length });
    expect(tokens).toEqual(expected);
    expect(text).toBe(tokenizer.decode(expected));
    expect(stats).toMatchObject({
      promptTokens: promptIds.length,
      generatedTokens: expected.length,
      finishReason: "length",
    });
  });

  test("stop tokens end generation before the stop token", async () => {
    const stopAt = expected.findIndex((t, i) => i > 0 && expected.indexOf(t) === i);
    expect(stopAt).toBeGreaterThan(0);
    const { tokens, stats } = await generateText(model, tokenizer, promptIds, {
      maxTokens: 16,
      stopTokens: [expected[stopAt]!],
    });
    expect(tokens).toEqual(expected.slice(0, stopAt));
    expect(stats.finishReason).toBe("stop");
  });

  test("stop strings cut the text before them", async () => {
    const full = tokenizer.decode(expected);
    const stop = full.slice(5, 8);
    const { text, stats } = await generateText(model, tokenizer, promptIds, { maxTokens: 16, stopStrings: [stop] });
    expect(text).toBe(full.slice(0, full.indexOf(stop)));
    expect(stats.finishReason).toBe("stop");
  });

  test("sampling is reproducible per seed, and top-p near 0 is greedy", async () => {
    const run = (seed: number, topP = 1) =>
      generateText(model, tokenizer, promptIds, { maxTokens: 12, temperature: 1.5, topP, seed });
    const [a, b, c] = await Promise.all([run(1), run(1), run(2)]);
    expect(a.tokens).toEqual(b.tokens);
    expect(a.tokens).not.toEqual(c.tokens);
    expect((await run(3, 1e-9)).tokens).toEqual(expected.slice(0, 12));
  });

  test("stopping early, by the consumer or a stop token, frees every tensor of the generation", async () => {
    // Tensors that earlier tests left to the collector go now, not while this one counts.
    Tensor.collectForgotten();
    const before = liveTensorCount();
    let seen = 0;
    for await (const _ of generate(model, tokenizer, promptIds, { maxTokens: 16 })) if (++seen === 3) break;
    expect(seen).toBe(3);
    expect(liveTensorCount()).toBe(before);
    const stopAt = expected.findIndex((t, i) => i > 0 && expected.indexOf(t) === i);
    await generateText(model, tokenizer, promptIds, { maxTokens: 16, stopTokens: [expected[stopAt]!] });
    await generateText(model, tokenizer, promptIds, { maxTokens: 4, temperature: 0.8 });
    expect(liveTensorCount()).toBe(before);
  });
});

describe("pickOnHost (the CPU backend's sampler)", () => {
  const logits = Float32Array.from([1, 3, 2, 0.5]);
  const settings = (temperature: number, topP = 1, seed = 0) => ({
    ...DEFAULT_SAMPLING,
    temperature,
    topP,
    seed,
    logprobs: undefined,
  });
  test("temperature 0 is argmax", () => expect(pickOnHost(logits, [0], settings(0), 0).token).toBe(1));
  test("frequencies follow softmax(logits / T); top-p keeps the nucleus", () => {
    const counts = [0, 0, 0, 0];
    const n = 20000;
    for (let i = 0; i < n; i++) counts[pickOnHost(logits, [0], settings(1, 1, 7), i).token]!++;
    const z = [1, 3, 2, 0.5].map(Math.exp);
    const total = z.reduce((a, b) => a + b);
    for (let i = 0; i < 4; i++) expect(Math.abs(counts[i]! / n - z[i]! / total)).toBeLessThan(0.015);
    // p(1) = 0.63, p(2) = 0.23: top-p 0.7 keeps exactly tokens 1 and 2.
    const kept = new Set(Array.from({ length: 2000 }, (_, i) => pickOnHost(logits, [0], settings(1, 0.7, 3), i).token));
    expect([...kept].sort()).toEqual([1, 2]);
  });
});

describe("generate: rewriting", () => {
  test("rewritten (default), plain and all-rewriters graphs generate mlx-lm's tokens", async () => {
    for (const rewrite of [true, false, ["native_attention", "rms_norm", "swiglu", "rotary_embedding"]]) {
      const { tokens } = await generateText(model, tokenizer, promptIds, { maxTokens: expected.length, rewrite });
      expect(tokens).toEqual(expected);
    }
  });
});
