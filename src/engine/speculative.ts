// Speculative decoding (greedy): a small draft model sharing the target's tokenizer proposes
// `numDraftTokens` tokens one at a time, the target checks them all in one forward, and the longest
// prefix the target agrees with is kept, plus the target's own next token. The output is the
// target's greedy decoding; the target runs once per round instead of once per token. Both KV caches
// are rolled back (seek) past rejected tokens.
import { checkFinite } from "./host-sampler.ts";
import { TextStream } from "./text.ts";
import {
  checkedOptions,
  checkedPromptIds,
  type GenerateOptions,
  type GenerationChunk,
  type GenerationStats,
} from "./generate.ts";
import { createCache, forward, type Model, rewrittenGraph, tokenIds } from "../models/index.ts";
import type { HostKVCache, KVCache } from "../kv-cache.ts";
import { argmaxOf } from "./sampling.ts";
import type { Tokenizer } from "../tokenizer/tokenizer.ts";

export interface SpeculativeOptions extends GenerateOptions {
  /** Tokens the draft proposes per round (default 4). */
  numDraftTokens?: number | undefined;
}

export interface SpeculativeStats extends GenerationStats {
  /** Draft tokens proposed, and how many the target accepted. */
  draftTokens: number;
  acceptedTokens: number;
  /** Target forwards after the prefill (one per round). */
  rounds: number;
}

/** Streams the target's greedy generation, sped up by the draft's proposals. Options are generate's
 * (greedy only: temperature 0, no sampling processors, no logprobs) plus numDraftTokens. */
export async function* speculativeGenerate(
  target: Model,
  draft: Model,
  tokenizer: Tokenizer,
  prompt: string | number[],
  options: SpeculativeOptions = {},
  stats?: Partial<SpeculativeStats>,
): AsyncGenerator<GenerationChunk> {
  const { numDraftTokens = 4, ...rest } = options;
  if (!Number.isSafeInteger(numDraftTokens) || numDraftTokens < 1 || numDraftTokens > 64)
    throw new Error(`speculativeGenerate: numDraftTokens must be an integer in [1, 64], got ${numDraftTokens}`);
  const { maxTokens, temperature, stopTokens, stopStrings, sampling, logprobs, grammar } = checkedOptions(rest);
  if (grammar) throw new Error("speculativeGenerate: responseFormat is not supported (use generate)");
  if (temperature > 0 || logprobs !== undefined || rest.promptCache !== undefined)
    throw new Error("speculativeGenerate: greedy decoding only (temperature 0, no logprobs, no promptCache)");
  if (
    sampling.repetitionPenalty ||
    sampling.presencePenalty ||
    sampling.frequencyPenalty ||
    Object.keys(sampling.logitBias).length > 0
  ) {
    throw new Error("speculativeGenerate: logits processors (penalties, logitBias) are not supported");
  }
  if (target.kind !== "decoder" || draft.kind !== "decoder")
    throw new Error("speculativeGenerate: target and draft must be decoders");
  if (draft.config.vocabSize !== target.config.vocabSize)
    throw new Error(
      `speculativeGenerate: the draft's vocabulary (${draft.config.vocabSize}) differs from the target's (${target.config.vocabSize}); they must share the tokenizer`,
    );
  if (draft.backend !== target.backend)
    throw new Error(`speculativeGenerate: the draft runs on ${draft.backend}, the target on ${target.backend}`);
  const promptIds = [
    ...checkedPromptIds(typeof prompt === "string" ? tokenizer.encode(prompt) : prompt, target.config.vocabSize),
  ];
  const context = target.config.maxPositions;
  const length = promptIds.length + maxTokens + numDraftTokens + 1;
  if ([target, draft].some((m) => (m.config.slidingWindow ?? Infinity) < length)) {
    throw new Error(
      "speculativeGenerate: generations past a model's sliding window are not supported (rejected tokens cannot be rolled back out of a rotating cache)",
    );
  }
  if (context !== undefined && promptIds.length + maxTokens > context && !rest.exceedContext) {
    throw new Error(
      `speculativeGenerate: prompt (${promptIds.length} tokens) + maxTokens (${maxTokens}) exceeds the target's context of ${context} positions`,
    );
  }
  const stop = new Set([
    ...(rest.ignoreEos ? [] : [...target.config.eosTokenIds, ...tokenizer.eosTokenIds]),
    ...stopTokens,
  ]);
  const only = rest.rewrite === false ? null : Array.isArray(rest.rewrite) ? rest.rewrite : undefined;
  const graphs = (m: Model, logits: "last" | "all") =>
    only === null ? m.graph(logits) : rewrittenGraph(m, logits, only);
  const targetCache = createCache(target, 1, length);
  const draftCache = createCache(draft, 1, length);
  /** Runs `ids` through a model and cache; the greedy next id after each of them ("all") or the last. */
  const step = (model: Model, cache: KVCache | HostKVCache, ids: number[], logits: "last" | "all"): number[] => {
    const input = tokenIds(model, ids, [1, ids.length]);
    const out = forward(model, input, { cache, graph: graphs(model, logits), logits });
    const values = out.toFloat32Array();
    out.dispose();
    input.dispose();
    checkFinite(values);
    const vocabulary = values.length / (logits === "all" ? ids.length : 1);
    return Array.from({ length: values.length / vocabulary }, (_, r) =>
      argmaxOf(values.subarray(r * vocabulary, (r + 1) * vocabulary)),
    );
  };
  Object.assign(stats ?? {}, {
    promptTokens: promptIds.length,
    cachedTokens: 0,
    generatedTokens: 0,
    finishReason: "length",
    draftTokens: 0,
    acceptedTokens: 0,
    rounds: 0,
  });
  const history = [...promptIds];
  const stream = new TextStream(tokenizer);
  let generated = 0;
  /** Emits one token; false when generation is over. */
  const emit = function* (token: number): Generator<GenerationChunk, boolean> {
    if (stop.has(token)) {
      if (stats) stats.finishReason = "stop";
      const held = stream.flush();
      if (held) yield { token, text: held, stop: true };
      return false;
    }
    generated++;
    if (stats) stats.generatedTokens = generated;
    const last = generated === maxTokens;
    const piece = stream.append(token, last, stopStrings);
    yield { token, text: piece.text };
    if (piece.stopped && stats) stats.finishReason = "stop";
    return !piece.stopped && !last;
  };
  try {
    const start = performance.now();
    // Prefill: the target gives the first token; the draft takes the prompt but its last token,
    // which each round feeds it together with whatever it has not seen.
    const [first] = step(target, targetCache, promptIds, "last");
    if (promptIds.length > 1) step(draft, draftCache, promptIds.slice(0, -1), "last");
    const decodeStart = performance.now();
    if (stats) stats.prefillSeconds = (decodeStart - start) / 1000;
    history.push(first!);
    if (!(yield* emit(first!))) return;
    for (;;) {
      // The target holds history[:-1]; the draft holds history[:draftCache.offset].
      const proposals: number[] = [];
      let feed = history.slice(draftCache.offset);
      const room = Math.min(numDraftTokens, maxTokens - generated);
      while (proposals.length < room) {
        const [next] = step(draft, draftCache, feed, "last");
        proposals.push(next!);
        feed = [next!];
      }
      const before = targetCache.offset;
      const checked = step(target, targetCache, [history.at(-1)!, ...proposals], "all");
      let accepted = 0;
      while (accepted < proposals.length && proposals[accepted] === checked[accepted]) accepted++;
      // Keep the last token and the accepted proposals in the target's cache; the draft keeps what
      // it saw of them.
      targetCache.seek(before + 1 + accepted);
      draftCache.seek(Math.min(draftCache.offset, history.length + accepted));
      if (stats) {
        stats.rounds! += 1;
        stats.draftTokens! += proposals.length;
        stats.acceptedTokens! += accepted;
      }
      for (const token of [...proposals.slice(0, accepted), checked[accepted]!]) {
        history.push(token);
        const more = yield* emit(token);
        if (stats) stats.decodeSeconds = (performance.now() - decodeStart) / 1000;
        if (!more) return;
      }
    }
  } finally {
    targetCache.dispose();
    draftCache.dispose();
  }
}
