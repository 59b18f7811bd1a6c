// Text generation: prefill, then one forward per decoded token; greedy, temperature and top-p
// sampling with a seed; stop tokens and strings; streaming as an async iterator.
import type { TensorData } from "./dtype.ts";
import { createCache, forward, type Model, rewrittenGraph, tokenIds } from "./models/index.ts";
import { KVCache } from "./kv-cache.ts";
import { DecodeTape } from "./models/replay.ts";
import { argmax, asyncEval, evalAll, max } from "./ops/core.ts";
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
}

const OPTION_NAMES = ["maxTokens", "temperature", "topP", "seed", "stopTokens", "stopStrings", "ignoreEos", "rewrite", "replay", "exceedContext"] as const;

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
  return { maxTokens, temperature, topP, seed, stopTokens, stopStrings };
}

/** Prompt ids: integers in [0, vocabulary) (an out-of-range id would read past the embedding table). */
function checkedPromptIds(ids: readonly number[], vocabulary: number): readonly number[] {
  if (!Array.isArray(ids)) throw new Error("generate: the prompt must be a string or an array of token ids");
  if (ids.length === 0) throw new Error("generate: the prompt encodes to no tokens");
  for (const [i, id] of ids.entries()) {
    if (!Number.isInteger(id) || id < 0 || id >= vocabulary) {
      throw new Error(`generate: prompt token ${i} is ${id}; token ids are integers in [0, ${vocabulary}) for this model`);
    }
  }
  return ids;
}

export interface GenerationChunk {
  token: number;
  /** New text since the previous chunk (empty while a multi-byte character is incomplete). */
  text: string;
  /** Set on the closing chunk of a stop token: `token` is the stop token (not generated text) and
   * `text` is whatever was held back. */
  stop?: true;
}

export interface GenerationStats {
  promptTokens: number;
  generatedTokens: number;
  prefillSeconds: number;
  decodeSeconds: number;
  finishReason: "stop" | "length";
}

/** Text of a growing token list, decoding a short window per token (vLLM's incremental
 * detokenization): the text of the tokens since `prefix` past that of [prefix, read), released once
 * it does not end in an incomplete character. */
class TextStream {
  readonly #tokenizer: Tokenizer;
  readonly #tokens: number[] = [];
  #prefix = 0;
  #read = 0;

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
}

let replayWarned = false;
function warnReplayFallback(reason: string): void {
  if (replayWarned) return;
  replayWarned = true;
  console.warn(`mlx-bun: decode steps run without replay (${reason})`);
}

/** mulberry32: small, seedable, good enough for sampling. */
function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Picks the next token from last-position logits. */
export function sample(logits: Float32Array, temperature: number, topP: number, next: () => number): number {
  for (const v of logits) if (!Number.isFinite(v)) throw new Error("generate: the model's logits are not finite (NaN or infinity); generation stopped");
  let best = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i]! > logits[best]!) best = i;
  if (temperature <= 0) return best;
  const probabilities = new Float64Array(logits.length);
  let total = 0;
  for (let i = 0; i < logits.length; i++) {
    probabilities[i] = Math.exp((logits[i]! - logits[best]!) / temperature);
    total += probabilities[i]!;
  }
  let order = Array.from(probabilities.keys());
  if (topP < 1) {
    order.sort((a, b) => probabilities[b]! - probabilities[a]!);
    let kept = 0;
    let mass = 0;
    while (kept < order.length && mass < topP * total) mass += probabilities[order[kept++]!]!;
    order = order.slice(0, kept);
    total = mass;
  }
  let r = next() * total;
  for (const i of order) {
    r -= probabilities[i]!;
    if (r <= 0) return i;
  }
  return order[order.length - 1]!;
}

/** Streams generated tokens with their text. `stats` is filled in as generation proceeds. */
export async function* generate(
  model: Model,
  tokenizer: Tokenizer,
  prompt: string | number[],
  options: GenerateOptions = {},
  stats?: Partial<GenerationStats>,
): AsyncGenerator<GenerationChunk> {
  const { maxTokens, temperature, topP, seed, stopTokens, stopStrings } = checkedOptions(options);
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
  const cache = createCache(model, 1, promptIds.length + maxTokens);
  // Greedy decoding on MLX picks each token on the device and queues the next step before reading it
  // (as mlx-lm does): building step t+1's graph on the host overlaps the device computing step t.
  // Otherwise each step's logits are evaluated, read and sampled on the host.
  const onDevice = temperature <= 0 && model.backend === "mlx";
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
  const read = ({ out, peak }: Launched) => {
    if (!onDevice) return sample(out.toFloat32Array(), temperature, topP, next);
    if (peak && !Number.isFinite(peak.toFloat32Array()[0])) throw new Error("generate: the model's logits are not finite (NaN or infinity); generation stopped");
    return out.toInt32Array()[0]!;
  };
  const release = (l: Launched | undefined) => {
    l?.out.dispose();
    l?.peak?.dispose();
  };
  const generated: number[] = [];
  const stream = new TextStream(tokenizer);
  /** The text released so far. */
  let text = "";
  Object.assign(stats ?? {}, { promptTokens: promptIds.length, generatedTokens: 0, finishReason: "length" });
  let pending: Launched | undefined;
  let upcoming: Launched | undefined;
  try {
    const start = performance.now();
    let decodeStart = start;
    {
      using ids = tokenIds(model, promptIds, [1, promptIds.length]);
      pending = launch(ids);
    }
    for (let i = 0; i < maxTokens; i++) {
      const more = i < maxTokens - 1;
      const current: Launched = pending!;
      if (onDevice && more) upcoming = launch(current.out);
      pending = undefined;
      let token: number;
      try {
        token = read(current);
      } finally {
        release(current);
      }
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
      const from = text.length;
      text += stream.push(token) + (more ? "" : stream.flush());
      const hit = stopStrings.map((s) => text.indexOf(s, Math.max(0, from - s.length + 1))).filter((at) => at >= 0);
      const end = hit.length > 0 ? Math.max(from, Math.min(...hit)) : text.length;
      yield { token, text: text.slice(from, end) };
      if (hit.length > 0) {
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
    cache.dispose();
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
