// Batch generation: several prompts at once on the model's decode engine (src/engine/), left-padded
// into one batch whose KV cache masks the padding. Each row has its own sampler state (seeded as a
// single generate with the same seed), stops, text stream and finish reason, and gives the tokens it
// would alone (up to the float rounding of a batched matmul).
import {
  checkedOptions,
  checkedPromptIds,
  type GenerateOptions,
  type GenerationChunk,
  graphFor,
  needsOwnCache,
  sequenceRequest,
  sharedEngine,
  soloEngine,
} from "./generate.ts";
import type { Model } from "../models/index.ts";
import type { Tokenizer } from "../tokenizer/tokenizer.ts";

/** A chunk of one row's output (`index`: the prompt's position in the list). */
export interface BatchChunk extends GenerationChunk {
  index: number;
  /** Set on a row's last chunk. */
  finishReason?: "stop" | "length";
}

export interface BatchStats {
  promptTokens: number[];
  generatedTokens: number[];
  finishReasons: ("stop" | "length")[];
  prefillSeconds: number;
  decodeSeconds: number;
}

/** Streams the generations of `prompts` (strings or token ids), interleaved as their tokens come.
 * The options are generate's (promptCache excepted); maxTokens and stops apply to each row. The
 * prompts go to the model's decode engine together (the engine admits up to its batch size at once
 * and the rest as rows finish). */
export async function* generateBatch(
  model: Model,
  tokenizer: Tokenizer,
  prompts: readonly (string | number[])[],
  options: GenerateOptions = {},
  stats?: Partial<BatchStats>,
): AsyncGenerator<BatchChunk> {
  if (options.promptCache !== undefined) throw new Error("generateBatch: promptCache is for single generations");
  const checked = checkedOptions(options);
  const { maxTokens } = checked;
  if (!Array.isArray(prompts) || prompts.length === 0)
    throw new Error("generateBatch: prompts must be a non-empty list of strings or token id lists");
  const ids = prompts.map((p, i) => {
    try {
      return checkedPromptIds(typeof p === "string" ? tokenizer.encode(p) : p, model.config.vocabSize);
    } catch (e) {
      throw new Error(`generateBatch: prompts[${i}]: ${(e as Error).message}`);
    }
  });
  const longest = Math.max(...ids.map((p) => p.length));
  const context = model.config.maxPositions;
  if (context !== undefined && longest + maxTokens > context && !options.exceedContext) {
    throw new Error(
      `generateBatch: the longest prompt (${longest} tokens) + maxTokens (${maxTokens}) exceeds the model's context of ${context} positions; lower maxTokens, or pass exceedContext: true`,
    );
  }
  const graph = graphFor(model, options.rewrite);
  const requests = ids.map((p) => sequenceRequest(model, tokenizer, p, checked, options));
  const own = needsOwnCache(model, options, longest + maxTokens);
  const engine = own
    ? soloEngine(model, graph, options, ids.length, longest, longest + maxTokens)
    : sharedEngine(model, graph, options.replay !== false);
  const sequences = engine.submit(requests);
  const streams = sequences.map((s) => s.chunks());
  const update = () => {
    if (!stats) return;
    Object.assign(stats, {
      promptTokens: sequences.map((s) => s.stats.promptTokens),
      generatedTokens: sequences.map((s) => s.stats.generatedTokens),
      finishReasons: sequences.map((s) => s.stats.finishReason),
      prefillSeconds: Math.max(...sequences.map((s) => s.stats.prefillSeconds)),
      decodeSeconds: Math.max(...sequences.map((s) => s.stats.decodeSeconds)),
    });
  };
  update();
  const next = (index: number) => streams[index]!.next().then((result) => ({ index, result }));
  const waiting = new Map(streams.map((_, i) => [i, next(i)]));
  try {
    while (waiting.size > 0) {
      const { index, result } = await Promise.race(waiting.values());
      if (result.done) {
        waiting.delete(index);
        continue;
      }
      // The row's last chunk: its sequence ended with nothing more queued (read before asking for more).
      const sequence = sequences[index]!;
      const last = sequence.state === "done" && sequence.queued === 0;
      waiting.set(index, next(index));
      update();
      yield { index, ...result.value, ...(last ? { finishReason: sequence.stats.finishReason } : {}) };
    }
  } finally {
    for (const s of sequences) s.cancel();
    await Promise.all(streams.map((s) => s.return(undefined)));
    update();
    if (own) engine.dispose();
  }
}

/** Generates every prompt to completion: each row's text and tokens, in the prompts' order. */
export async function generateBatchText(
  model: Model,
  tokenizer: Tokenizer,
  prompts: readonly (string | number[])[],
  options: GenerateOptions = {},
) {
  const stats: Partial<BatchStats> = {};
  const texts = prompts.map(() => "");
  const tokens: number[][] = prompts.map(() => []);
  for await (const chunk of generateBatch(model, tokenizer, prompts, options, stats)) {
    texts[chunk.index] += chunk.text;
    if (!chunk.stop) tokens[chunk.index]!.push(chunk.token);
  }
  return { texts, tokens, stats: stats as BatchStats };
}
