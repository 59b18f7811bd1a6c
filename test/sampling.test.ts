// Logits processors and samplers against mlx-lm's make_logits_processors / make_sampler filters on
// fixed logits (scripts/fixtures/sampling.py): the distributions a token is drawn from, compared as
// probabilities; and generate's logprobs against mlx-lm's logits on a model fixture.
import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { generateText } from "../src/engine/generate.ts";
import { loadModel } from "../src/models/index.ts";
import { DEFAULT_SAMPLING, logSoftmax, processLogits, samplingDistribution } from "../src/engine/sampling.ts";
import { Tokenizer } from "../src/tokenizer/tokenizer.ts";
import { decode, decodeIds, type EncodedArray, fixture, samplingCases } from "./helpers.ts";

const cases = samplingCases();

describe("samplers and processors vs mlx-lm", () => {
  for (const c of cases) {
    test(`${JSON.stringify(c.options)}: log-probabilities and the sampled distribution within 1e-5`, () => {
      const o = { ...DEFAULT_SAMPLING, temperature: 1, ...c.options } as typeof DEFAULT_SAMPLING;
      const lp = logSoftmax(processLogits(Float32Array.from(c.logits), c.context, o));
      for (let i = 0; i < lp.length; i++) expect(Math.abs(lp[i]! - c.logprobs[i]!)).toBeLessThan(1e-5);
      const p = samplingDistribution(lp, o);
      for (let i = 0; i < p.length; i++) expect(Math.abs(p[i]! - c.probabilities[i]!)).toBeLessThan(1e-5);
      // Filters mask: a token mlx-lm drops has probability 0 here too.
      for (let i = 0; i < p.length; i++) expect(p[i] === 0).toBe(c.probabilities[i] === 0);
    });
  }
});

describe("logprobs", () => {
  test("greedy generate reports mlx-lm's log-probabilities (logits - logsumexp) and the top alternatives", async () => {
    const c =
      fixture<Record<string, { prompt: EncodedArray; tokens: number[]; steps: EncodedArray[] }>>("models.json")[
        "qwen3"
      ]!;
    const dir = join(import.meta.dir, "fixtures", "data", "models", "qwen3");
    const model = loadModel(dir, { backend: "mlx" });
    const chunks: { token: number; logprob?: number; topLogprobs?: { token: number; logprob: number }[] }[] = [];
    const prompt = decodeIds(c.prompt);
    const { generate } = await import("../src/engine/generate.ts");
    for await (const chunk of generate(model, Tokenizer.fromDir(dir), prompt, {
      maxTokens: 4,
      ignoreEos: true,
      logprobs: 3,
    }))
      chunks.push(chunk);
    expect(chunks.map((k) => k.token)).toEqual(c.tokens.slice(0, 4));
    // The first token comes from the prefill's last position: mlx-lm's step logits start after it.
    for (let s = 1; s < 4; s++) {
      const reference = logSoftmax(decode(c.steps[s - 1]!).toFloat32Array());
      const got = chunks[s]!;
      expect(Math.abs(got.logprob! - reference[got.token]!)).toBeLessThan(1e-4);
      const best = Array.from(reference.keys())
        .sort((a, b) => reference[b]! - reference[a]!)
        .slice(0, 3);
      expect(got.topLogprobs!.map((t) => t.token)).toEqual(best);
      for (const t of got.topLogprobs!) expect(Math.abs(t.logprob - reference[t.token]!)).toBeLessThan(1e-4);
    }
    const plain = await generateText(model, Tokenizer.fromDir(dir), prompt, {
      maxTokens: 4,
      ignoreEos: true,
      repetitionPenalty: 1,
    });
    expect(plain.tokens).toEqual(c.tokens.slice(0, 4));
    model.dispose();
  });
});
