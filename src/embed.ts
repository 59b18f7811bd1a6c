// Sentence embeddings from an encoder (BERT), as sentence-transformers computes them: tokenize, cut
// to the model's limit, pad a batch (right) with its key mask, encode, pool over the real tokens
// (mean / CLS / max) and L2-normalize. Pooling, normalization and the limit come from the
// checkpoint's sentence-transformers files when it has them; options override.
import { checkOptionNames } from "./options.ts";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { CpuTensor } from "./ops/cpu.ts";
import { encode, type Model } from "./models/index.ts";
import type { Tokenizer } from "./tokenizer/tokenizer.ts";

export const POOLINGS = ["mean", "cls", "max"] as const;
export type Pooling = (typeof POOLINGS)[number];

export interface EmbedOptions {
  /** How token states become one vector (default: the checkpoint's 1_Pooling config, else "mean"). */
  pooling?: Pooling | undefined;
  /** L2-normalize each vector (default: true when modules.json lists Normalize, else false). */
  normalize?: boolean | undefined;
  /** Tokens per text, special tokens included; longer texts are cut (default: sentence_bert_config's
   * max_seq_length, else tokenizer.json's truncation, else max_position_embeddings). */
  maxLength?: number | undefined;
  /** Texts per forward pass (default 32). Texts are sorted by length first, so a batch pads little. */
  batchSize?: number | undefined;
}

export interface Embeddings {
  /** One row per text, in the order given. */
  vectors: Float32Array[];
  dimension: number;
  /** Token count of each text as encoded (after truncation, special tokens included). */
  tokenCounts: number[];
  /** Indices of the texts that were cut to maxLength. */
  truncated: number[];
  /** What was applied, after defaults. */
  pooling: Pooling;
  normalize: boolean;
  maxLength: number;
}

/** What a checkpoint's sentence-transformers files say (each field only when they say it). */
export interface SentenceTransformersConfig {
  pooling?: Pooling;
  normalize?: boolean;
  maxLength?: number;
}

function readJson(path: string): unknown {
  try {
    return JSON.parse(readFileSync(path, "utf8"));
  } catch (e) {
    throw new Error(`${path}: cannot read as JSON (${(e as Error).message})`);
  }
}

/** Reads modules.json, the Pooling module's config.json and sentence_bert_config.json from `dir`. */
export function sentenceTransformersConfig(dir: string): SentenceTransformersConfig {
  const out: SentenceTransformersConfig = {};
  const modulesPath = join(dir, "modules.json");
  if (existsSync(modulesPath)) {
    const modules = readJson(modulesPath);
    if (!Array.isArray(modules)) throw new Error(`${modulesPath}: expected a list of modules`);
    const typeOf = (m: unknown) =>
      typeof m === "object" && m !== null ? String((m as { type?: unknown }).type ?? "") : "";
    out.normalize = modules.some((m) => typeOf(m).endsWith(".Normalize"));
    const pooling = modules.find((m) => typeOf(m).endsWith(".Pooling")) as { path?: unknown } | undefined;
    if (pooling) out.pooling = poolingFrom(join(dir, String(pooling.path ?? ""), "config.json"));
  }
  const bertConfig = join(dir, "sentence_bert_config.json");
  if (existsSync(bertConfig)) {
    const length = (readJson(bertConfig) as { max_seq_length?: unknown }).max_seq_length;
    if (length !== undefined && length !== null) {
      if (typeof length !== "number" || !Number.isSafeInteger(length) || length < 1)
        throw new Error(`${bertConfig}: max_seq_length must be a positive integer, got ${JSON.stringify(length)}`);
      out.maxLength = length;
    }
  }
  return out;
}

function poolingFrom(path: string): Pooling {
  const config = readJson(path) as Record<string, unknown>;
  const modes = Object.entries(config)
    .filter(([k, v]) => k.startsWith("pooling_mode_") && v === true)
    .map(([k]) => k.slice("pooling_mode_".length));
  const names: Record<string, Pooling> = { mean_tokens: "mean", cls_token: "cls", max_tokens: "max" };
  const mode = modes[0];
  if (modes.length !== 1 || mode === undefined || !(mode in names)) {
    throw new Error(
      `${path}: pooling ${modes.length === 0 ? "mode not set" : `'${modes.join("+")}'`} is not supported (one of: ${Object.keys(
        names,
      )
        .map((m) => `pooling_mode_${m}`)
        .join(", ")})`,
    );
  }
  return names[mode]!;
}

const configs = new WeakMap<Model, SentenceTransformersConfig>();

function positiveInteger(name: string, value: number): number {
  if (!Number.isSafeInteger(value) || value < 1)
    throw new Error(`embed: ${name} must be a positive integer, got ${value}`);
  return value;
}

/** Embeds `texts` with an encoder model: one vector per text (see EmbedOptions for the defaults). */
export function embed(
  model: Model,
  tokenizer: Tokenizer,
  texts: readonly string[],
  options: EmbedOptions = {},
): Embeddings {
  checkOptionNames("embed", options, ["pooling", "normalize", "maxLength", "batchSize"]);
  if (model.kind !== "encoder")
    throw new Error(`embed: ${model.config.modelType} is a decoder; embeddings need an encoder (bert)`);
  if (!Array.isArray(texts) || texts.some((t) => typeof t !== "string"))
    throw new Error("embed: texts must be an array of strings");
  let st = configs.get(model);
  if (!st) configs.set(model, (st = sentenceTransformersConfig(model.checkpoint.dir)));
  const pooling = options.pooling ?? st.pooling ?? "mean";
  if (!POOLINGS.includes(pooling))
    throw new Error(`embed: pooling must be one of ${POOLINGS.join(", ")}, got '${pooling}'`);
  const normalize = options.normalize ?? st.normalize ?? false;
  if (typeof normalize !== "boolean") throw new Error(`embed: normalize must be a boolean, got ${typeof normalize}`);
  const positions = model.config.maxPositions;
  const maxLength = positiveInteger(
    "maxLength",
    options.maxLength ?? st.maxLength ?? tokenizer.truncationLength ?? positions ?? 512,
  );
  if (positions !== undefined && maxLength > positions)
    throw new Error(
      `embed: maxLength ${maxLength} exceeds the model's ${positions} positions (max_position_embeddings)`,
    );
  const batchSize = positiveInteger("batchSize", options.batchSize ?? 32);
  const pad = tokenizer.padTokenId ?? 0;

  const encoded = texts.map((text) => tokenizer.encodeTruncated(text, maxLength));
  const dimension = model.config.hiddenSize;
  const vectors: Float32Array[] = new Array(texts.length);
  const order = encoded.map((_, i) => i).sort((a, b) => encoded[b]!.ids.length - encoded[a]!.ids.length);
  for (let start = 0; start < order.length; start += batchSize) {
    const rows = order.slice(start, start + batchSize);
    const length = Math.max(...rows.map((i) => encoded[i]!.ids.length));
    const ids = new Float32Array(rows.length * length).fill(pad);
    const mask = new Float32Array(rows.length * length);
    rows.forEach((i, r) => {
      encoded[i]!.ids.forEach((id, t) => {
        ids[r * length + t] = id;
        mask[r * length + t] = 1;
      });
    });
    const shape = [rows.length, length];
    const hidden = encode(model, new CpuTensor(ids, shape), { keyMask: new CpuTensor(mask, shape) });
    let states: Float32Array;
    try {
      states = hidden.toFloat32Array();
    } finally {
      if ("dispose" in hidden) hidden.dispose();
    }
    rows.forEach((i, r) => {
      const vector = pool(
        states.subarray(r * length * dimension, (r + 1) * length * dimension),
        encoded[i]!.ids.length,
        dimension,
        pooling,
      );
      vectors[i] = normalize ? normalized(vector) : vector;
    });
  }
  return {
    vectors,
    dimension,
    tokenCounts: encoded.map((e) => e.ids.length),
    truncated: encoded.flatMap((e, i) => (e.truncated ? [i] : [])),
    pooling,
    normalize,
    maxLength,
  };
}

/** One row's states [length, dimension] (real tokens first, padding after) to one vector. */
function pool(states: Float32Array, real: number, dimension: number, pooling: Pooling): Float32Array {
  if (pooling === "cls") return states.slice(0, dimension);
  const out = new Float32Array(dimension).fill(pooling === "max" ? -Infinity : 0);
  for (let t = 0; t < real; t++) {
    const row = states.subarray(t * dimension, (t + 1) * dimension);
    for (let d = 0; d < dimension; d++) out[d] = pooling === "max" ? Math.max(out[d]!, row[d]!) : out[d]! + row[d]!;
  }
  if (pooling === "mean") for (let d = 0; d < dimension; d++) out[d]! /= real;
  return out;
}

/** x / max(|x|, 1e-12), as torch.nn.functional.normalize (sentence-transformers' Normalize). */
function normalized(x: Float32Array): Float32Array {
  let sum = 0;
  for (const v of x) sum += v * v;
  const norm = Math.max(Math.sqrt(sum), 1e-12);
  return x.map((v) => v / norm);
}

/** Cosine similarity of two vectors of the same length (their dot product when both are normalized). */
export function cosineSimilarity(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`cosineSimilarity: lengths differ (${a.length} vs ${b.length})`);
  let dot = 0;
  let na = 0;
  let nb = 0;
  for (let i = 0; i < a.length; i++) {
    dot += a[i]! * b[i]!;
    na += a[i]! * a[i]!;
    nb += b[i]! * b[i]!;
  }
  return dot / Math.max(Math.sqrt(na * nb), 1e-24);
}
