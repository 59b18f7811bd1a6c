// Text generation: prefill, then one forward per decoded token; greedy, temperature and top-p
// sampling with a seed; stop tokens and strings; streaming as an async iterator.
import type { TensorData } from "./dtype.ts";
import { checkTokenIds, forward, generationCache, type Model, rewrittenGraph, tokenIds } from "./models/index.ts";
import { KVCache } from "./kv-cache.ts";
import { DecodeTape } from "./models/replay.ts";
import { argmax, asyncEval, evalAll, max } from "./ops/core.ts";
import { argmaxOf, DEFAULT_SAMPLING, mostProbable, draw, logSoftmax, processes, processLogits, samplingDistribution, type SamplingOptions } from "./sampling.ts";
import { PromptCache } from "./prompt-cache.ts";
import { Tensor } from "./tensor.ts";
import type { Tokenizer } from "./tokenizer.ts";

export interface GenerateOptions {
  maxTokens?: number | undefined;
  /** 0 (default): greedy. */
  temperature?: number | undefined;
  /** Nucleus sampling: keep the smallest set of tokens whose probability reaches topP. */
  topP?: number | undefined;
  seed?: number | undefined;
  /** Extra ids that end generation (the model's and tokenizer's eos are always included). */
  stopTokens?: number[] | undefined;
  /** Strings that end generation; the text stops before them. */
  stopStrings?: string[] | undefined;
  /** Generate past end-of-sequence tokens (benchmarks: a fixed token count). */
  ignoreEos?: boolean | undefined;
  /** Run the graph rewritten with fused MLX ops (default: the default rewriters); false: the plain
   * graph; a list: those rewriters. (The backend is the model's: see loadModel.) */
  rewrite?: boolean | string[] | undefined;
  /** MLX: record the first decode step in the shim and replay it for the rest (default true);
   * false runs every step through the TypeScript executor. */
  replay?: boolean | undefined;
  /** Allow prompt + maxTokens past the model's max_position_embeddings (default false: an Error). */
  exceedContext?: boolean | undefined;
  /** Keep the topK most probable tokens (0, default: off). */
  topK?: number | undefined;
  /** Drop tokens less probable than minP x the top token's probability (0, default: off). */
  minP?: number | undefined;
  /** Tokens min-p keeps at least (default 1). */
  minTokensToKeep?: number | undefined;
  /** Sign-aware multiplicative penalty on tokens seen recently (1 or 0, default: off), mlx-lm's. */
  repetitionPenalty?: number | undefined;
  /** Tokens the repetition penalty looks back over (default 20). */
  repetitionContextSize?: number | undefined;
  /** Subtracted once from the logits of recently seen tokens (default 0). */
  presencePenalty?: number | undefined;
  presenceContextSize?: number | undefined;
  /** Subtracted per recent occurrence (default 0). */
  frequencyPenalty?: number | undefined;
  frequencyContextSize?: number | undefined;
  /** Added to the logits of these token ids. */
  logitBias?: Readonly<Record<number, number>> | undefined;
  /** Report each token's log-probability and this many most probable alternatives (0 to 20); the
   * log-probabilities are those after the processors (penalties, bias), before the sampler, as mlx-lm's. */
  logprobs?: number | undefined;
  /** A conversation's cache kept across calls: only the prompt past the longest common token prefix
   * with what it holds is prefilled, and it holds prompt + generated tokens afterwards. */
  promptCache?: PromptCache | undefined;
  /** Bound the KV cache to this many positions (mlx-lm's max_kv_size): past it, a rotating cache
   * keeps the first 4 and the latest ones. An integer > 4; the prompt must fit. */
  maxKvSize?: number | undefined;
  /** Store the KV cache quantized at 4 or 8 bits (mlx-lm's kv_bits with quantized_kv_start 0; MLX
   * only): the prompt but its last token is attended at full precision, every later step over the
   * quantized keys and values. */
  kvBits?: number | undefined;
  /** Group size of kvBits's quantization along head_dim (default 64). */
  kvGroupSize?: number | undefined;
}

const OPTION_NAMES = [
  "maxTokens", "temperature", "topP", "seed", "stopTokens", "stopStrings", "ignoreEos", "rewrite", "replay", "exceedContext",
  "topK", "minP", "minTokensToKeep", "repetitionPenalty", "repetitionContextSize", "presencePenalty", "presenceContextSize",
  "frequencyPenalty", "frequencyContextSize", "logitBias", "logprobs", "promptCache", "maxKvSize", "kvBits", "kvGroupSize",
] as const;

function fail(option: string, range: string, value: unknown): never {
  throw new Error(`generate: ${option} must be ${range}, got ${typeof value === "string" ? JSON.stringify(value) : String(value)}`);
}

/** The options with their defaults, each checked: an Error names the option and the accepted range. */
export function checkedOptions(options: GenerateOptions) {
  if (options === null || typeof options !== "object") fail("options", "an object", options);
  for (const key of Object.keys(options)) {
    if (!(OPTION_NAMES as readonly string[]).includes(key)) throw new Error(`generate: unknown option '${key}' (valid: ${OPTION_NAMES.join(", ")})`);
  }
  const { maxTokens = 64, temperature = 0, topP = 1, seed = 0, stopTokens = [], stopStrings = [] } = options;
  if (!Number.isSafeInteger(maxTokens) || maxTokens < 1) fail("maxTokens", "a positive integer", maxTokens);
  if (typeof temperature !== "number" || !Number.isFinite(temperature) || temperature < 0) fail("temperature", "a finite number >= 0", temperature);
  if (typeof topP !== "number" || !(topP > 0 && topP <= 1)) fail("topP", "a number in (0, 1]", topP);
  if (!Number.isSafeInteger(seed)) fail("seed", "an integer", seed);
  if (!Array.isArray(stopTokens) || !stopTokens.every((t) => Number.isSafeInteger(t) && t >= 0)) fail("stopTokens", "an array of token ids (integers >= 0)", stopTokens);
  if (!Array.isArray(stopStrings) || !stopStrings.every((s) => typeof s === "string" && s.length > 0)) fail("stopStrings", "an array of non-empty strings", stopStrings);
  for (const flag of ["ignoreEos", "replay", "exceedContext"] as const) {
    if (options[flag] !== undefined && typeof options[flag] !== "boolean") fail(flag, "a boolean", options[flag]);
  }
  const { rewrite } = options;
  if (rewrite !== undefined && typeof rewrite !== "boolean" && !(Array.isArray(rewrite) && rewrite.every((r) => typeof r === "string"))) {
    fail("rewrite", "a boolean or a list of rewriter names", rewrite);
  }
  const d = DEFAULT_SAMPLING;
  const { topK = d.topK, minP = d.minP, minTokensToKeep = d.minTokensToKeep, repetitionPenalty = d.repetitionPenalty, presencePenalty = d.presencePenalty, frequencyPenalty = d.frequencyPenalty } = options;
  const { repetitionContextSize = d.repetitionContextSize, presenceContextSize = d.presenceContextSize, frequencyContextSize = d.frequencyContextSize, logitBias = d.logitBias } = options;
  if (!Number.isSafeInteger(topK) || topK < 0) fail("topK", "an integer >= 0 (0: off)", topK);
  if (typeof minP !== "number" || !(minP >= 0 && minP <= 1)) fail("minP", "a number in [0, 1]", minP);
  if (!Number.isSafeInteger(minTokensToKeep) || minTokensToKeep < 1) fail("minTokensToKeep", "an integer >= 1", minTokensToKeep);
  if (typeof repetitionPenalty !== "number" || !Number.isFinite(repetitionPenalty) || repetitionPenalty < 0) fail("repetitionPenalty", "a finite number >= 0", repetitionPenalty);
  for (const [name, value] of [["presencePenalty", presencePenalty], ["frequencyPenalty", frequencyPenalty]] as const) {
    if (typeof value !== "number" || !Number.isFinite(value)) fail(name, "a finite number", value);
  }
  for (const [name, value] of [["repetitionContextSize", repetitionContextSize], ["presenceContextSize", presenceContextSize], ["frequencyContextSize", frequencyContextSize]] as const) {
    if (!Number.isSafeInteger(value) || value < 1) fail(name, "an integer >= 1", value);
  }
  if (logitBias === null || typeof logitBias !== "object" || Array.isArray(logitBias)) fail("logitBias", "an object of token id -> finite bias", logitBias);
  for (const [id, bias] of Object.entries(logitBias)) {
    if (!/^\d+$/.test(id) || typeof bias !== "number" || !Number.isFinite(bias)) fail("logitBias", "an object of token id -> finite bias", `${id}: ${bias}`);
  }
  const { logprobs, maxKvSize } = options;
  if (maxKvSize !== undefined && (!Number.isSafeInteger(maxKvSize) || maxKvSize <= 4)) fail("maxKvSize", "an integer > 4", maxKvSize);
  if (logprobs !== undefined && (!Number.isSafeInteger(logprobs) || logprobs < 0 || logprobs > 20)) fail("logprobs", "an integer in [0, 20]", logprobs);
  const sampling: SamplingOptions = {
    temperature, topP, topK, minP, minTokensToKeep, repetitionPenalty, repetitionContextSize, presencePenalty, presenceContextSize, frequencyPenalty, frequencyContextSize, logitBias,
  };
  return { maxTokens, temperature, topP, seed, stopTokens, stopStrings, sampling, logprobs, maxKvSize };
}

/** Prompt ids: integers in [0, vocabulary) (an out-of-range id would read past the embedding table). */
export function checkedPromptIds(ids: readonly number[], vocabulary: number): readonly number[] {
  if (!Array.isArray(ids)) throw new Error("generate: the prompt must be a string or an array of token ids");
  if (ids.length === 0) throw new Error("generate: the prompt encodes to no tokens");
  checkTokenIds(ids, vocabulary, "generate: prompt token");
  return ids;
}

export interface TokenLogprob {
  token: number;
  logprob: number;
}

export interface GenerationChunk {
  token: number;
  /** With `logprobs`: the token's log-probability and the most probable alternatives. */
  logprob?: number;
  topLogprobs?: TokenLogprob[];
  /** New text since the previous chunk (empty while a multi-byte character is incomplete). */
  text: string;
  /** Set on the closing chunk of a stop token: `token` is the stop token (not generated text) and
   * `text` is whatever was held back. */
  stop?: true;
}

export interface GenerationStats {
  promptTokens: number;
  /** Prompt tokens a promptCache already held (not prefilled again). */
  cachedTokens: number;
  generatedTokens: number;
  prefillSeconds: number;
  decodeSeconds: number;
  finishReason: "stop" | "length";
}

/** Text of a growing token list, decoding a short window per token (vLLM's incremental
 * detokenization): the text of the tokens since `prefix` past that of [prefix, read), released once
 * it does not end in an incomplete character. */
export class TextStream {
  readonly #tokenizer: Tokenizer;
  readonly #tokens: number[] = [];
  #prefix = 0;
  #read = 0;
  /** The text released so far (by append). */
  #text = "";

  constructor(tokenizer: Tokenizer) {
    this.#tokenizer = tokenizer;
  }

  #pending(): { before: string; after: string } {
    return {
      before: this.#tokenizer.decode(this.#tokens.slice(this.#prefix, this.#read)),
      after: this.#tokenizer.decode(this.#tokens.slice(this.#prefix)),
    };
  }

  /** Adds a token; returns the text it completes ("" while a character is incomplete). */
  push(token: number): string {
    this.#tokens.push(token);
    const { before, after } = this.#pending();
    if (after.length <= before.length || after.endsWith("\uFFFD")) return "";
    this.#prefix = this.#read;
    this.#read = this.#tokens.length;
    return after.slice(before.length);
  }

  /** The text held back, released as it is. */
  flush(): string {
    const { before, after } = this.#pending();
    this.#prefix = this.#read = this.#tokens.length;
    return after.slice(before.length);
  }

  /** Adds a generated token (`last`: flush what is held back too): the new text, cut before the first
   * stop string that now appears in the whole text, and whether one did. */
  append(token: number, last: boolean, stopStrings: readonly string[]): { text: string; stopped: boolean } {
    const from = this.#text.length;
    this.#text += this.push(token) + (last ? this.flush() : "");
    const hit = stopStrings.map((s) => this.#text.indexOf(s, Math.max(0, from - s.length + 1))).filter((at) => at >= 0);
    const end = hit.length > 0 ? Math.max(from, Math.min(...hit)) : this.#text.length;
    return { text: this.#text.slice(from, end), stopped: hit.length > 0 };
  }
}

let replayWarned = false;
function warnReplayFallback(reason: string): void {
  if (replayWarned) return;
  replayWarned = true;
  console.warn(`mlx-bun: decode steps run without replay (${reason})`);
}

/** mulberry32: small, seedable, good enough for sampling. */
export function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Non-finite logits (NaN or infinity, or their largest value when picked on the device) stop generation. */
export function checkFinite(values: ArrayLike<number>): void {
  for (let i = 0; i < values.length; i++) {
    if (!Number.isFinite(values[i]!)) throw new Error("generate: the model's logits are not finite (NaN or infinity); generation stopped");
  }
}

/** Picks the next token from last-position logits: greedy at temperature 0, else a draw from
 * softmax(top-p-filtered log-probabilities / temperature), as mlx-lm's sampler. */
export function sample(logits: Float32Array, temperature: number, topP: number, next: () => number): number {
  checkFinite(logits);
  const logprobs = logSoftmax(logits);
  if (temperature <= 0) return argmaxOf(logprobs);
  return draw(samplingDistribution(logprobs, { ...DEFAULT_SAMPLING, temperature, topP }), next);
}

/** Streams generated tokens with their text. `stats` is filled in as generation proceeds. */
export async function* generate(
  model: Model,
  tokenizer: Tokenizer,
  prompt: string | number[],
  options: GenerateOptions = {},
  stats?: Partial<GenerationStats>,
): AsyncGenerator<GenerationChunk> {
  const { maxTokens, temperature, seed, stopTokens, stopStrings, sampling, logprobs, maxKvSize } = checkedOptions(options);
  const promptIds = checkedPromptIds(typeof prompt === "string" ? tokenizer.encode(prompt) : prompt, model.config.vocabSize);
  const context = model.config.maxPositions;
  if (context !== undefined && promptIds.length + maxTokens > context && !options.exceedContext) {
    throw new Error(
      `generate: prompt (${promptIds.length} tokens) + maxTokens (${maxTokens}) exceeds the model's context of ${context} positions ` +
        "(max_position_embeddings); lower maxTokens, or pass exceedContext: true to go past it",
    );
  }
  const eos = options.ignoreEos ? [] : [...model.config.eosTokenIds, ...tokenizer.eosTokenIds];
  const stop = new Set([...eos, ...stopTokens]);
  const next = random(seed);
  const only = options.rewrite === false ? null : Array.isArray(options.rewrite) ? options.rewrite : undefined;
  const graph = only === null ? undefined : rewrittenGraph(model, "last", only);
  const { promptCache } = options;
  if (promptCache !== undefined && (!(promptCache instanceof PromptCache) || promptCache.model !== model)) fail("promptCache", "a PromptCache made for this model", promptCache);
  const reused = promptCache?.reusable(promptIds) ?? 0;
  if (promptCache && (maxKvSize !== undefined || (model.config.slidingWindow ?? Infinity) < promptIds.length + maxTokens)) {
    throw new Error("generate: a promptCache holds every position; it does not combine with maxKvSize or a generation past the model's sliding window");
  }
  if (promptCache && promptIds.length + maxTokens > promptCache.maxLength) {
    throw new Error(`generate: prompt (${promptIds.length} tokens) + maxTokens (${maxTokens}) exceeds the prompt cache's ${promptCache.maxLength} positions`);
  }
  promptCache?.rewind(reused);
  if (promptCache && options.kvBits !== undefined) throw new Error("generate: kvBits does not combine with promptCache");
  const cache = promptCache?.cache ?? generationCache(model, 1, promptIds.length, promptIds.length + maxTokens, { maxKvSize, kvBits: options.kvBits, kvGroupSize: options.kvGroupSize });
  // Greedy decoding on MLX picks each token on the device and queues the next step before reading it
  // (as mlx-lm does): building step t+1's graph on the host overlaps the device computing step t.
  // Otherwise each step's logits are evaluated, read and sampled on the host.
  // Processors and log-probabilities need the logits on the host; plain greedy does not.
  const onDevice = temperature <= 0 && model.backend === "mlx" && !processes(sampling) && logprobs === undefined;
  // Decode steps on MLX are recorded once in the shim and replayed (models/replay.ts).
  const tape =
    model.backend === "mlx" && cache instanceof KVCache && options.replay !== false
      ? new DecodeTape(model, cache, graph ?? model.graph("last"), { output: onDevice ? "argmax" : "logits", onFallback: warnReplayFallback })
      : null;
  let prefilled = false;
  /** A launched step: its logits (host sampling), or on the device its next ids and the largest logit
   * (NaN or infinite when the logits are not finite). */
  interface Launched {
    out: TensorData;
    peak: Tensor | null;
  }
  const launch = (ids: TensorData): Launched => {
    if (model.backend !== "mlx") return { out: forward(model, ids, { cache, graph }), peak: null };
    let outs: Tensor[];
    if (tape && prefilled && ids instanceof Tensor) {
      outs = tape.step(ids);
    } else {
      const logits = forward(model, ids, { cache, graph, lazy: true });
      if (onDevice) {
        using last = logits;
        outs = [argmax(last, -1), max(last, [-1])]; // [1, 1]: the next step's ids, and the peak
      } else {
        outs = [logits];
      }
    }
    prefilled = true;
    if (onDevice) asyncEval(outs);
    else evalAll(outs);
    return { out: outs[0]!, peak: outs[1] ?? null };
  };
  /** The token a step picked, with its log-probabilities when asked for. */
  const read = ({ out, peak }: Launched): { token: number; logprob?: number; topLogprobs?: TokenLogprob[] } => {
    if (onDevice) {
      if (peak) checkFinite(peak.toFloat32Array());
      return { token: out.toInt32Array()[0]! };
    }
    const logits = out.toFloat32Array();
    checkFinite(logits);
    if (Object.keys(sampling.logitBias).some((id) => Number(id) >= logits.length)) throw new Error(`generate: logitBias names a token id past the vocabulary (${logits.length})`);
    const lp = logSoftmax(processLogits(logits, [...promptIds, ...generated], sampling));
    const token = temperature <= 0 ? argmaxOf(lp) : draw(samplingDistribution(lp, sampling), next);
    if (logprobs === undefined) return { token };
    return { token, logprob: lp[token]!, topLogprobs: mostProbable(lp, logprobs) };
  };
  const release = (l: Launched | undefined) => {
    l?.out.dispose();
    l?.peak?.dispose();
  };
  const generated: number[] = [];
  const stream = new TextStream(tokenizer);
  Object.assign(stats ?? {}, { promptTokens: promptIds.length, cachedTokens: reused, generatedTokens: 0, finishReason: "length" });
  /** Every token in the order the cache takes them (the prompt, then each one picked). */
  const history = [...promptIds];
  let pending: Launched | undefined;
  let upcoming: Launched | undefined;
  try {
    const start = performance.now();
    let decodeStart = start;
    // A quantized cache: mlx-lm prefills the prompt but its last token at full precision, then
    // quantizes the cache and runs the last token over it.
    const split = options.kvBits !== undefined && promptIds.length - reused > 1 ? promptIds.length - 1 : reused;
    if (split > reused) {
      using head = tokenIds(model, promptIds.slice(reused, split), [1, split - reused]);
      forward(model, head, { cache, graph }).dispose();
    }
    {
      using ids = tokenIds(model, promptIds.slice(split), [1, promptIds.length - split]);
      pending = launch(ids);
    }
    for (let i = 0; i < maxTokens; i++) {
      const more = i < maxTokens - 1;
      const current: Launched = pending!;
      if (onDevice && more) upcoming = launch(current.out);
      pending = undefined;
      let picked: ReturnType<typeof read>;
      try {
        picked = read(current);
      } finally {
        release(current);
      }
      const { token } = picked;
      history.push(token);
      const scores = picked.logprob === undefined ? {} : { logprob: picked.logprob, topLogprobs: picked.topLogprobs! };
      if (i === 0) {
        decodeStart = performance.now();
        if (stats) stats.prefillSeconds = (decodeStart - start) / 1000;
      } else if (stats) {
        stats.decodeSeconds = (performance.now() - decodeStart) / 1000;
      }
      if (stop.has(token)) {
        if (stats) stats.finishReason = "stop";
        const rest = stream.flush();
        if (rest) yield { token, text: rest, stop: true };
        return;
      }
      generated.push(token);
      if (stats) stats.generatedTokens = generated.length;
      // An incomplete multi-byte character is held back while a later token may complete it.
      const piece = stream.append(token, !more, stopStrings);
      yield { token, text: piece.text, ...scores };
      if (piece.stopped) {
        if (stats) stats.finishReason = "stop";
        return;
      }
      if (!more) return;
      if (!onDevice) {
        using ids = tokenIds(model, [token], [1, 1]);
        upcoming = launch(ids);
      }
      pending = upcoming;
      upcoming = undefined;
    }
  } finally {
    // Still set when the consumer stopped early or a stop ended generation with a step queued.
    release(pending);
    release(upcoming);
    tape?.dispose();
    if (promptCache) promptCache.record(history);
    else cache.dispose();
  }
}

/** Generates to completion; returns the text and stats. */
export async function generateText(model: Model, tokenizer: Tokenizer, prompt: string | number[], options: GenerateOptions = {}) {
  const stats: Partial<GenerationStats> = {};
  let text = "";
  const tokens: number[] = [];
  for await (const chunk of generate(model, tokenizer, prompt, options, stats)) {
    text += chunk.text;
    if (!chunk.stop) tokens.push(chunk.token);
  }
  return { text, tokens, stats: stats as GenerationStats };
}
