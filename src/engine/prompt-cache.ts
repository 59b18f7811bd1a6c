// A prompt cache: one conversation's KV cache kept between generate calls, with the tokens whose keys
// and values it holds. generate({ promptCache }) prefills only what follows the longest common
// token prefix of the new prompt and those tokens, then leaves the cache holding everything it fed.
// Saved to / loaded from a safetensors file (the format is below).
import { saveSafetensors, loadSafetensors } from "../io/safetensors.ts";
import { type HostKVCache, KVCache } from "../kv-cache.ts";
import { createCache, type Model } from "../models/index.ts";
import { reshape, slice } from "../ops/core.ts";
import { Tensor } from "../tensor.ts";

/** File format: tensors `layers.{l}.keys` and `layers.{l}.values` [batch 1, kv heads, tokens, head
 * dim] in the cache's dtype, and metadata:
 * - `format` = this string, `tokens` (JSON list of ids);
 * - the model's fingerprint: `model_config` (its config.json as canonical JSON: keys sorted, the
 *   `_`-prefixed and `transformers_version` keys left out) and `model_weights_sha256` (SHA-256 over
 *   each checkpoint weight's name, dtype, shape and first 64 bytes, in name order);
 * - `checksum_sha256`: SHA-256 over `tokens` and every tensor's name and bytes, in the file's order.
 * Load checks all of them against the model and the file's contents; a mismatch is an Error that
 * names what differs. */
export const PROMPT_CACHE_FORMAT = "mlx-bun-prompt-cache-v2";

/** JSON of `value` with object keys sorted, so equal configs give equal strings. */
function canonical(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonical).join(",")}]`;
  if (value !== null && typeof value === "object") {
    const entries = Object.entries(value as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonical(v)}`).join(",")}}`;
  }
  return JSON.stringify(value) ?? "null";
}

const fingerprints = new WeakMap<Model, { config: string; weights: string }>();

/** The model's fingerprint (see the file format), computed once per model. */
function fingerprintOf(model: Model): { config: string; weights: string } {
  let known = fingerprints.get(model);
  if (known) return known;
  const config = Object.fromEntries(
    Object.entries(model.checkpoint.config).filter(([k]) => !k.startsWith("_") && k !== "transformers_version"),
  );
  const hasher = new Bun.CryptoHasher("sha256");
  for (const name of [...model.checkpoint.weights.keys()].sort()) {
    const w = model.checkpoint.weights.get(name)!;
    hasher.update(`${name}|${w.dtype}|${w.shape.join(",")}|`);
    const bytes = Math.min(64, w.nbytes);
    if (w instanceof Tensor) {
      const count = Math.max(1, Math.floor(bytes / (w.nbytes / Math.max(1, w.size))));
      using flat = reshape(w, [w.size]);
      using head = slice(flat, [0], [Math.min(count, w.size)]);
      hasher.update(head.toBytes());
    } else {
      hasher.update(w.toBytes().subarray(0, bytes));
    }
  }
  known = { config: canonical(config), weights: hasher.digest("hex") };
  fingerprints.set(model, known);
  return known;
}

/** SHA-256 over the tokens' JSON and each tensor's name and bytes, in order. */
function checksumOf(tokens: string, tensors: ReadonlyMap<string, Tensor>): string {
  const hasher = new Bun.CryptoHasher("sha256");
  hasher.update(tokens);
  for (const [name, t] of tensors) {
    hasher.update(`|${name}|`);
    hasher.update(t.toBytes());
  }
  return hasher.digest("hex");
}

/** What differs between two canonical configs: "key: saved X, this model Y" for each key. */
function configDifferences(saved: string, current: string): string {
  let before: Record<string, unknown>;
  try {
    before = JSON.parse(saved) as Record<string, unknown>;
  } catch {
    return "its saved config is not JSON";
  }
  const after = JSON.parse(current) as Record<string, unknown>;
  const keys = [...new Set([...Object.keys(before), ...Object.keys(after)])].sort();
  const differing = keys.filter((k) => canonical(before[k]) !== canonical(after[k]));
  return differing.map((k) => `${k}: saved ${canonical(before[k])}, this model ${canonical(after[k])}`).join("; ");
}

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
    if (!(this.cache instanceof KVCache))
      throw new Error(
        "PromptCache.save: the CPU reference backend's cache cannot be saved; load the model with backend 'mlx'",
      );
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
      const tokens = JSON.stringify(this.#tokens);
      const fingerprint = fingerprintOf(this.model);
      saveSafetensors(path, tensors, {
        format: PROMPT_CACHE_FORMAT,
        tokens,
        model_config: fingerprint.config,
        model_weights_sha256: fingerprint.weights,
        checksum_sha256: checksumOf(tokens, tensors),
      });
    } finally {
      for (const t of [...buffers, ...tensors.values()]) t.dispose();
    }
  }

  /** A prompt cache read from `path` (written by save) for `model`, which must match it. */
  static load(model: Model, path: string, maxLength?: number): PromptCache {
    const { tensors, metadata } = loadSafetensors(path);
    try {
      const format = metadata["format"];
      if (format === "mlx-bun-prompt-cache-v1")
        throw new Error(
          `${path}: a prompt cache of the older format v1, which carries no model fingerprint or checksum; save it again`,
        );
      if (format !== PROMPT_CACHE_FORMAT)
        throw new Error(
          `${path}: not a prompt cache (metadata format is ${JSON.stringify(format)}, expected ${PROMPT_CACHE_FORMAT})`,
        );
      const { layers, kvHeads, headDim } = model.config;
      const fingerprint = fingerprintOf(model);
      if (metadata["model_config"] !== fingerprint.config) {
        throw new Error(
          `${path}: saved for another model; its config differs (${configDifferences(metadata["model_config"] ?? "", fingerprint.config)})`,
        );
      }
      if (metadata["model_weights_sha256"] !== fingerprint.weights)
        throw new Error(`${path}: saved for another model; same config, but the weights differ (model_weights_sha256)`);
      if (metadata["checksum_sha256"] !== checksumOf(metadata["tokens"] ?? "", tensors)) {
        throw new Error(
          `${path}: the checksum does not match the file's tokens and tensors (checksum_sha256); the file was changed or damaged after it was saved`,
        );
      }
      let tokens: unknown;
      try {
        tokens = JSON.parse(metadata["tokens"] ?? "");
      } catch {}
      if (!Array.isArray(tokens) || !tokens.every((t) => Number.isInteger(t) && t >= 0 && t < model.config.vocabSize))
        throw new Error(`${path}: metadata 'tokens' is not a list of token ids`);
      const prompt = new PromptCache(model, maxLength ?? Math.max(tokens.length, model.config.maxPositions ?? 4096));
      try {
        if (tokens.length > prompt.maxLength)
          throw new Error(`${path}: holds ${tokens.length} tokens, more than maxLength ${prompt.maxLength}`);
        if (!(prompt.cache instanceof KVCache)) throw new Error("PromptCache.load: needs the MLX backend");
        for (let l = 0; l < layers; l++) {
          const [keys, values] = ["keys", "values"].map((part) => {
            const t = tensors.get(`layers.${l}.${part}`);
            const want = [1, kvHeads, tokens.length, headDim];
            if (!t || t.shape.join() !== want.join())
              throw new Error(
                `${path}: 'layers.${l}.${part}' ${t ? `has shape [${t.shape}]` : "is missing"}, expected [${want}]`,
              );
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
