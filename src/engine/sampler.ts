// Sampling for a batch of sequences, each row with its own settings and seed, as MLX ops on the
// device (the decode engine's path) and the same rule on the host (the CPU reference backend's path,
// and the test's reference). Per row: the logits processors (logit bias, repetition, presence and
// frequency penalties over its recent tokens), log-probabilities, the filters (top-p, min-p, top-k)
// and a draw. Only the chosen ids (and log-probabilities when asked for) come back to the host.
//
// The draw is the Gumbel-max trick: argmax(filtered / temperature + g) with g = -log(-log(u)), which
// picks token i with probability softmax(filtered / temperature)[i]. u comes from a counter-based
// hash of (the row's seed, the index of its draw, the token id), so a sequence draws the same tokens
// alone or in any batch, on any step schedule. Filters are thresholds on one ascending sort of the
// log-probabilities: top-p keeps what lies at or above the first token whose inclusive cumulative
// mass passes 1 - topP, min-p what lies at or above max + log(minP) (or among the minTokensToKeep
// largest), top-k what lies at or above the k-th largest; ties at a threshold are kept together (the
// host's top-k and minTokensToKeep keep exactly k: they differ only on tied log-probabilities).
import {
  add,
  arange,
  argmax,
  argsort,
  astype,
  bitwiseXor,
  concatenate,
  cumsum,
  divide,
  equal,
  exp,
  greater,
  greaterEqual,
  lessEqual,
  log,
  logsumexp,
  max,
  maximum,
  minimum,
  multiply,
  negative,
  reshape,
  rightShift,
  scatterAddAxis,
  slice,
  subtract,
  sum,
  takeAlongAxis,
  where,
  zeros,
} from "../ops/core.ts";
import { argmaxOf, filteredLogprobs, logSoftmax, mostProbable, processLogits, processes, type SamplingOptions } from "../sampling.ts";
import { Tensor, tidy } from "../tensor.ts";

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

// ---- the hash behind the draws (the same integer arithmetic on the host and the device) ----

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

/** The uniform in (0, 1) of token `id` under a draw's key: 24 bits, exact in float32. */
export function drawUniform(key: number, id: number): number {
  return ((fmix32((key ^ Math.imul(id, GOLDEN)) >>> 0) >>> 8) + 0.5) / 2 ** 24;
}

// ---- the host rule ----

/** Picks a token from one row's logits on the host, as the device does (in float64). */
export function pickOnHost(logits: Float32Array, history: readonly number[], settings: SamplerSettings, index: number): Pick {
  checkFinite(logits);
  const processed = processes(settings) ? processLogits(logits, history, settings) : logits;
  const lp = logSoftmax(processed);
  let token: number;
  if (settings.temperature <= 0) {
    token = argmaxOf(processed);
  } else {
    const filtered = filteredLogprobs(lp, settings);
    const key = drawKey(settings.seed, index);
    let best = Number.NEGATIVE_INFINITY;
    token = argmaxOf(filtered);
    for (let i = 0; i < filtered.length; i++) {
      if (filtered[i] === Number.NEGATIVE_INFINITY) continue;
      const y = filtered[i]! / settings.temperature - Math.log(-Math.log(drawUniform(key, i)));
      if (y > best) [best, token] = [y, i];
    }
  }
  if (settings.logprobs === undefined) return { token };
  return { token, logprob: lp[token]!, topLogprobs: mostProbable(lp, settings.logprobs) };
}

/** Non-finite logits (NaN or infinity) stop generation. */
export function checkFinite(values: ArrayLike<number>): void {
  for (let i = 0; i < values.length; i++) {
    if (!Number.isFinite(values[i]!)) throw new Error("generate: the model's logits are not finite (NaN or infinity); generation stopped");
  }
}

// ---- the device rule ----

/** What one batched pick launched on the device: read it with `read`. */
export interface DevicePicks {
  /** [B, 1] uint32: the picked ids (the next step's input). */
  tokens: Tensor;
  /** [B]: each row's largest logit (NaN or infinite when its logits are not finite). */
  peak: Tensor;
  /** [B] and [B, n] (n: the most alternatives a row asks for): log-probabilities, when asked for. */
  logprob?: Tensor;
  topIds?: Tensor;
  topLogprobs?: Tensor;
}

function uint32(value: number): Tensor {
  return Tensor.from(Uint32Array.of(value >>> 0), []);
}

function column(values: readonly number[], dtype: "float32" | "int32" = "float32"): Tensor {
  const host = dtype === "int32" ? Int32Array.from(values) : Float32Array.from(values);
  return Tensor.from(host, [values.length, 1]);
}

/** The recent tokens of each row (the penalties' context), kept on the device: [B, width] ids and
 * [B, width] 1/0 for the slots that hold a token (a short history leaves the first ones empty). */
interface Recent {
  ids: Tensor;
  filled: Tensor;
}

/** The per-row settings of one batch of sequences as tensors (made once per batch composition), and
 * the step that picks a token for every row. */
export class DeviceSampler {
  readonly settings: readonly SamplerSettings[];
  readonly vocabulary: number;
  /** The widest penalty context of the rows (0: no penalties). */
  readonly width: number;
  #recent: Recent | null = null;
  #owned: Tensor[] = [];
  #temperature: Tensor | null = null;
  #sampled: Tensor | null = null;
  #filter: { dropMass: Tensor; logMinP: Tensor; keepAt: Tensor; topKAt: Tensor } | null = null;
  #bias: Tensor | null = null;
  #penalties: { kind: "repetition" | "presence" | "frequency"; amount: Tensor; window: Tensor }[] = [];
  readonly #greedyOnly: boolean;
  readonly #alternatives: number;

  /** `histories`: each row's tokens so far (prompt and generated ones already fed to the model). */
  constructor(settings: readonly SamplerSettings[], vocabulary: number, histories: readonly (readonly number[])[]) {
    if (settings.length === 0 || histories.length !== settings.length) throw new Error("DeviceSampler: one history per row");
    this.settings = settings;
    this.vocabulary = vocabulary;
    const V = vocabulary;
    const own = (t: Tensor) => (this.#owned.push(t), t);
    const sampled = settings.map((s) => s.temperature > 0);
    this.#greedyOnly = !sampled.some(Boolean) && !settings.some(processes);
    this.#alternatives = Math.max(-1, ...settings.map((s) => s.logprobs ?? -1));
    if (sampled.some(Boolean)) {
      this.#temperature = own(column(settings.map((s) => (s.temperature > 0 ? s.temperature : 1))));
      this.#sampled = own(column(sampled.map(Number), "int32"));
      if (settings.some((s, i) => sampled[i] && (filtersTopP(s) || s.minP > 0 || s.topK > 0))) {
        this.#filter = {
          dropMass: own(column(settings.map((s) => (filtersTopP(s) ? 1 - s.topP : -1)))),
          logMinP: own(column(settings.map((s) => (s.minP > 0 ? Math.log(s.minP) : Number.NEGATIVE_INFINITY)))),
          keepAt: own(column(settings.map((s) => Math.max(0, V - s.minTokensToKeep)), "int32")),
          topKAt: own(column(settings.map((s) => (s.topK > 0 ? Math.max(0, V - s.topK) : 0)), "int32")),
        };
      }
    }
    for (const [i, s] of settings.entries()) {
      for (const id of Object.keys(s.logitBias)) {
        if (Number(id) >= V) throw new Error(`generate: logitBias names token id ${id}, past the vocabulary (${V}) (row ${i})`);
      }
    }
    if (settings.some((s) => Object.keys(s.logitBias).length > 0)) {
      const bias = new Float32Array(settings.length * V);
      for (const [i, s] of settings.entries()) for (const [id, b] of Object.entries(s.logitBias)) bias[i * V + Number(id)] = b;
      this.#bias = own(Tensor.from(bias, [settings.length, V]));
    }
    const contexts = {
      repetition: settings.map((s) => (s.repetitionPenalty !== 0 && s.repetitionPenalty !== 1 ? s.repetitionContextSize : 0)),
      presence: settings.map((s) => (s.presencePenalty !== 0 ? s.presenceContextSize : 0)),
      frequency: settings.map((s) => (s.frequencyPenalty !== 0 ? s.frequencyContextSize : 0)),
    };
    this.width = Math.max(0, ...Object.values(contexts).flat());
    const W = this.width;
    if (W > 0) {
      for (const kind of ["repetition", "presence", "frequency"] as const) {
        if (!contexts[kind].some((c) => c > 0)) continue;
        const amount = settings.map((s, i) => (kind === "repetition" ? (contexts.repetition[i]! > 0 ? s.repetitionPenalty : 1) : kind === "presence" ? s.presencePenalty : s.frequencyPenalty));
        // The context's slots of each row: the last `context` of the width.
        const window = new Float32Array(settings.length * W);
        for (const [i, c] of contexts[kind].entries()) window.fill(1, i * W + W - c, (i + 1) * W);
        this.#penalties.push({ kind, amount: own(column(amount)), window: own(Tensor.from(window, [settings.length, W])) });
      }
      this.#recent = tidy(() => recentOf(histories, W));
    }
  }

  /** Rows in this batch. */
  get rows(): number {
    return this.settings.length;
  }

  /** Picks a token per row from logits [B, V] (or [B, 1, V]); `inputs` [B, 1] are the ids the step
   * was fed (they join the recent tokens first; null for a prompt's logits, whose history is the
   * prompt), `draws` each row's draw index. Launches nothing: the caller evaluates. */
  pick(logits: Tensor, inputs: Tensor | null, draws: readonly number[]): DevicePicks {
    if (draws.length !== this.rows) throw new Error(`DeviceSampler.pick: ${draws.length} draw indices for ${this.rows} rows`);
    if (inputs && this.#recent) this.#remember(inputs);
    return tidy(() => {
      const B = this.rows;
      const x0 = logits.ndim === 3 ? reshape(logits, [B, this.vocabulary]) : logits;
      const peak = max(x0, -1);
      if (this.#greedyOnly && this.#alternatives < 0) return { tokens: argmax(x0, -1, true), peak };
      const x = this.#processed(x0.dtype === "float32" ? x0 : astype(x0, "float32"));
      const lp = subtract(x, logsumexp(x, -1, true));
      let order: Tensor | null = null;
      let tokens = argmax(x, -1, true);
      if (this.#sampled) {
        let candidates = lp;
        if (this.#filter) {
          order = argsort(lp, -1);
          candidates = this.#filtered(lp, takeAlongAxis(lp, order, -1));
        }
        const noise = gumbel(Uint32Array.from(this.settings, (s, i) => drawKey(s.seed, draws[i]!)), this.vocabulary);
        const drawn = argmax(add(divide(candidates, this.#temperature!), noise), -1, true);
        tokens = where(equal(this.#sampled, 1), drawn, tokens);
      }
      if (this.#alternatives < 0) return { tokens, peak };
      const n = this.#alternatives;
      const chosen = reshape(takeAlongAxis(lp, tokens, -1), [B]);
      if (n === 0) return { tokens, peak, logprob: chosen };
      order ??= argsort(lp, -1);
      const V = this.vocabulary;
      const topIds = slice(order, [0, V - n], [B, V]);
      return { tokens, peak, logprob: chosen, topIds, topLogprobs: takeAlongAxis(lp, topIds, -1) };
    });
  }

  /** Logits [B, V] as the filters leave their log-probabilities: kept tokens' log-probabilities,
   * -infinity for the masked ones (the processors apply first; rows without filters keep all). */
  filteredLogprobs(logits: Tensor): Tensor {
    return tidy(() => {
      const x = this.#processed(astype(logits, "float32"));
      const lp = subtract(x, logsumexp(x, -1, true));
      return this.#filter ? this.#filtered(lp, takeAlongAxis(lp, argsort(lp, -1), -1)) : lp;
    });
  }

  /** The filters' mask on log-probabilities lp [B, V] (sorted ascending: sorted): lp where kept,
   * -infinity elsewhere. */
  #filtered(lp: Tensor, sorted: Tensor): Tensor {
    const { dropMass, logMinP, keepAt, topKAt } = this.#filter!;
    const B = this.rows;
    const V = this.vocabulary;
    const mass = cumsum(exp(sorted), -1);
    const total = slice(mass, [0, V - 1], [B, V]);
    const dropped = sum(lessEqual(mass, multiply(dropMass, total)), -1, true);
    const topP = takeAlongAxis(sorted, minimum(astype(dropped, "int32"), V - 1), -1);
    const top = slice(sorted, [0, V - 1], [B, V]);
    const minP = minimum(add(top, logMinP), takeAlongAxis(sorted, keepAt, -1));
    const threshold = maximum(maximum(topP, minP), takeAlongAxis(sorted, topKAt, -1));
    using floor = Tensor.scalar(Number.NEGATIVE_INFINITY);
    return where(greaterEqual(lp, threshold), lp, floor);
  }

  /** Logits after the processors: bias, then the penalties over each row's recent tokens. */
  #processed(x: Tensor): Tensor {
    if (this.#bias) x = add(x, this.#bias);
    if (!this.#recent) return x;
    const { ids, filled } = this.#recent;
    for (const { kind, amount, window } of this.#penalties) {
      using empty = zeros([this.rows, this.vocabulary], "float32");
      const counts = scatterAddAxis(empty, ids, multiply(filled, window), -1);
      const seen = greater(counts, 0);
      if (kind === "repetition") {
        x = where(seen, where(greater(0, x), multiply(x, amount), divide(x, amount)), x);
      } else if (kind === "presence") {
        x = subtract(x, multiply(astype(seen, "float32"), amount));
      } else {
        x = subtract(x, multiply(counts, amount));
      }
    }
    return x;
  }

  /** Appends each row's input id to its recent tokens (the oldest slot drops out). */
  #remember(inputs: Tensor): void {
    const previous = this.#recent!;
    this.#recent = tidy(() => {
      const B = this.rows;
      const W = this.width;
      using ones = zeros([B, 1], "float32");
      const ids = concatenate([slice(previous.ids, [0, 1], [B, W]), astype(reshape(inputs, [B, 1]), "int32")], 1);
      const filled = concatenate([slice(previous.filled, [0, 1], [B, W]), add(ones, 1)], 1);
      return { ids, filled };
    });
    previous.ids.dispose();
    previous.filled.dispose();
  }

  /** The picks read to the host, one per row: an Error for a row whose logits are not finite. */
  static read(picks: DevicePicks, settings: readonly SamplerSettings[]): (Pick | Error)[] {
    const tokens = picks.tokens.toInt32Array();
    const peak = picks.peak.toFloat32Array();
    const logprob = picks.logprob?.toFloat32Array();
    const topIds = picks.topIds?.toInt32Array();
    const topValues = picks.topLogprobs?.toFloat32Array();
    const n = picks.topIds ? picks.topIds.shape[1]! : 0;
    return settings.map((s, b) => {
      if (!Number.isFinite(peak[b]!)) return new Error("generate: the model's logits are not finite (NaN or infinity); generation stopped");
      const token = tokens[b]!;
      if (s.logprobs === undefined || !logprob) return { token };
      const top: TokenLogprob[] = [];
      for (let j = 0; j < s.logprobs; j++) top.push({ token: topIds![b * n + n - 1 - j]!, logprob: topValues![b * n + n - 1 - j]! });
      return { token, logprob: logprob[b]!, topLogprobs: top };
    });
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  dispose(): void {
    for (const t of this.#owned.splice(0)) t.dispose();
    this.#recent?.ids.dispose();
    this.#recent?.filled.dispose();
    this.#recent = null;
  }
}

function filtersTopP(s: SamplingOptions): boolean {
  return s.topP > 0 && s.topP < 1;
}

/** Gumbel noise [B, V] from each row's draw key: -log(-log(u)) with u the hash's uniform. */
function gumbel(keys: Uint32Array, vocabulary: number): Tensor {
  const B = keys.length;
  const ids = multiply(arange(0, vocabulary, 1, "uint32"), uint32(GOLDEN));
  let h = bitwiseXor(Tensor.from(keys, [B, 1]), reshape(ids, [1, vocabulary]));
  const shift = (by: number) => bitwiseXor(h, rightShift(h, uint32(by)));
  h = shift(16);
  h = multiply(h, uint32(MIX1));
  h = shift(13);
  h = multiply(h, uint32(MIX2));
  h = shift(16);
  const u = multiply(add(astype(rightShift(h, uint32(8)), "float32"), 0.5), 2 ** -24);
  return negative(log(negative(log(u))));
}

/** The recent tokens of a new batch from the rows' histories: the last `width` of each. */
function recentOf(histories: readonly (readonly number[])[], width: number): Recent {
  const B = histories.length;
  const ids = new Int32Array(B * width);
  const filled = new Float32Array(B * width);
  for (const [b, history] of histories.entries()) {
    const tail = history.slice(Math.max(0, history.length - width));
    ids.set(tail, b * width + width - tail.length);
    filled.fill(1, b * width + width - tail.length, (b + 1) * width);
  }
  return { ids: Tensor.from(ids, [B, width]), filled: Tensor.from(filled, [B, width]) };
}
