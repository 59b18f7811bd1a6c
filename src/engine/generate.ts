// Text generation: options checked here, then one sequence on the decode engine (src/engine/):
// prefill, decode steps, sampling on the device, stops, streaming as an async iterator.
import { Engine, type GenerationChunk, type GenerationStats, type Sequence, type SequenceRequest } from "./engine.ts";
import { engineFor } from "./shared.ts";
import type { Graph } from "../graph/graph.ts";
import { Constraint, grammarOf, type ResponseFormat } from "../grammar/constraint.ts";
import { generationCache, type Model, rewrittenGraph } from "../models/index.ts";
import { checkTokenIds } from "../models/inputs.ts";
import { DEFAULT_SAMPLING, type SamplingOptions } from "./sampling.ts";
import { PromptCache } from "./prompt-cache.ts";
import type { Tokenizer } from "../tokenizer/tokenizer.ts";

export type { GenerationChunk, GenerationStats } from "./engine.ts";
export type { TokenLogprob } from "./host-sampler.ts";
export type { ResponseFormat } from "../grammar/constraint.ts";

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
  /** Constrain the output: `{ type: "json_schema", schema }` (JSON valid under the schema),
   * `{ type: "json_object" }` (any JSON object), `{ type: "grammar", grammar }` (GBNF, start rule
   * `root`) or `{ type: "text" }` (default). Each step's tokens are masked to those the grammar takes;
   * generation ends when the output is complete (stats.formatComplete says whether it got there). */
  responseFormat?: ResponseFormat | undefined;
}

const OPTION_NAMES = [
  "maxTokens",
  "temperature",
  "topP",
  "seed",
  "stopTokens",
  "stopStrings",
  "ignoreEos",
  "rewrite",
  "replay",
  "exceedContext",
  "topK",
  "minP",
  "minTokensToKeep",
  "repetitionPenalty",
  "repetitionContextSize",
  "presencePenalty",
  "presenceContextSize",
  "frequencyPenalty",
  "frequencyContextSize",
  "logitBias",
  "logprobs",
  "promptCache",
  "maxKvSize",
  "kvBits",
  "kvGroupSize",
  "responseFormat",
] as const;

/** float32's largest finite value. */
const FLOAT32_MAX = 3.4028234663852886e38;

function fail(option: string, range: string, value: unknown): never {
  throw new Error(
    `generate: ${option} must be ${range}, got ${typeof value === "string" ? JSON.stringify(value) : String(value)}`,
  );
}

/** The options with their defaults, each checked: an Error names the option and the accepted range. */
export function checkedOptions(options: GenerateOptions) {
  if (options === null || typeof options !== "object") fail("options", "an object", options);
  for (const key of Object.keys(options)) {
    if (!(OPTION_NAMES as readonly string[]).includes(key))
      throw new Error(`generate: unknown option '${key}' (valid: ${OPTION_NAMES.join(", ")})`);
  }
  const { maxTokens = 64, temperature = 0, topP = 1, seed = 0, stopTokens = [], stopStrings = [] } = options;
  if (!Number.isSafeInteger(maxTokens) || maxTokens < 1) fail("maxTokens", "a positive integer", maxTokens);
  if (typeof temperature !== "number" || !Number.isFinite(temperature) || temperature < 0)
    fail("temperature", "a finite number >= 0", temperature);
  if (typeof topP !== "number" || !(topP > 0 && topP <= 1)) fail("topP", "a number in (0, 1]", topP);
  if (!Number.isSafeInteger(seed)) fail("seed", "an integer", seed);
  if (!Array.isArray(stopTokens) || !stopTokens.every((t) => Number.isSafeInteger(t) && t >= 0))
    fail("stopTokens", "an array of token ids (integers >= 0)", stopTokens);
  if (!Array.isArray(stopStrings) || !stopStrings.every((s) => typeof s === "string" && s.length > 0))
    fail("stopStrings", "an array of non-empty strings", stopStrings);
  for (const flag of ["ignoreEos", "replay", "exceedContext"] as const) {
    if (options[flag] !== undefined && typeof options[flag] !== "boolean") fail(flag, "a boolean", options[flag]);
  }
  const { rewrite } = options;
  if (
    rewrite !== undefined &&
    typeof rewrite !== "boolean" &&
    !(Array.isArray(rewrite) && rewrite.every((r) => typeof r === "string"))
  ) {
    fail("rewrite", "a boolean or a list of rewriter names", rewrite);
  }
  const d = DEFAULT_SAMPLING;
  const {
    topK = d.topK,
    minP = d.minP,
    minTokensToKeep = d.minTokensToKeep,
    repetitionPenalty = d.repetitionPenalty,
    presencePenalty = d.presencePenalty,
    frequencyPenalty = d.frequencyPenalty,
  } = options;
  const {
    repetitionContextSize = d.repetitionContextSize,
    presenceContextSize = d.presenceContextSize,
    frequencyContextSize = d.frequencyContextSize,
    logitBias = d.logitBias,
  } = options;
  if (!Number.isSafeInteger(topK) || topK < 0) fail("topK", "an integer >= 0 (0: off)", topK);
  if (typeof minP !== "number" || !(minP >= 0 && minP <= 1)) fail("minP", "a number in [0, 1]", minP);
  if (!Number.isSafeInteger(minTokensToKeep) || minTokensToKeep < 1)
    fail("minTokensToKeep", "an integer >= 1", minTokensToKeep);
  if (typeof repetitionPenalty !== "number" || !Number.isFinite(repetitionPenalty) || repetitionPenalty < 0)
    fail("repetitionPenalty", "a finite number >= 0", repetitionPenalty);
  for (const [name, value] of [
    ["presencePenalty", presencePenalty],
    ["frequencyPenalty", frequencyPenalty],
  ] as const) {
    if (typeof value !== "number" || !Number.isFinite(value)) fail(name, "a finite number", value);
  }
  for (const [name, value] of [
    ["repetitionContextSize", repetitionContextSize],
    ["presenceContextSize", presenceContextSize],
    ["frequencyContextSize", frequencyContextSize],
  ] as const) {
    if (!Number.isSafeInteger(value) || value < 1) fail(name, "an integer >= 1", value);
  }
  const biasRange = "an object of token id -> bias (a number within float32's range, |bias| <= 3.4028235e38)";
  if (logitBias === null || typeof logitBias !== "object" || Array.isArray(logitBias))
    fail("logitBias", biasRange, logitBias);
  for (const [id, bias] of Object.entries(logitBias)) {
    // Beyond float32's range a bias becomes infinity on the device, and the row's logits stop being numbers.
    if (!/^\d+$/.test(id) || typeof bias !== "number" || !(Math.abs(bias) <= FLOAT32_MAX))
      fail("logitBias", biasRange, `${id}: ${bias}`);
  }
  const { logprobs, maxKvSize } = options;
  if (maxKvSize !== undefined && (!Number.isSafeInteger(maxKvSize) || maxKvSize <= 4))
    fail("maxKvSize", "an integer > 4", maxKvSize);
  if (logprobs !== undefined && (!Number.isSafeInteger(logprobs) || logprobs < 0 || logprobs > 20))
    fail("logprobs", "an integer in [0, 20]", logprobs);
  const sampling: SamplingOptions = {
    temperature,
    topP,
    topK,
    minP,
    minTokensToKeep,
    repetitionPenalty,
    repetitionContextSize,
    presencePenalty,
    presenceContextSize,
    frequencyPenalty,
    frequencyContextSize,
    logitBias,
  };
  const grammar = options.responseFormat === undefined ? null : grammarOf(options.responseFormat);
  return { maxTokens, temperature, topP, seed, stopTokens, stopStrings, sampling, logprobs, maxKvSize, grammar };
}

/** Prompt ids: integers in [0, vocabulary) (an out-of-range id would read past the embedding table). */
export function checkedPromptIds(ids: readonly number[], vocabulary: number): readonly number[] {
  if (!Array.isArray(ids)) throw new Error("generate: the prompt must be a string or an array of token ids");
  if (ids.length === 0) throw new Error("generate: the prompt encodes to no tokens");
  checkTokenIds(ids, vocabulary, "generate: prompt token");
  return ids;
}

/** The graph a generation runs: the model's plain one (rewrite: false), or rewritten with the given
 * rewriters (default: the default ones). */
export function graphFor(model: Model, rewrite: GenerateOptions["rewrite"]): Graph {
  const only = rewrite === false ? null : Array.isArray(rewrite) ? rewrite : undefined;
  return only === null ? model.graph("last") : rewrittenGraph(model, "last", only);
}

type Checked = ReturnType<typeof checkedOptions>;

/** The engine's request for one prompt under checked options. */
export function sequenceRequest(
  model: Model,
  tokenizer: Tokenizer,
  promptIds: readonly number[],
  checked: Checked,
  options: GenerateOptions,
): SequenceRequest {
  const { maxTokens, seed, stopTokens, stopStrings, sampling, logprobs, grammar } = checked;
  for (const id of Object.keys(sampling.logitBias)) {
    if (Number(id) >= model.config.vocabSize)
      fail("logitBias", `an object of token id (below the vocabulary, ${model.config.vocabSize}) -> finite bias`, id);
  }
  const eos = options.ignoreEos ? [] : [...model.config.eosTokenIds, ...tokenizer.eosTokenIds];
  const stop = new Set([...eos, ...stopTokens]);
  const constraint = grammar ? new Constraint(grammar, tokenizer, model.config.vocabSize, stop) : undefined;
  return {
    promptIds,
    maxTokens,
    settings: { ...sampling, seed, logprobs },
    stop,
    stopStrings,
    tokenizer,
    promptCache: options.promptCache,
    constraint,
  };
}

/** Whether a generation of `length` positions needs a cache of its own (rotating or quantized). */
export function needsOwnCache(model: Model, options: GenerateOptions, length: number): boolean {
  return (
    options.maxKvSize !== undefined || options.kvBits !== undefined || (model.config.slidingWindow ?? Infinity) < length
  );
}

let replayWarned = false;
function warnReplayFallback(reason: string): void {
  if (replayWarned) return;
  replayWarned = true;
  console.warn(`mlx-bun: decode steps run without replay (${reason})`);
}

/** The model's shared engine for a graph and replay setting (made on first use, disposed with the model). */
export function sharedEngine(model: Model, graph: Graph, replay: boolean): Engine {
  return engineFor(
    model,
    graph,
    replay,
    () => new Engine(model, { graph, replay, onReplayFallback: warnReplayFallback }),
  );
}

/** An engine of its own over a cache of its own (rotating, quantized), for one generation. */
export function soloEngine(
  model: Model,
  graph: Graph,
  options: GenerateOptions,
  batch: number,
  promptLength: number,
  length: number,
): Engine {
  const cache = generationCache(model, batch, promptLength, length, {
    maxKvSize: options.maxKvSize,
    kvBits: options.kvBits,
    kvGroupSize: options.kvGroupSize,
  });
  const engine = new Engine(model, {
    graph,
    replay: options.replay !== false,
    solo: cache,
    onReplayFallback: warnReplayFallback,
  });
  const dispose = engine.dispose.bind(engine);
  engine.dispose = () => {
    dispose();
    cache.dispose();
  };
  return engine;
}

/** Streams generated tokens with their text. `stats` is filled in as generation proceeds. */
export async function* generate(
  model: Model,
  tokenizer: Tokenizer,
  prompt: string | number[],
  options: GenerateOptions = {},
  stats?: Partial<GenerationStats>,
): AsyncGenerator<GenerationChunk> {
  const checked = checkedOptions(options);
  const { maxTokens, maxKvSize } = checked;
  if (model.kind !== "decoder") throw new Error(`generate: ${model.config.modelType} is an encoder; use embed`);
  const promptIds = checkedPromptIds(
    typeof prompt === "string" ? tokenizer.encode(prompt) : prompt,
    model.config.vocabSize,
  );
  const context = model.config.maxPositions;
  if (context !== undefined && promptIds.length + maxTokens > context && !options.exceedContext) {
    throw new Error(
      `generate: prompt (${promptIds.length} tokens) + maxTokens (${maxTokens}) exceeds the model's context of ${context} positions ` +
        "(max_position_embeddings); lower maxTokens, or pass exceedContext: true to go past it",
    );
  }
  const graph = graphFor(model, options.rewrite);
  const { promptCache } = options;
  if (promptCache !== undefined && (!(promptCache instanceof PromptCache) || promptCache.model !== model))
    fail("promptCache", "a PromptCache made for this model", promptCache);
  if (
    promptCache &&
    (maxKvSize !== undefined || (model.config.slidingWindow ?? Infinity) < promptIds.length + maxTokens)
  ) {
    throw new Error(
      "generate: a promptCache holds every position; it does not combine with maxKvSize or a generation past the model's sliding window",
    );
  }
  if (promptCache && promptIds.length + maxTokens > promptCache.maxLength) {
    throw new Error(
      `generate: prompt (${promptIds.length} tokens) + maxTokens (${maxTokens}) exceeds the prompt cache's ${promptCache.maxLength} positions`,
    );
  }
  if (promptCache && options.kvBits !== undefined)
    throw new Error("generate: kvBits does not combine with promptCache");
  const request = sequenceRequest(model, tokenizer, promptIds, checked, options);
  const reused = promptCache?.reusable(promptIds) ?? 0;
  const own = needsOwnCache(model, options, promptIds.length + maxTokens);
  const engine = own
    ? soloEngine(model, graph, options, 1, promptIds.length, promptIds.length + maxTokens)
    : sharedEngine(model, graph, options.replay !== false);
  promptCache?.rewind(reused);
  Object.assign(stats ?? {}, {
    promptTokens: promptIds.length,
    cachedTokens: reused,
    generatedTokens: 0,
    finishReason: "length",
  });
  try {
    yield* streamOf(engine.submit([request], [reused])[0]!, stats);
  } finally {
    if (own) engine.dispose();
  }
}

/** A sequence's chunks for generate (a stop token's closing chunk only when it releases text). */
async function* streamOf(sequence: Sequence, stats?: Partial<GenerationStats>): AsyncGenerator<GenerationChunk> {
  try {
    for await (const chunk of sequence.chunks()) {
      if (stats) Object.assign(stats, sequence.stats);
      if (chunk.stop && !chunk.text) continue;
      yield chunk;
    }
  } finally {
    if (stats) Object.assign(stats, sequence.stats);
  }
}

/** Generates on a given engine (a server's): options are generate's, checked here (an Error before
 * anything is queued); cancel() ends the generation and frees its slot. */
export function generateOn(
  engine: Engine,
  tokenizer: Tokenizer,
  promptIds: number[],
  options: GenerateOptions,
  stats?: Partial<GenerationStats>,
): { chunks: AsyncGenerator<GenerationChunk>; cancel(): void } {
  const model = engine.model;
  const checked = checkedOptions(options);
  const ids = checkedPromptIds(promptIds, model.config.vocabSize);
  const request = sequenceRequest(model, tokenizer, ids, checked, options);
  const reused = options.promptCache?.reusable(ids) ?? 0;
  options.promptCache?.rewind(reused);
  Object.assign(stats ?? {}, {
    promptTokens: ids.length,
    cachedTokens: reused,
    generatedTokens: 0,
    finishReason: "length",
  });
  const sequence = engine.submit([request], [reused])[0]!;
  return { chunks: streamOf(sequence, stats), cancel: () => sequence.cancel() };
}

/** Generates to completion; returns the text and stats. */
export async function generateText(
  model: Model,
  tokenizer: Tokenizer,
  prompt: string | number[],
  options: GenerateOptions = {},
) {
  const stats: Partial<GenerationStats> = {};
  let text = "";
  const tokens: number[] = [];
  for await (const chunk of generate(model, tokenizer, prompt, options, stats)) {
    text += chunk.text;
    if (!chunk.stop) tokens.push(chunk.token);
  }
  return { text, tokens, stats: stats as GenerationStats };
}
