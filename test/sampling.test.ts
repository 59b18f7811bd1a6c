// Logits processors and samplers against mlx-lm's make_logits_processors / make_sampler filters on
// fixed logits (scripts/fixtures/sampling.py): the distributions a token is drawn from, compared as
// probabilities; and generate's logprobs against mlx-lm's logits on a model fixture.
import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { generateText } from "../src/engine/generate.ts";
import { loadModel } from "../src/models/index.ts";
import { DEFAULT_SAMPLING, logSoftmax, processLogits, samplingDistribution } from "../src/engine/sampling.ts";
import { Tokenizer } from "../src/tokenizer/tokenizer.ts";
import { astype } from "../src/ops/core.ts";
import { penalize } from "../src/ops/fast.ts";
import { Tensor } from "../src/tensor.ts";
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

// The penalties as one primitive (penalize: the CPU loop, or the CUDA kernel on a GPU) against the
// host rule (processLogits) on random logits and histories with repeated ids, empty slots and each
// penalty's own context: equal within one float32 rounding of each value (the host divides in
// float64 by the penalty as given, the primitive in float32 by its float32 value).
describe("penalize", () => {
  let seed = 7;
  const random = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
  const [B, V, W] = [5, 300, 24];
  const settings = [
    {
      repetitionPenalty: 1.3,
      repetitionContextSize: 24,
      presencePenalty: 0,
      presenceContextSize: 0,
      frequencyPenalty: 0,
      frequencyContextSize: 0,
    },
    {
      repetitionPenalty: 0.8,
      repetitionContextSize: 5,
      presencePenalty: 0.7,
      presenceContextSize: 11,
      frequencyPenalty: 0,
      frequencyContextSize: 0,
    },
    {
      repetitionPenalty: 1,
      repetitionContextSize: 20,
      presencePenalty: 0,
      presenceContextSize: 0,
      frequencyPenalty: 0.45,
      frequencyContextSize: 24,
    },
    {
      repetitionPenalty: 1.1,
      repetitionContextSize: 3,
      presencePenalty: -0.5,
      presenceContextSize: 24,
      frequencyPenalty: 0.3,
      frequencyContextSize: 9,
    },
    {
      repetitionPenalty: 1.2,
      repetitionContextSize: 24,
      presencePenalty: 0.2,
      presenceContextSize: 24,
      frequencyPenalty: 0.2,
      frequencyContextSize: 24,
    },
  ];
  // Histories shorter than W (empty slots) and drawn from a few ids (repeats).
  const histories = settings.map((_, b) =>
    Array.from({ length: [30, 7, 24, 40, 0][b]! }, () => Math.floor(random() * 12) * 17),
  );
  const logits = Float32Array.from({ length: B * V }, () => (random() - 0.5) * 20);

  for (const dtype of ["float32", "bfloat16"] as const) {
    test(`${dtype} logits: equal to the host rule`, () => {
      const ids = new Int32Array(B * W).fill(-1);
      for (const [b, h] of histories.entries()) {
        const tail = h.slice(Math.max(0, h.length - W));
        ids.set(tail, b * W + W - tail.length);
      }
      const params = Float32Array.from(
        settings.flatMap((s) => [
          s.repetitionPenalty,
          s.repetitionPenalty !== 1 ? s.repetitionContextSize : 0,
          s.presencePenalty,
          s.presencePenalty !== 0 ? s.presenceContextSize : 0,
          s.frequencyPenalty,
          s.frequencyPenalty !== 0 ? s.frequencyContextSize : 0,
        ]),
      );
      using x32 = Tensor.from(logits, [B, V]);
      using x = astype(x32, dtype);
      using idsT = Tensor.from(ids, [B, W]);
      using paramsT = Tensor.from(params, [B, 6]);
      using got = penalize(x, idsT, paramsT);
      expect(got.dtype).toBe("float32");
      const out = got.toFloat32Array();
      using rounded = astype(x, "float32");
      const input = rounded.toFloat32Array();
      let changed = 0;
      for (const [b, s] of settings.entries()) {
        const o = { ...DEFAULT_SAMPLING, ...s } as typeof DEFAULT_SAMPLING;
        const want = processLogits(input.subarray(b * V, (b + 1) * V), histories[b]!, o);
        for (let i = 0; i < V; i++) {
          const w = want[i]!;
          if (w !== input[b * V + i]) changed++;
          expect(Math.abs(out[b * V + i]! - w)).toBeLessThanOrEqual(Math.max(Math.abs(w), 1) * 2 ** -21);
        }
      }
      expect(changed).toBeGreaterThan(20);
    });
  }

  test("bad operands are Errors naming them", () => {
    using x = Tensor.from(logits.subarray(0, V), [1, V]);
    using ids = Tensor.from(Int32Array.of(1, 2), [1, 2]);
    using params = Tensor.from(new Float32Array(6), [1, 6]);
    using floatIds = Tensor.from(Float32Array.of(1, 2), [1, 2]);
    expect(() => penalize(x, floatIds, params)).toThrow(/penalize: ids/);
    using short = Tensor.from(new Float32Array(5), [1, 5]);
    expect(() => penalize(x, ids, short)).toThrow(/penalize: params/);
    using ints = Tensor.from(Int32Array.of(1, 2, 3), [1, 3]);
    expect(() => penalize(ints, ids, params)).toThrow(/penalize: logits/);
  });

  test("ids past the vocabulary or negative are skipped; a NaN context is none, a huge one all slots", () => {
    using x = Tensor.from(logits.subarray(0, V), [1, V]);
    using ids = Tensor.from(Int32Array.of(5000, -7, 3, 2 ** 31 - 1, 3), [1, 5]);
    using params = Tensor.from(Float32Array.of(2, Number.NaN, 0.5, 1e30, 0.25, Number.POSITIVE_INFINITY), [1, 6]);
    using got = penalize(x, ids, params);
    const out = got.toFloat32Array();
    const want = Float32Array.from(logits.subarray(0, V));
    want[3] = want[3]! - 0.5 - 0.25 - 0.25;
    expect(Array.from(out)).toEqual(Array.from(want));
  });
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
