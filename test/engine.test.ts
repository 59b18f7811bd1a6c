// The decode engine: the device sampler against mlx-lm's processors and filters (scripts/fixtures/
// sampling.py) and against the host rule; its draws against the distribution they sample (a
// chi-square test); batch rows against single streams with every sampler option; sequences joining
// a running batch, cancelled mid-stream, and many mixed requests leaving no tensor behind.
import { describe, expect, test } from "bun:test";
import { fallbackCount } from "../src/backend/dispatch.ts";
import { pickOnHost, type SamplerSettings } from "../src/engine/host-sampler.ts";
import { Engine, type SequenceRequest } from "../src/engine/engine.ts";
import { DeviceSampler } from "../src/engine/sampler.ts";
import { astype, slice, transpose } from "../src/ops/core.ts";
import { greedyPick, samplePick } from "../src/ops/fast.ts";
import {
  DEFAULT_MODEL_DIR,
  generate,
  generateBatchText,
  generateText,
  liveTensorCount,
  loadModel,
  Tensor,
  Tokenizer,
} from "../src/index.ts";
import { DEFAULT_SAMPLING, logSoftmax, samplingDistribution } from "../src/engine/sampling.ts";
import { samplingCases } from "./helpers.ts";

const cases = samplingCases();

function settingsOf(options: Record<string, unknown>, seed = 0): SamplerSettings {
  return { ...DEFAULT_SAMPLING, temperature: 1, ...options, seed, logprobs: undefined } as SamplerSettings;
}

describe("device sampler vs mlx-lm", () => {
  for (const c of cases) {
    test(`${JSON.stringify(c.options)}: the same tokens kept (exactly), their log-probabilities within 1e-5`, () => {
      const V = c.logits.length;
      using sampler = new DeviceSampler([settingsOf(c.options)], V, [c.context], [0]);
      using logits = Tensor.from(Float32Array.from(c.logits), [1, V]);
      using filtered = sampler.filteredLogprobs(logits);
      const got = filtered.toFloat32Array();
      for (let i = 0; i < V; i++) {
        expect(Number.isFinite(got[i]!)).toBe(c.probabilities[i]! > 0);
        if (c.probabilities[i]! > 0) expect(Math.abs(got[i]! - c.logprobs[i]!)).toBeLessThan(1e-5);
      }
    });
  }

  test("all cases as the rows of one batch: each row as it is alone", () => {
    const V = cases[0]!.logits.length;
    const rows = cases.filter((c) => c.logits.length === V);
    using sampler = new DeviceSampler(
      rows.map((c) => settingsOf(c.options)),
      V,
      rows.map((c) => c.context),
      rows.map(() => 0),
    );
    using logits = Tensor.from(Float32Array.from(rows.flatMap((c) => c.logits)), [rows.length, V]);
    using filtered = sampler.filteredLogprobs(logits);
    const got = filtered.toFloat32Array();
    for (const [b, c] of rows.entries()) {
      for (let i = 0; i < V; i++) expect(Number.isFinite(got[b * V + i]!)).toBe(c.probabilities[i]! > 0);
    }
  });
});

describe("device draws", () => {
  const logits = Float32Array.from([1.2, 3, 2.1, 0.5, -1, 2.6, 0.1, 1.7]);
  const V = logits.length;

  /** n draws: rows of one batch, each row its own seed. */
  function deviceDraws(options: Record<string, unknown>, n: number, index = 0): number[] {
    const settings = Array.from({ length: n }, (_, i) => settingsOf(options, 1000 + i));
    using sampler = new DeviceSampler(
      settings,
      V,
      settings.map(() => [0]),
      settings.map(() => index),
    );
    using batch = Tensor.from(
      Float32Array.from({ length: n * V }, (_, i) => logits[i % V]!),
      [n, V],
    );
    const picks = sampler.pick(batch, null);
    try {
      return Array.from(picks.tokens.toInt32Array());
    } finally {
      for (const t of [picks.tokens, picks.peak]) t.dispose();
    }
  }

  for (const options of [
    { temperature: 0.8 },
    { temperature: 1.2, topK: 5 },
    { temperature: 1, topP: 0.85 },
    { temperature: 0.9, minP: 0.15 },
  ]) {
    test(`${JSON.stringify(options)}: frequencies pass a chi-square test at 0.1%, masked tokens never drawn`, () => {
      const n = 4000;
      const draws = [...deviceDraws(options, n, 0), ...deviceDraws(options, n, 1)];
      const expected = samplingDistribution(logSoftmax(logits), { ...DEFAULT_SAMPLING, ...options });
      const counts = new Array<number>(V).fill(0);
      for (const t of draws) counts[t]!++;
      let chi = 0;
      let cells = 0;
      for (let i = 0; i < V; i++) {
        if (expected[i] === 0) {
          expect(counts[i]).toBe(0);
          continue;
        }
        const e = expected[i]! * draws.length;
        chi += (counts[i]! - e) ** 2 / e;
        cells++;
      }
      // Critical values of chi-square at p = 0.001 for 1..7 degrees of freedom.
      const critical = [10.83, 13.82, 16.27, 18.47, 20.52, 22.46, 24.32][cells - 2]!;
      expect(chi).toBeLessThan(critical);
    });
  }

  test("the device draws what the host rule draws (same seed and draw index)", () => {
    const options = { temperature: 0.9, topP: 0.95, topK: 6 };
    const n = 256;
    const device = deviceDraws(options, n, 3);
    const host = Array.from({ length: n }, (_, i) => pickOnHost(logits, [0], settingsOf(options, 1000 + i), 3).token);
    expect(device).toEqual(host);
  });
});

describe("samplePick (the pick's primitive)", () => {
  const V = 300;
  // Logits with ties (each value three times) and a spread of magnitudes.
  const row = Float32Array.from({ length: V }, (_, i) => Math.round(Math.sin(i % 100) * 40) / 8);
  const params = (t: number, drop: number, logMinP: number, keep: number, k: number) =>
    Tensor.from(Float32Array.from([t, drop, logMinP, keep, k]), [1, 5]);
  const sorted = Array.from(row).sort((a, b) => b - a);

  function picked(logits: Tensor, p: Tensor, draw = 0, seed = 7): { token: number; peak: number; threshold: number } {
    using seeds = Tensor.from(Uint32Array.of(seed, 0), [1, 2]);
    using draws = Tensor.from(Uint32Array.of(draw), [1]);
    const [tokens, peak, threshold] = samplePick(logits, p, seeds, draws);
    using _a = tokens;
    using _b = peak;
    using _c = threshold;
    return {
      token: tokens.toInt32Array()[0]!,
      peak: peak.toFloat32Array()[0]!,
      threshold: threshold.toFloat32Array()[0]!,
    };
  }

  test("thresholds: the k-th largest with ties, min-p against the minTokensToKeep-th, top-p by cumulative mass", () => {
    using logits = Tensor.from(row, [1, V]);
    using topK = params(1, -1, Number.NEGATIVE_INFINITY, 1, 7);
    expect(picked(logits, topK).threshold).toBe(sorted[6]!);
    using minP = params(1, -1, Math.log(0.2), 1, 0);
    expect(picked(logits, minP).threshold).toBeCloseTo(sorted[0]! + Math.log(0.2), 5);
    using keep = params(1, -1, Math.log(0.9), 40, 0);
    expect(picked(logits, keep).threshold).toBe(sorted[39]!);
    // Top-p on the host: the smallest value whose ascending cumulative mass passes 1 - topP.
    const weights = sorted.map((v) => Math.exp(v - sorted[0]!)).reverse();
    const total = weights.reduce((a, b) => a + b, 0);
    let run = 0;
    let expected = Number.NaN;
    for (const [j, w] of weights.entries()) {
      run += w;
      if (run > 0.25 * total) {
        expected = sorted[V - 1 - j]!;
        break;
      }
    }
    using topP = params(1, 0.25, Number.NEGATIVE_INFINITY, 1, 0);
    expect(picked(logits, topP).threshold).toBe(expected);
  });

  test("the draw is the host rule's for the seed and draw index; bfloat16 and a strided view give what float32 gives", () => {
    using logits = Tensor.from(row, [1, V]);
    const options = { temperature: 1 / 1.3, topP: 0.9, minP: 0.01, minTokensToKeep: 3, topK: 50 };
    using p = params(1.3, 0.1, Math.log(0.01), 3, 50);
    const distinctRow = Float32Array.from({ length: V }, (_, i) => Math.sin(i * 1.7) * 5 + i / 1024);
    using distinct = Tensor.from(distinctRow, [1, V]);
    using half = astype(logits, "bfloat16");
    using wide = Tensor.from(
      Float32Array.from({ length: 2 * V }, (_, i) => row[i >> 1]!),
      [V, 2],
    );
    using strided = transpose(slice(wide, [0, 0], [V, 1]));
    for (const [draw, seed] of [
      [0, 7],
      [1, 7],
      [5, 2 ** 31 + 3],
      [1000, 12],
    ] as const) {
      const base = picked(logits, p, draw, seed);
      // The host's top-k and minTokensToKeep keep exactly k of tied values: compared without ties.
      expect(picked(distinct, p, draw, seed).token).toBe(
        pickOnHost(distinctRow, [0], settingsOf(options, seed), draw).token,
      );
      expect(picked(half, p, draw, seed)).toEqual(base);
      expect(picked(strided, p, draw, seed)).toEqual(base);
    }
    using greedy = params(0, -1, Number.NEGATIVE_INFINITY, 1, 0);
    expect(picked(logits, greedy).token).toBe(row.indexOf(sorted[0]!));
  });

  test("a row with NaN or +infinity reports it in its peak; bad arguments are Errors naming them", () => {
    using p = params(1, 0.1, Number.NEGATIVE_INFINITY, 1, 0);
    using nan = Tensor.from(Float32Array.from([1, Number.NaN, 2]), [1, 3]);
    expect(picked(nan, p).peak).toBeNaN();
    using inf = Tensor.from(Float32Array.from([1, Number.POSITIVE_INFINITY, 2]), [1, 3]);
    expect(picked(inf, p).peak).toBe(Number.POSITIVE_INFINITY);
    using logits = Tensor.from(row, [1, V]);
    using seeds = Tensor.from(Uint32Array.of(1, 0), [1, 2]);
    using draws = Tensor.from(Uint32Array.of(0), [1]);
    using short = Tensor.from(Float32Array.from([1, 2, 3]), [1, 3]);
    expect(() => samplePick(logits, short, seeds, draws)).toThrow(/params/);
    using ints = Tensor.from(Int32Array.from([1, 2, 3]), [1, 3]);
    expect(() => samplePick(ints, p, seeds, draws)).toThrow(/logits/);
    using floatSeeds = Tensor.from(Float32Array.of(1, 0), [1, 2]);
    expect(() => samplePick(logits, p, floatSeeds, draws)).toThrow(/seeds/);
    using two = Tensor.from(Uint32Array.of(0, 0), [2]);
    expect(() => samplePick(logits, p, seeds, two)).toThrow(/draws/);
  });
});

// The greedy pick: one node of the shim's on a CUDA GPU (split over blocks of a row's ranges, merged
// by the row's last block), MLX's argmax and max elsewhere. Against the host's rule: the first index
// of the largest value, a NaN larger than any number.
describe("greedyPick", () => {
  function reference(values: Float32Array, V: number, row: number): { token: number; peak: number } {
    let token = 0;
    let peak = values[row * V]!;
    for (let i = 1; i < V; i++) {
      const v = values[row * V + i]!;
      if (Number.isNaN(peak)) break;
      if (Number.isNaN(v) || v > peak) [token, peak] = [i, v];
    }
    return { token, peak };
  }

  function check(logits: Tensor): void {
    const [B, V] = logits.shape as [number, number];
    const values = logits.toFloat32Array();
    const [tokens, peak] = greedyPick(logits);
    using _t = tokens;
    using _p = peak;
    expect(tokens.shape).toEqual([B, 1]);
    expect(peak.dtype).toBe(logits.dtype);
    const got = tokens.toInt32Array();
    const peaks = peak.toFloat32Array();
    for (let b = 0; b < B; b++) {
      const want = reference(values, V, b);
      expect(got[b]).toBe(want.token);
      expect(Object.is(peaks[b], want.peak) || (Number.isNaN(peaks[b]!) && Number.isNaN(want.peak))).toBe(true);
    }
  }

  test("a vocabulary of 151936 in bfloat16: ties to the first index, the last index, a flat row", () => {
    const V = 151936;
    let s = 12345;
    const values = Float32Array.from({ length: 3 * V }, () => {
      s = (s * 1103515245 + 12345) >>> 0;
      return (s / 2 ** 32) * 20 - 10;
    });
    values[5000] = 30;
    values[140000] = 30;
    values[2 * V - 1] = 31;
    values.fill(-2, 2 * V, 3 * V);
    using f = Tensor.from(values, [3, V]);
    using logits = astype(f, "bfloat16");
    check(logits);
  });

  test("float32 rows: all -infinity, +infinity, NaNs (the first one), and a strided view", () => {
    const V = 5000;
    const values = Float32Array.from({ length: 4 * V }, (_, i) => Math.sin(i) * 3);
    values.fill(Number.NEGATIVE_INFINITY, 0, V);
    values[V + 4321] = Number.POSITIVE_INFINITY;
    values[2 * V + 77] = Number.NaN;
    values[2 * V + 4000] = Number.NaN;
    using logits = Tensor.from(values, [4, V]);
    check(logits);
    // Every other column of the rows: a view with a column stride of 2.
    using wide = Tensor.from(values, [2, 2 * V]);
    using strided = slice(wide, [0, 0], [2, 2 * V], [1, 2]);
    check(strided);
  });
});

const tokenizer = Tokenizer.fromDir(DEFAULT_MODEL_DIR);
const PROMPTS = ["The ship sailed", "Water is", "In the morning, the old man went to the market and"];
const MIXED = [
  { temperature: 0.7, topP: 0.9, seed: 5 },
  { temperature: 1, topK: 40, repetitionPenalty: 1.1, seed: 6 },
  { temperature: 0 },
  { temperature: 0.9, minP: 0.05, presencePenalty: 0.5, frequencyPenalty: 0.3, logitBias: { 17: 2 }, seed: 8 },
];

for (const backend of ["mlx", "cpu"] as const) {
  describe(`engine (${backend})`, () => {
    const model = loadModel(DEFAULT_MODEL_DIR, { backend });
    // The CPU reference is slow: fewer tokens, and the option sets with processors.
    const maxTokens = backend === "cpu" ? 3 : 12;
    const budget = backend === "cpu" ? 240_000 : 60_000; // the CPU reference backend is slow

    test(
      "every sampler option: each batch row gives the tokens it gives alone",
      async () => {
        for (const options of backend === "cpu" ? [MIXED[1]!, MIXED[3]!] : MIXED) {
          const batch = await generateBatchText(model, tokenizer, PROMPTS, { maxTokens, ignoreEos: true, ...options });
          for (const [i, prompt] of PROMPTS.entries())
            expect(batch.tokens[i]).toEqual(
              (await generateText(model, tokenizer, prompt, { maxTokens, ignoreEos: true, ...options })).tokens,
            );
        }
      },
      budget,
    );

    test(
      "sequences with different options join a running batch mid-way and give their own tokens",
      async () => {
        const alone = await Promise.all(
          PROMPTS.map(
            async (p, i) =>
              (await generateText(model, tokenizer, p, { maxTokens, ignoreEos: true, ...MIXED[i]! })).tokens,
          ),
        );
        const started: Promise<number[]>[] = [];
        const first = (async () => {
          const tokens: number[] = [];
          for await (const chunk of generate(model, tokenizer, PROMPTS[0]!, {
            maxTokens,
            ignoreEos: true,
            ...MIXED[0]!,
          })) {
            tokens.push(chunk.token);
            // The others join once this one decodes.
            if (tokens.length === 2)
              for (const i of [1, 2])
                started.push(
                  generateText(model, tokenizer, PROMPTS[i]!, { maxTokens, ignoreEos: true, ...MIXED[i]! }).then(
                    (r) => r.tokens,
                  ),
                );
          }
          return tokens;
        })();
        expect(await first).toEqual(alone[0]!);
        expect(await Promise.all(started)).toEqual([alone[1]!, alone[2]!]);
      },
      budget,
    );

    test(
      "a sequence cancelled mid-stream frees its slot; the others go on; no tensor is left",
      async () => {
        Tensor.collectForgotten(); // what earlier tests left to the collector goes now, not mid-count
        const before = liveTensorCount();
        const reference = (await generateText(model, tokenizer, PROMPTS[1]!, { maxTokens, ignoreEos: true })).tokens;
        const other = generateText(model, tokenizer, PROMPTS[1]!, { maxTokens, ignoreEos: true });
        let seen = 0;
        for await (const _ of generate(model, tokenizer, PROMPTS[0]!, {
          maxTokens: 64,
          ignoreEos: true,
          temperature: 0.8,
        }))
          if (++seen === 2) break;
        expect((await other).tokens).toEqual(reference);
        expect(liveTensorCount()).toBe(before);
      },
      budget,
    );
  });
}

test("a sequence cancelled while it prefills (in chunks, beside a running one) ends at once and frees its slot", async () => {
  const model = loadModel(DEFAULT_MODEL_DIR, { backend: "mlx" });
  const engine = new Engine(model, { graph: model.graph("last"), prefillChunk: 2 });
  const request = (prompt: string, maxTokens: number): SequenceRequest => ({
    promptIds: tokenizer.encode(prompt),
    maxTokens,
    settings: { ...DEFAULT_SAMPLING, seed: 0, logprobs: undefined },
    stop: new Set(),
    stopStrings: [],
    tokenizer,
  });
  const [running] = engine.submit([request("The ship sailed", 200)]);
  const first = running!.chunks();
  await first.next();
  const [late] = engine.submit([request("In the morning, the old man went to the market and bought", 50)]);
  // A tick later its prefill has begun (2 positions a tick while the other decodes).
  await first.next();
  expect(late!.state).toBe("prefilling");
  late!.cancel();
  const stepsBefore = running!.generated.length;
  let chunks = 0;
  for await (const _ of late!.chunks()) chunks++;
  expect(chunks).toBe(0);
  // Let go once its prefill ended (a few ticks of 2 positions each), not after decoding its 50 tokens.
  expect(running!.generated.length - stepsBefore).toBeLessThan(30);
  // The running one goes on; the cancelled one holds no slot.
  expect(running!.state).not.toBe("done");
  expect(engine.load.active).toBeLessThanOrEqual(1);
  running!.cancel();
  await first.return(undefined);
  engine.dispose();
  model.dispose();
});

test("1,000 mixed requests (joining, sampling, stopping, cancelled) leave no tensor behind", async () => {
  const model = loadModel(DEFAULT_MODEL_DIR, { backend: "mlx" });
  await generateText(model, tokenizer, "warm", { maxTokens: 2 });
  Tensor.collectForgotten(); // what earlier tests left to the collector goes now, not mid-count
  const before = liveTensorCount();
  const fallbacksBefore = fallbackCount();
  const words = ["The", "ship", "Water", "old", "man", "market", "morning", "light"];
  let done = 0;
  for (let wave = 0; wave < 50; wave++) {
    const runs = Array.from({ length: 20 }, async (_, i) => {
      const n = wave * 20 + i;
      const prompt = Array.from({ length: 1 + (n % 7) }, (_, k) => words[(n + k) % words.length]).join(" ");
      const options = { maxTokens: 1 + (n % 4), ...MIXED[n % MIXED.length]!, ...(n % 5 === 0 ? { logprobs: 2 } : {}) };
      if (n % 9 === 0) {
        for await (const _ of generate(model, tokenizer, prompt, { ...options, maxTokens: 8 })) break;
      } else {
        await generateText(model, tokenizer, prompt, options);
      }
      done++;
    });
    await Promise.all(runs);
  }
  expect(done).toBe(1000);
  expect(liveTensorCount()).toBeLessThanOrEqual(before);
  // No op of theirs ran on the CPU kernels instead of MLX's (the fallback would hide an error as a slowdown).
  expect(fallbackCount()).toBe(fallbacksBefore);
  model.dispose();
}, 240_000);
