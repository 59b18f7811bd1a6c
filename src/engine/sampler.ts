// Sampling for a batch of sequences as MLX ops on the device, each row with its own settings and
// seed: the logits processors (logit bias, repetition, presence and frequency penalties over its
// recent tokens), log-probabilities, the filters (top-p, min-p, top-k) and the draw, by the rule of
// host-sampler.ts (its reference, and the CPU backend's sampler). Only the chosen ids (and
// log-probabilities when asked for) come back to the host.
//
// The filters and the draw are one primitive of the shim's (samplePick: shim/ext/sample.cpp, a CUDA
// kernel on a GPU): filters are thresholds on the logits — top-p keeps what lies at or above the first
// token (ascending) whose inclusive cumulative mass passes 1 - topP, min-p what lies at or above
// max + log(minP) (or among the minTokensToKeep largest), top-k what lies at or above the k-th
// largest; ties at a threshold are kept together (the host's top-k and minTokensToKeep keep exactly
// k: they differ only on tied values). Greedy rows take greedyPick (argmax and max; one primitive
// on a CUDA GPU). The penalties are one primitive too (penalize): it changes
// the logits of each row's recent tokens (a few dozen values, not the vocabulary).
import {
  add,
  argpartition,
  argsort,
  astype,
  concatenate,
  greaterEqual,
  logsumexp,
  reshape,
  slice,
  subtract,
  where,
} from "../ops/core.ts";
import { greedyPick, penalize, samplePick } from "../ops/fast.ts";
// Every index the sampler gathers by is in range by construction (token ids, partition positions).
import { takeAlongAxisInRange as takeAlongAxis } from "../ops/gather.ts";
import { processes, samplingTemperature } from "./sampling.ts";
import type { Pick, SamplerSettings, TokenLogprob } from "./host-sampler.ts";
import { Tensor, tidy } from "../tensor.ts";

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

/** The recent tokens of each row (the penalties' context), kept on the device: [B, width] int32 ids,
 * oldest first, -1 for a slot without a token (a short history leaves the first ones empty). */
interface Recent {
  ids: Tensor;
}

/** What a pick hands the next one, on the device: each row's next draw index [B] uint32 (when a row
 * samples) and the recent tokens (with penalties). */
interface Carried {
  draws: Tensor | null;
  recent: Recent | null;
}

function carriedTensors(c: Carried): Tensor[] {
  return [...(c.draws ? [c.draws] : []), ...(c.recent ? [c.recent.ids] : [])];
}

/** The per-row settings of one batch of sequences as tensors (made once per batch composition), and
 * the step that picks a token for every row. */
export class DeviceSampler {
  readonly settings: readonly SamplerSettings[];
  readonly vocabulary: number;
  /** The widest penalty context of the rows (0: no penalties). */
  readonly width: number;
  #carried: Carried = { draws: null, recent: null };
  #owned: Tensor[] = [];
  /** samplePick's per-row settings [B, 5] and seeds [B, 2], when a row samples. */
  #params: Tensor | null = null;
  #seeds: Tensor | null = null;
  #bias: Tensor | null = null;
  /** penalize's per-row params [B, 6], when a row has a penalty. */
  #penalties: Tensor | null = null;
  readonly #greedyOnly: boolean;
  readonly #alternatives: number;

  /** `histories`: each row's tokens so far (prompt and generated ones already fed to the model);
   * `draws`: the index of each row's next draw (each pick advances them on the device). */
  constructor(
    settings: readonly SamplerSettings[],
    vocabulary: number,
    histories: readonly (readonly number[])[],
    draws: readonly number[],
  ) {
    if (settings.length === 0 || histories.length !== settings.length || draws.length !== settings.length)
      throw new Error("DeviceSampler: one history and draw index per row");
    this.settings = settings;
    this.vocabulary = vocabulary;
    const V = vocabulary;
    const own = (t: Tensor) => {
      this.#owned.push(t);
      return t;
    };
    const sampled = settings.map((s) => s.temperature > 0);
    this.#greedyOnly = !sampled.some(Boolean) && !settings.some(processes);
    this.#alternatives = Math.min(V, Math.max(-1, ...settings.map((s) => s.logprobs ?? -1)));
    if (sampled.some(Boolean)) {
      const params = new Float32Array(settings.length * 5);
      for (const [i, s] of settings.entries()) {
        const on = sampled[i]!;
        params.set(
          [
            on ? 1 / samplingTemperature(s.temperature) : 0,
            on && s.topP > 0 && s.topP < 1 ? 1 - s.topP : -1,
            on && s.minP > 0 ? Math.log(s.minP) : Number.NEGATIVE_INFINITY,
            s.minTokensToKeep,
            on && s.topK > 0 ? s.topK : 0,
          ],
          i * 5,
        );
      }
      this.#params = own(Tensor.from(params, [settings.length, 5]));
      const seeds = new Uint32Array(settings.length * 2);
      for (const [i, s] of settings.entries()) seeds.set([s.seed >>> 0, Math.floor(s.seed / 2 ** 32) >>> 0], i * 2);
      this.#seeds = own(Tensor.from(seeds, [settings.length, 2]));
      this.#carried.draws = Tensor.from(Uint32Array.from(draws), [settings.length]);
    }
    for (const [i, s] of settings.entries()) {
      for (const id of Object.keys(s.logitBias)) {
        if (Number(id) >= V)
          throw new Error(`generate: logitBias names token id ${id}, past the vocabulary (${V}) (row ${i})`);
      }
    }
    if (settings.some((s) => Object.keys(s.logitBias).length > 0)) {
      const bias = new Float32Array(settings.length * V);
      for (const [i, s] of settings.entries())
        for (const [id, b] of Object.entries(s.logitBias)) bias[i * V + Number(id)] = b;
      this.#bias = own(Tensor.from(bias, [settings.length, V]));
    }
    const contexts = {
      repetition: settings.map((s) =>
        s.repetitionPenalty !== 0 && s.repetitionPenalty !== 1 ? s.repetitionContextSize : 0,
      ),
      presence: settings.map((s) => (s.presencePenalty !== 0 ? s.presenceContextSize : 0)),
      frequency: settings.map((s) => (s.frequencyPenalty !== 0 ? s.frequencyContextSize : 0)),
    };
    this.width = Math.max(0, ...Object.values(contexts).flat());
    if (this.width > 0) {
      const params = new Float32Array(settings.length * 6);
      for (const [i, s] of settings.entries()) {
        params.set(
          [
            s.repetitionPenalty,
            contexts.repetition[i]!,
            s.presencePenalty,
            contexts.presence[i]!,
            s.frequencyPenalty,
            contexts.frequency[i]!,
          ],
          i * 6,
        );
      }
      this.#penalties = own(Tensor.from(params, [settings.length, 6]));
      this.#carried.recent = recentOf(histories, this.width);
    }
  }

  /** Rows in this batch. */
  get rows(): number {
    return this.settings.length;
  }

  /** Picks a token per row from logits [B, V] (or [B, 1, V]); `inputs` [B, 1] are the ids the step
   * was fed (they join the recent tokens first; null for a prompt's logits, whose history is the
   * prompt). Launches nothing: the caller evaluates. */
  pick(logits: Tensor, inputs: Tensor | null): DevicePicks {
    const { picks, carried } = this.#pickWith(logits, inputs, this.#carried);
    this.#keep(carried);
    return picks;
  }

  /** The pick as the tail of a recorded decode step (models/replay.ts): the tensors it reads besides
   * the logits and the step's ids (`inputs`, in an order fixed by `structure`), the ops that make
   * its outputs from them, and `adopt`, which takes a step's outputs as the picks (the draw indices
   * and recent tokens they carry replace the sampler's). */
  tail(): {
    structure: string;
    inputs: Tensor[];
    run: (logits: Tensor, ids: Tensor) => Tensor[];
    adopt: (outputs: Tensor[]) => DevicePicks;
  } {
    const carried = this.#carried;
    const inputs = [...this.#owned, ...carriedTensors(carried)];
    const run = (logits: Tensor, ids: Tensor) => {
      const { picks, carried: next } = this.#pickWith(logits, ids, carried);
      return [...pickTensors(picks), ...carriedTensors(next)];
    };
    const adopt = (outputs: Tensor[]): DevicePicks => {
      const [tokens, peak, ...rest] = outputs as [Tensor, Tensor, ...Tensor[]];
      const picks: DevicePicks = { tokens, peak };
      if (this.#alternatives >= 0) picks.logprob = rest.shift()!;
      if (this.#alternatives > 0) [picks.topIds, picks.topLogprobs] = [rest.shift()!, rest.shift()!];
      const draws = carried.draws ? rest.shift()! : null;
      this.#keep({ draws, recent: carried.recent ? { ids: rest[0]! } : null });
      return picks;
    };
    return { structure: this.#structure(), inputs, run, adopt };
  }

  /** What decides the ops of a pick (rows, which processors, whether a row samples, how many
   * alternatives). */
  #structure(): string {
    return [
      this.rows,
      this.vocabulary,
      this.#greedyOnly,
      this.#params !== null,
      this.#bias !== null,
      this.width, // (0: no penalties)
      this.#alternatives,
    ].join("|");
  }

  #keep(next: Carried): void {
    const now = this.#carried;
    if (next.draws !== now.draws) now.draws?.dispose();
    if (next.recent !== now.recent) now.recent?.ids.dispose();
    this.#carried = next;
  }

  /** The pick's ops over what the previous pick carried (a pure function of its arguments and the
   * sampler's tensors): the picks, and what this one carries on (the step's ids appended to the
   * recent tokens, the draw indices advanced). */
  #pickWith(logits: Tensor, inputs: Tensor | null, carried: Carried): { picks: DevicePicks; carried: Carried } {
    return tidy(() => {
      const B = this.rows;
      const V = this.vocabulary;
      let recent = carried.recent;
      if (inputs && recent) recent = remembered(recent, inputs);
      const x0 = logits.ndim === 3 ? reshape(logits, [B, V]) : logits;
      if (this.#greedyOnly && this.#alternatives < 0) {
        const [tokens, peak] = greedyPick(x0);
        return { picks: { tokens, peak }, carried: { draws: null, recent } };
      }
      // The processors work in float32; samplePick reads any float dtype.
      const processing = this.#bias !== null || recent !== null;
      const x = processing ? this.#processed(x0, recent) : x0;
      let tokens: Tensor;
      let peak: Tensor;
      let draws: Tensor | null = null;
      if (this.#params) {
        [tokens, peak] = samplePick(x, this.#params, this.#seeds!, carried.draws!);
        // From host data (a recorded step takes it as a constant).
        using one = Tensor.from(Uint32Array.of(1), [1]);
        draws = add(carried.draws!, one);
      } else {
        [tokens, peak] = greedyPick(x);
      }
      const next = { draws, recent };
      if (this.#alternatives < 0) return { picks: { tokens, peak }, carried: next };
      const n = this.#alternatives;
      const xf = float32(x);
      const lp = subtract(xf, logsumexp(xf, -1, true));
      const chosen = reshape(takeAlongAxis(lp, tokens, -1), [B]);
      if (n === 0) return { picks: { tokens, peak, logprob: chosen }, carried: next };
      const [ids, values] = largestOf(lp, n);
      return { picks: { tokens, peak, logprob: chosen, topIds: ids, topLogprobs: values }, carried: next };
    });
  }

  /** Logits [B, V] as the filters leave their log-probabilities: kept tokens' log-probabilities,
   * -infinity for the masked ones (the processors apply first; rows without filters keep all). */
  filteredLogprobs(logits: Tensor): Tensor {
    return tidy(() => {
      const x = float32(this.#processed(logits, this.#carried.recent));
      const lp = subtract(x, logsumexp(x, -1, true));
      if (!this.#params) return lp;
      using draws = Tensor.from(new Uint32Array(this.rows), [this.rows]);
      const [, , threshold] = samplePick(x, this.#params, this.#seeds!, draws);
      using off = Tensor.scalar(Number.NEGATIVE_INFINITY);
      return where(greaterEqual(x, reshape(threshold, [this.rows, 1])), lp, off);
    });
  }

  /** Logits after the processors (float32 when there are any): bias, then the penalties over each
   * row's recent tokens. */
  #processed(x: Tensor, recent: Recent | null): Tensor {
    if (this.#bias) x = add(float32(x), this.#bias);
    return recent && this.#penalties ? penalize(x, recent.ids, this.#penalties) : x;
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
      if (!Number.isFinite(peak[b]!))
        return new Error("generate: the model's logits are not finite (NaN or infinity); generation stopped");
      const token = tokens[b]!;
      if (s.logprobs === undefined || !logprob) return { token };
      const top: TokenLogprob[] = [];
      for (let j = 0; j < s.logprobs; j++)
        top.push({ token: topIds![b * n + n - 1 - j]!, logprob: topValues![b * n + n - 1 - j]! });
      return { token, logprob: logprob[b]!, topLogprobs: top };
    });
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  dispose(): void {
    for (const t of this.#owned.splice(0)) t.dispose();
    this.#keep({ draws: null, recent: null });
  }
}

/** The recent tokens with each row's input id ([B, 1]) appended (the oldest slot drops out): new tensors. */
function remembered(recent: Recent, inputs: Tensor): Recent {
  const [B, W] = recent.ids.shape as [number, number];
  const input = inputs.dtype === "int32" ? inputs : astype(inputs, "int32");
  return { ids: concatenate([slice(recent.ids, [0, 1], [B, W]), input], 1) };
}

function float32(x: Tensor): Tensor {
  return x.dtype === "float32" ? x : astype(x, "float32");
}

/** The tensors of picks, in a fixed order (tokens, peak, then those asked for). */
export function pickTensors(p: DevicePicks): Tensor[] {
  return [p.tokens, p.peak, p.logprob, p.topIds, p.topLogprobs].filter((t): t is Tensor => t !== undefined);
}

/** The n largest values of each row of x [B, V], ascending, with their ids: [ids, values]. */
function largestOf(x: Tensor, n: number): [Tensor, Tensor] {
  const [B, V] = x.shape as [number, number];
  const ids = n === V ? argsort(x, -1) : slice(argpartition(x, V - n, -1), [0, V - n], [B, V]);
  const values = takeAlongAxis(x, ids, -1);
  if (n === V) return [ids, values];
  const order = argsort(values, -1);
  return [takeAlongAxis(ids, order, -1), takeAlongAxis(values, order, -1)];
}

/** The recent tokens of a new batch from the rows' histories: the last `width` of each. */
function recentOf(histories: readonly (readonly number[])[], width: number): Recent {
  const B = histories.length;
  const ids = new Int32Array(B * width).fill(-1);
  for (const [b, history] of histories.entries()) {
    const tail = history.slice(Math.max(0, history.length - width));
    ids.set(tail, b * width + width - tail.length);
  }
  return { ids: Tensor.from(ids, [B, width]) };
}
