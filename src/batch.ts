// Batch generation: several prompts of different lengths at once, left-padded into one batch whose
// KV cache masks the padding; every step decodes one token for each unfinished row. Each row has its
// own sampler state (seeded as a single generate with the same seed), stops, text stream and
// finish reason, and gives the tokens it would alone (up to the float rounding of a batched matmul).
import { checkedOptions, checkedPromptIds, checkFinite, type GenerateOptions, type GenerationChunk, random, TextStream, type TokenLogprob } from "./generate.ts";
import { forward, generationCache, type Model, rewrittenGraph, tokenIds } from "./models/index.ts";
import { KVCache } from "./kv-cache.ts";
import { DecodeTape } from "./models/replay.ts";
import { argmaxOf, draw, logSoftmax, mostProbable, processLogits, samplingDistribution } from "./sampling.ts";
import { Tensor } from "./tensor.ts";
import type { TensorData } from "./dtype.ts";
import type { Tokenizer } from "./tokenizer.ts";

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

interface Row {
  prompt: readonly number[];
  generated: number[];
  stream: TextStream;
  next: () => number;
  finish: "stop" | "length" | null;
}

/** Streams the generations of `prompts` (strings or token ids), interleaved by step. The options are
 * generate's (promptCache excepted); maxTokens and stops apply to each row. */
export async function* generateBatch(
  model: Model,
  tokenizer: Tokenizer,
  prompts: readonly (string | number[])[],
  options: GenerateOptions = {},
  stats?: Partial<BatchStats>,
): AsyncGenerator<BatchChunk> {
  if (options.promptCache !== undefined) throw new Error("generateBatch: promptCache is for single generations");
  const { maxTokens, temperature, seed, stopTokens, stopStrings, sampling, logprobs } = checkedOptions(options);
  if (!Array.isArray(prompts) || prompts.length === 0) throw new Error("generateBatch: prompts must be a non-empty list of strings or token id lists");
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
    throw new Error(`generateBatch: the longest prompt (${longest} tokens) + maxTokens (${maxTokens}) exceeds the model's context of ${context} positions; lower maxTokens, or pass exceedContext: true`);
  }
  const batch = ids.length;
  const stop = new Set([...(options.ignoreEos ? [] : [...model.config.eosTokenIds, ...tokenizer.eosTokenIds]), ...stopTokens]);
  const pad = tokenizer.padTokenId ?? model.config.eosTokenIds[0] ?? 0;
  const only = options.rewrite === false ? null : Array.isArray(options.rewrite) ? options.rewrite : undefined;
  const graph = only === null ? model.graph("last") : rewrittenGraph(model, "last", only);
  const cache = generationCache(model, batch, longest, longest + maxTokens, options);
  const padding = ids.map((p) => longest - p.length);
  cache.setLeftPadding(padding);
  const tape = model.backend === "mlx" && cache instanceof KVCache && options.replay !== false ? new DecodeTape(model, cache, graph, { output: "logits" }) : null;
  const rows: Row[] = ids.map((prompt) => ({ prompt, generated: [], stream: new TextStream(tokenizer), next: random(seed), finish: null }));
  Object.assign(stats ?? {}, { promptTokens: ids.map((p) => p.length), generatedTokens: rows.map(() => 0), finishReasons: rows.map(() => "length" as const) });
  const step = (feed: number[], length: number): TensorData => {
    using input = tokenIds(model, feed, [batch, length]);
    if (tape && length === 1 && input instanceof Tensor) {
      const [logits] = tape.step(input) as [Tensor];
      return logits.eval();
    }
    return forward(model, input, { cache, graph });
  };
  let logits: TensorData | null = null;
  try {
    const start = performance.now();
    logits = step(ids.flatMap((p, i) => [...new Array<number>(padding[i]!).fill(pad), ...p]), longest);
    let decodeStart = start;
    for (let i = 0; i < maxTokens; i++) {
      const host = logits.toFloat32Array();
      logits.dispose();
      logits = null;
      if (i === 0) {
        decodeStart = performance.now();
        if (stats) stats.prefillSeconds = (decodeStart - start) / 1000;
      } else if (stats) {
        stats.decodeSeconds = (performance.now() - decodeStart) / 1000;
      }
      const vocabulary = host.length / batch;
      const feed: number[] = new Array(batch).fill(pad);
      for (const [index, row] of rows.entries()) {
        if (row.finish) continue;
        const values = host.subarray(index * vocabulary, (index + 1) * vocabulary);
        checkFinite(values);
        const lp = logSoftmax(processLogits(values, [...row.prompt, ...row.generated], sampling));
        const token = temperature <= 0 ? argmaxOf(lp) : draw(samplingDistribution(lp, sampling), row.next);
        feed[index] = token;
        const scores: { logprob?: number; topLogprobs?: TokenLogprob[] } =
          logprobs === undefined ? {} : { logprob: lp[token]!, topLogprobs: mostProbable(lp, logprobs) };
        if (stop.has(token)) {
          row.finish = "stop";
          yield { index, token, text: row.stream.flush(), stop: true, finishReason: "stop" };
          continue;
        }
        row.generated.push(token);
        const last = row.generated.length === maxTokens;
        const piece = row.stream.append(token, last, stopStrings);
        if (piece.stopped) row.finish = "stop";
        else if (last) row.finish = "length";
        yield { index, token, text: piece.text, ...scores, ...(row.finish ? { finishReason: row.finish } : {}) };
      }
      if (stats) {
        stats.generatedTokens = rows.map((r) => r.generated.length);
        stats.finishReasons = rows.map((r) => r.finish ?? "length");
      }
      if (rows.every((r) => r.finish)) return;
      logits = step(feed, 1);
    }
  } finally {
    logits?.dispose();
    tape?.dispose();
    cache.dispose();
  }
}

/** Generates every prompt to completion: each row's text and tokens, in the prompts' order. */
export async function generateBatchText(model: Model, tokenizer: Tokenizer, prompts: readonly (string | number[])[], options: GenerateOptions = {}) {
  const stats: Partial<BatchStats> = {};
  const texts = prompts.map(() => "");
  const tokens: number[][] = prompts.map(() => []);
  for await (const chunk of generateBatch(model, tokenizer, prompts, options, stats)) {
    texts[chunk.index] += chunk.text;
    if (!chunk.stop) tokens[chunk.index]!.push(chunk.token);
  }
  return { texts, tokens, stats: stats as BatchStats };
}
