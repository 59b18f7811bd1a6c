// The KV caches of recent requests, kept so that a prompt continuing one is prefilled only past the
// shared prefix.
import type { Model } from "../models/index.ts";
import { PromptCache } from "../engine/prompt-cache.ts";

/** Prompt tokens a kept cache must spare a request for it to be reused. A request continuing a
 * cache is admitted on its own (its cache holds its prefix), where the others are prefilled together
 * in one forward: for a short prefix (a system prompt, a request repeated) recomputing it in the
 * group costs less than a separate admission. Measured (this project's 2-core CPU, `bench serve`,
 * 8 clients sending the prompts of a first round again): reusing ~8-token prefixes made every
 * request's first token wait for the others' admissions (172 ms against 93 without). */
export const MIN_REUSED_TOKENS = 64;

/** The KV caches of recent requests, at most `size` kept while unused: a request takes the one that
 * shares the longest token prefix with its prompt (at least MIN_REUSED_TOKENS) and fits it (the
 * engine then prefills only the rest), or a new one sized to the request (at most `length`
 * positions); it comes back when the generation ends. */
export class PromptCachePool {
  readonly #free: PromptCache[] = [];

  constructor(
    readonly model: Model,
    readonly size: number,
    readonly length: number,
  ) {}

  take(ids: readonly number[], maxTokens: number): PromptCache | undefined {
    const needed = ids.length + maxTokens;
    if (this.size === 0 || needed > this.length) return undefined;
    let best = -1;
    let shared = MIN_REUSED_TOKENS - 1;
    this.#free.forEach((cache, i) => {
      const n = cache.maxLength >= needed ? cache.reusable(ids) : 0;
      if (n > shared) [best, shared] = [i, n];
    });
    if (best >= 0) return this.#free.splice(best, 1)[0];
    // Room for a few more turns of the conversation, within the context.
    return new PromptCache(this.model, Math.min(this.length, Math.max(2 * needed, 1024)));
  }

  give(cache: PromptCache): void {
    this.#free.push(cache);
    while (this.#free.length > this.size) this.#free.shift()!.dispose();
  }

  dispose(): void {
    for (const cache of this.#free.splice(0)) cache.dispose();
  }
}
