// Logits processors and samplers on the host, as mlx-lm's make_logits_processors / make_sampler
// define them: the processors (logit bias, repetition, presence, frequency penalties over the
// recent tokens) change the logits; log-probabilities are taken; the sampler's filters (top-p, min-p,
// top-k, in that order) mask tokens; a token is drawn from softmax(filtered / temperature).

export interface SamplingOptions {
  /** 0: greedy (the argmax of the processed logits). */
  temperature: number;
  /** Nucleus: keep the most probable tokens whose mass reaches topP (1: off). */
  topP: number;
  /** Keep the topK most probable tokens (0: off). */
  topK: number;
  /** Drop tokens less probable than minP x the top token's probability (0: off). */
  minP: number;
  /** Tokens min-p keeps at least. */
  minTokensToKeep: number;
  /** Sign-aware multiplicative penalty on tokens seen in the last repetitionContextSize (1 or 0: off). */
  repetitionPenalty: number;
  repetitionContextSize: number;
  /** Subtracted once from tokens seen in the last presenceContextSize (0: off). */
  presencePenalty: number;
  presenceContextSize: number;
  /** Subtracted per occurrence in the last frequencyContextSize (0: off). */
  frequencyPenalty: number;
  frequencyContextSize: number;
  /** Added to the logits of these token ids. */
  logitBias: Readonly<Record<number, number>>;
}

export const DEFAULT_SAMPLING: SamplingOptions = {
  temperature: 0,
  topP: 1,
  topK: 0,
  minP: 0,
  minTokensToKeep: 1,
  repetitionPenalty: 0,
  repetitionContextSize: 20,
  presencePenalty: 0,
  presenceContextSize: 20,
  frequencyPenalty: 0,
  frequencyContextSize: 20,
  logitBias: {},
};

/** Whether any processor changes the logits (then greedy decoding reads them on the host). */
export function processes(o: SamplingOptions): boolean {
  return (
    Object.keys(o.logitBias).length > 0 ||
    (o.repetitionPenalty !== 0 && o.repetitionPenalty !== 1) ||
    o.presencePenalty !== 0 ||
    o.frequencyPenalty !== 0
  );
}

/** The logits after the processors, given the tokens so far (prompt and generated). A copy. */
export function processLogits(logits: Float32Array, tokens: readonly number[], o: SamplingOptions): Float32Array {
  const out = Float32Array.from(logits);
  for (const [id, bias] of Object.entries(o.logitBias)) out[Number(id)]! += bias;
  const recent = (size: number) => tokens.slice(Math.max(0, tokens.length - size));
  if (o.repetitionPenalty !== 0 && o.repetitionPenalty !== 1) {
    for (const t of new Set(recent(o.repetitionContextSize))) {
      const v = out[t]!;
      out[t] = v < 0 ? v * o.repetitionPenalty : v / o.repetitionPenalty;
    }
  }
  if (o.presencePenalty !== 0) for (const t of new Set(recent(o.presenceContextSize))) out[t]! -= o.presencePenalty;
  if (o.frequencyPenalty !== 0) for (const t of recent(o.frequencyContextSize)) out[t]! -= o.frequencyPenalty;
  return out;
}

/** log-softmax, in float64. */
export function logSoftmax(logits: ArrayLike<number>): Float64Array {
  let max = Number.NEGATIVE_INFINITY;
  for (let i = 0; i < logits.length; i++) max = Math.max(max, logits[i]!);
  let total = 0;
  for (let i = 0; i < logits.length; i++) total += Math.exp(logits[i]! - max);
  const shift = max + Math.log(total);
  return Float64Array.from({ length: logits.length }, (_, i) => logits[i]! - shift);
}

function descending(values: Float64Array): number[] {
  return Array.from(values.keys()).sort((a, b) => values[b]! - values[a]!);
}

/** The log-probabilities after the sampler's filters (top-p, min-p, top-k, in mlx-lm's order):
 * masked tokens are -infinity. */
export function filteredLogprobs(logprobs: Float64Array, o: SamplingOptions): Float64Array {
  const x = Float64Array.from(logprobs);
  const masked = (keep: (i: number) => boolean) => {
    for (let i = 0; i < x.length; i++) if (!keep(i)) x[i] = Number.NEGATIVE_INFINITY;
  };
  if (o.topP > 0 && o.topP < 1) {
    // mlx-lm's apply_top_p: drop the tokens (least probable first) whose mass above them reaches
    // topP of the total; the threshold is a log-probability, so ties go together.
    const order = descending(x).reverse();
    const probs = order.map((i) => Math.exp(x[i]!));
    const total = probs.reduce((a, b) => a + b, 0);
    let above = total;
    let dropped = 0;
    for (const p of probs) {
      above -= p;
      if (above >= o.topP * total) dropped++;
      else break;
    }
    const threshold = x[order[dropped]!]!;
    masked((i) => x[i]! >= threshold);
  }
  if (o.minP > 0) {
    const top = Math.max(...x);
    const floor = top + Math.log(o.minP);
    const kept = new Set(descending(x).slice(0, o.minTokensToKeep));
    masked((i) => x[i]! >= floor || kept.has(i));
  }
  if (o.topK > 0) {
    const kept = new Set(descending(x).slice(0, o.topK));
    masked((i) => kept.has(i));
  }
  return x;
}

/** The temperature a positive `temperature` samples at: at least 1e-30, whose inverse float32 still
 * holds (a smaller one would make the device's scaled logits infinite; at 1e-30 every token but the
 * largest already has probability 0). */
export function samplingTemperature(temperature: number): number {
  return Math.max(temperature, 1e-30);
}

/** The distribution a token is drawn from: the filters on the log-probabilities, then
 * softmax(filtered / temperature). Masked tokens have probability 0. */
export function samplingDistribution(logprobs: Float64Array, o: SamplingOptions): Float64Array {
  const x = filteredLogprobs(logprobs, o);
  const temperature = o.temperature > 0 ? samplingTemperature(o.temperature) : 1;
  return Float64Array.from(logSoftmax(Array.from(x, (v) => v / temperature)), Math.exp);
}

/** Draws an index from a distribution with `next()` in [0, 1). */
export function draw(probabilities: Float64Array, next: () => number): number {
  let r = next();
  let last = 0;
  for (let i = 0; i < probabilities.length; i++) {
    if (probabilities[i]! <= 0) continue;
    last = i;
    r -= probabilities[i]!;
    if (r < 0) return i;
  }
  return last;
}

/** The n most probable tokens of log-probabilities, most probable first. */
export function mostProbable(logprobs: Float64Array, n: number): { token: number; logprob: number }[] {
  return Array.from(logprobs.keys())
    .sort((a, b) => logprobs[b]! - logprobs[a]!)
    .slice(0, n)
    .map((token) => ({ token, logprob: logprobs[token]! }));
}

/** The index of the largest value. */
export function argmaxOf(values: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i]! > values[best]!) best = i;
  return best;
}
