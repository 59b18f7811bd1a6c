// A prompt cache: one conversation's KV cache kept between generate calls, with the tokens whose keys
// and values it holds. generate({ promptCache }) prefills only what follows the longest common
// token prefix of the new prompt and those tokens, then leaves the cache holding everything it fed.
// Saved to / loaded from a safetensors file (the format is below).
import { saveSafetensors, loadSafetensors } from "./io/safetensors.ts";
import { type HostKVCache, KVCache } from "./kv-cache.ts";
import { createCache, type Model } from "./models/index.ts";
import { slice } from "./ops/core.ts";
import { Tensor } from "./tensor.ts";

/** File format: tensors `layers.{l}.keys` and `layers.{l}.values` [batch 1, kv heads, tokens, head
 * dim] in the cache's dtype, and metadata `format` = this string, `tokens` (JSON list of ids),
 * `model_type`, `layers`, `kv_heads`, `head_dim` (checked against the model on load). */
export const PROMPT_CACHE_FORMAT = "mlx-bun-prompt-cache-v1";

export class PromptCache {
  readonly model: Model;
  readonly cache: KVCache | HostKVCache;
  #tokens: number[] = [];

  /** An empty cache for up to `maxLength` positions (default: the model's context, else 4096). */
  constructor(model: Model, maxLength: number = model.config.maxPositions ?? 4096) {
    if (model.kind !== "decoder") throw new Error(`PromptCache: ${model.config.modelType} is an encoder`);
    this.model = model;
    this.cache = createCache(model, 1, maxLength);
  }

  /** The tokens whose keys and values the cache holds, in order. */
  get tokens(): readonly number[] {
    return this.#tokens;
  }

  get maxLength(): number {
    return this.cache.shape.maxLength;
  }

  /** How many leading tokens of `ids` the cache can reuse: the longest common prefix with what it
   * holds, less one when that is all of `ids` (the last prompt token must run to give logits). */
  reusable(ids: readonly number[]): number {
    let n = 0;
    const limit = Math.min(ids.length - 1, this.#tokens.length);
    while (n < limit && ids[n] === this.#tokens[n]) n++;
    return n;
  }

  /** Rewinds the cache to its first `keep` tokens (generate calls this before prefilling). */
  rewind(keep: number): void {
    this.cache.seek(keep);
    this.#tokens = this.#tokens.slice(0, keep);
  }

  /** Records that the cache now holds `history`'s first `cache.offset` tokens. */
  record(history: readonly number[]): void {
    this.#tokens = history.slice(0, this.cache.offset);
  }

  /** Writes the held tokens' keys and values and the tokens to `path` (MLX backend only). */
  save(path: string): void {
    if (!(this.cache instanceof KVCache)) throw new Error("PromptCache.save: the CPU reference backend's cache cannot be saved; load the model with backend 'mlx'");
    const { layers, heads, headDim } = this.cache.shape;
    const length = this.cache.offset;
    const buffers = this.cache.tensors();
    const tensors = new Map<string, Tensor>();
    try {
      for (let l = 0; l < layers; l++) {
        for (const [i, part] of (["keys", "values"] as const).entries()) {
          tensors.set(`layers.${l}.${part}`, slice(buffers[2 * l + i]!, [0, 0, 0, 0], [1, heads, length, headDim]));
        }
      }
      const { config } = this.model;
      saveSafetensors(path, tensors, {
        format: PROMPT_CACHE_FORMAT,
        tokens: JSON.stringify(this.#tokens),
        model_type: config.modelType,
        layers: String(layers),
        kv_heads: String(heads),
        head_dim: String(headDim),
      });
    } finally {
      for (const t of [...buffers, ...tensors.values()]) t.dispose();
    }
  }

  /** A prompt cache read from `path` (written by save) for `model`, which must match it. */
  static load(model: Model, path: string, maxLength?: number): PromptCache {
    const { tensors, metadata } = loadSafetensors(path);
    try {
      if (metadata["format"] !== PROMPT_CACHE_FORMAT) throw new Error(`${path}: not a prompt cache (metadata format is ${JSON.stringify(metadata["format"])}, expected ${PROMPT_CACHE_FORMAT})`);
      const { layers, kvHeads, headDim, modelType } = model.config;
      const saved = { model_type: modelType, layers: String(layers), kv_heads: String(kvHeads), head_dim: String(headDim) };
      for (const [key, value] of Object.entries(saved)) {
        if (metadata[key] !== value) throw new Error(`${path}: saved for ${key} ${metadata[key]}, this model has ${value}`);
      }
      let tokens: unknown;
      try {
        tokens = JSON.parse(metadata["tokens"] ?? "");
      } catch {}
      if (!Array.isArray(tokens) || !tokens.every((t) => Number.isInteger(t) && t >= 0 && t < model.config.vocabSize)) throw new Error(`${path}: metadata 'tokens' is not a list of token ids`);
      const prompt = new PromptCache(model, maxLength ?? Math.max(tokens.length, model.config.maxPositions ?? 4096));
      try {
        if (tokens.length > prompt.maxLength) throw new Error(`${path}: holds ${tokens.length} tokens, more than maxLength ${prompt.maxLength}`);
        if (!(prompt.cache instanceof KVCache)) throw new Error("PromptCache.load: needs the MLX backend");
        for (let l = 0; l < layers; l++) {
          const [keys, values] = ["keys", "values"].map((part) => {
            const t = tensors.get(`layers.${l}.${part}`);
            const want = [1, kvHeads, tokens.length, headDim];
            if (!t || t.shape.join() !== want.join()) throw new Error(`${path}: 'layers.${l}.${part}' ${t ? `has shape [${t.shape}]` : "is missing"}, expected [${want}]`);
            return t;
          }) as [Tensor, Tensor];
          if (tokens.length === 0) continue;
          using k = keys.astype(model.dtype);
          using v = values.astype(model.dtype);
          for (const t of prompt.cache.updateAndFetch(l, k, v)) t.eval().dispose();
        }
        if (tokens.length > 0) prompt.cache.advance(tokens.length);
        prompt.#tokens = tokens;
        return prompt;
      } catch (e) {
        prompt.dispose();
        throw e;
      }
    } finally {
      for (const t of tensors.values()) t.dispose();
    }
  }

  dispose(): void {
    this.cache.dispose();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}
