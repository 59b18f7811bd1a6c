// What a sampler is told per sequence, the hash behind its draws, and the host rule: the CPU
// reference backend's sampler and the device sampler's reference (sampler.ts). The draw is by inverse
// CDF in id order: with weights w = exp((filtered - max) / temperature) and their running sum c, the
// token is the first whose c passes u * sum(w), u uniform in (0, 1) from a counter-based hash of the
// sequence's seed and the draw's index (the same integer arithmetic on the host and the device).
import {
  argmaxOf,
  filteredLogprobs,
  logSoftmax,
  mostProbable,
  processLogits,
  processes,
  samplingTemperature,
  type SamplingOptions,
} from "./sampling.ts";

export interface SamplerSettings extends SamplingOptions {
  seed: number;
  /** Report the chosen token's log-probability and this many most probable alternatives. */
  logprobs: number | undefined;
}

export interface TokenLogprob {
  token: number;
  logprob: number;
}

/** One row's pick. */
export interface Pick {
  token: number;
  logprob?: number;
  topLogprobs?: TokenLogprob[];
}

const GOLDEN = 0x9e3779b1;
const MIX1 = 0x85ebca6b;
const MIX2 = 0xc2b2ae35;

/** MurmurHash3's 32-bit finalizer. */
function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, MIX1);
  h ^= h >>> 13;
  h = Math.imul(h, MIX2);
  h ^= h >>> 16;
  return h >>> 0;
}

/** The key of a sequence's `index`-th draw (0: the token after the prompt): a function of the seed
 * and the index alone. */
export function drawKey(seed: number, index: number): number {
  const low = seed >>> 0;
  const high = Math.floor(seed / 2 ** 32) >>> 0;
  return fmix32(low ^ fmix32(high ^ fmix32((Math.imul(index, GOLDEN) + 0x7f4a7c15) >>> 0)));
}

/** The uniform in (0, 1) of a draw: the key's top 24 bits, exact in float32. */
export function drawUniform(key: number): number {
  return ((key >>> 8) + 0.5) / 2 ** 24;
}

/** The inverse-CDF draw over weights exp((filtered - max) / temperature) in id order. */
function drawFrom(filtered: Float64Array, temperature: number, u: number): number {
  let top = Number.NEGATIVE_INFINITY;
  for (const v of filtered) top = Math.max(top, v);
  const weights = Float64Array.from(filtered, (v) => Math.exp((v - top) / temperature));
  const target = u * weights.reduce((a, b) => a + b, 0);
  let sum = 0;
  let last = 0;
  for (let i = 0; i < weights.length; i++) {
    if (weights[i] === 0) continue;
    sum += weights[i]!;
    last = i;
    if (sum > target) return i;
  }
  return last;
}

/** Picks a token from one row's logits on the host, as the device does (in float64). */
export function pickOnHost(
  logits: Float32Array,
  history: readonly number[],
  settings: SamplerSettings,
  index: number,
): Pick {
  checkFinite(logits);
  const processed = processes(settings) ? processLogits(logits, history, settings) : logits;
  const lp = logSoftmax(processed);
  let token: number;
  if (settings.temperature <= 0) {
    token = argmaxOf(processed);
  } else {
    token = drawFrom(
      filteredLogprobs(lp, settings),
      samplingTemperature(settings.temperature),
      drawUniform(drawKey(settings.seed, index)),
    );
  }
  if (settings.logprobs === undefined) return { token };
  return { token, logprob: lp[token]!, topLogprobs: mostProbable(lp, settings.logprobs) };
}

/** Non-finite logits (NaN or infinity) stop generation. */
export function checkFinite(values: ArrayLike<number>): void {
  // -infinity is a masked token (a responseFormat's); the largest value must be finite (the device's
  // rule: its max over the row).
  let peak = Number.NEGATIVE_INFINITY;
  for (let i = 0; i < values.length; i++) {
    const v = values[i]!;
    if (Number.isNaN(v) || v === Number.POSITIVE_INFINITY) peak = Number.NaN;
    else if (v > peak) peak = v;
  }
  if (!Number.isFinite(peak))
    throw new Error("generate: the model's logits are not finite (NaN or infinity); generation stopped");
}
