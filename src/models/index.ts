// A loaded model (load.ts) run one step at a time: forward, encode, its caches and token ids.
import type { CpuModel, MlxModel, Model } from "./load.ts";
import { checkOptionNames } from "../options.ts";
import type { TensorData } from "../dtype.ts";
import { checkAllocation } from "../native/device.ts";
import type { Graph } from "../graph/graph.ts";
import type { HostKVCache, KVCache } from "../kv-cache.ts";
import { CpuTensor } from "../ops/cpu.ts";
import { DEFAULT_REWRITERS, rewrite } from "../rewrite/index.ts";
import { Tensor } from "../tensor.ts";
import { checkIds, positionsFrom } from "./inputs.ts";
import { backendOf, CPU_BACKEND, MLX_BACKEND, type ModelBackend, type Runnable, runOn } from "./backends.ts";
import type { BackendTypes } from "../graph/ops.ts";

export {
  ARCHITECTURES,
  type CpuModel,
  DEFAULT_MODEL_DIR,
  type LoadOptions,
  loadModel,
  type MlxModel,
  type Model,
} from "./load.ts";

const rewritten = new WeakMap<Model, Map<string, Graph>>();

/** The model's graph rewritten with `only` (default rewriters when omitted), built once per model. */
export function rewrittenGraph(model: Model, logits: "last" | "all", only: string[] = DEFAULT_REWRITERS): Graph {
  let graphs = rewritten.get(model);
  if (!graphs) rewritten.set(model, (graphs = new Map()));
  const key = `${logits}:${only.join(",")}`;
  if (!graphs.has(key)) graphs.set(key, rewrite(model.graph(logits), { only }));
  return graphs.get(key)!;
}

export interface CacheOptions {
  /** A rotating cache of maxLength slots keeping the first `keep` positions (see CacheShape.keep). */
  keep?: number | undefined;
  /** A quantized cache (MLX only; see CacheShape.kvBits). */
  kvBits?: number | undefined;
  kvGroupSize?: number | undefined;
}

/** A KV cache for `batch` sequences of up to `maxLength` positions, on the model's backend, holding
 * its kv heads in its activation dtype. */
export function createCache(model: MlxModel, batch: number, maxLength: number, options?: CacheOptions): KVCache;
export function createCache(model: CpuModel, batch: number, maxLength: number, options?: CacheOptions): HostKVCache;
export function createCache(
  model: Model,
  batch: number,
  maxLength: number,
  options?: CacheOptions,
): KVCache | HostKVCache;
export function createCache(
  model: Model,
  batch: number,
  maxLength: number,
  options: CacheOptions = {},
): KVCache | HostKVCache {
  checkOptionNames("createCache", options, ["keep", "kvBits", "kvGroupSize"]);
  const { layers, kvHeads: heads, headDim } = model.config;
  const shape = {
    layers,
    batch,
    heads,
    headDim,
    maxLength,
    dtype: model.dtype,
    keep: options.keep,
    kvBits: options.kvBits,
    kvGroupSize: options.kvGroupSize,
  };
  for (const [key, value] of Object.entries({ batch, maxLength })) {
    if (!Number.isSafeInteger(value) || value <= 0)
      throw new Error(`createCache: ${key} must be a positive integer, got ${value}`);
  }
  const backend = backendOf(model);
  checkAllocation(
    `a KV cache of ${layers} layers x ${batch} x ${heads} heads x ${maxLength} positions x ${headDim}`,
    2 * layers * batch * heads * maxLength * headDim * backend.cacheItemBytes(model.dtype),
    backend.memory,
  );
  return backend.cache(shape);
}

/** The KV cache a generation of `length` positions (`promptLength` of them the prompt) needs: a plain
 * one, or past the model's sliding window or `maxKvSize` a rotating one of that size (keeping the
 * first 4 positions for maxKvSize, as mlx-lm's max_kv_size does; none for a window). The prompt must
 * fit the rotating cache. */
export function generationCache(
  model: Model,
  batch: number,
  promptLength: number,
  length: number,
  options: { maxKvSize?: number | undefined; kvBits?: number | undefined; kvGroupSize?: number | undefined } = {},
): KVCache | HostKVCache {
  const { maxKvSize, kvBits, kvGroupSize } = options;
  const window = model.config.slidingWindow;
  const bound = Math.min(window ?? Infinity, maxKvSize ?? Infinity);
  if (length <= bound) return createCache(model, batch, length, { kvBits, kvGroupSize });
  if (kvBits !== undefined)
    throw new Error(
      "a quantized KV cache does not rotate: kvBits does not combine with maxKvSize or a generation past the model's sliding window",
    );
  const byWindow = window !== undefined && window === bound;
  if (promptLength > bound) {
    throw new Error(
      `the prompt (${promptLength} tokens) is longer than ${byWindow ? `the model's sliding window (${window})` : `maxKvSize (${maxKvSize})`}; a rotating cache takes a prompt that fits it`,
    );
  }
  return createCache(model, batch, bound, { keep: byWindow ? 0 : 4 });
}

/** Integer ids [B, T] on the model's backend. */
export function tokenIds(model: MlxModel, ids: readonly number[], shape: readonly number[]): Tensor;
export function tokenIds(model: Model, ids: readonly number[], shape: readonly number[]): Tensor | CpuTensor;
export function tokenIds(model: Model, ids: readonly number[], shape: readonly number[]): Tensor | CpuTensor {
  return backendOf(model).ints(ids, shape);
}

/** Runs an encoder over ids [B, T]: last hidden states [B, T, hidden]. keyMask: [B, T], 1 = real token. */
export function encode(model: MlxModel, ids: TensorData, options?: EncodeOptions): Tensor;
export function encode(model: CpuModel, ids: TensorData, options?: EncodeOptions): CpuTensor;
export function encode(model: Model, ids: TensorData, options?: EncodeOptions): Tensor | CpuTensor;
export function encode(model: Model, ids: TensorData, options: EncodeOptions = {}): Tensor | CpuTensor {
  checkOptionNames("encode", options, ["tokenTypes", "keyMask", "graph"]);
  if (model.kind !== "encoder") throw new Error(`encode: ${model.config.modelType} is a decoder; use forward`);
  checkEncoderInputs(model, ids, options);
  const graph = options.graph ?? model.graph("all");
  return model.backend === "mlx"
    ? encodeOn(MLX_BACKEND, model, ids, graph, options)
    : encodeOn(CPU_BACKEND, model, ids, graph, options);
}

function encodeOn<B extends BackendTypes>(
  backend: ModelBackend<B>,
  model: Runnable<B>,
  ids: TensorData,
  graph: Graph,
  options: EncodeOptions,
): B["tensor"] {
  const [batch, length] = ids.shape as [number, number];
  const positions = backend.ints(positionsFrom(batch, length, 0), [batch, length]);
  const types = options.tokenTypes ?? new CpuTensor(new Float32Array(batch * length), [batch, length]);
  const inputs = [ids, types, ...(options.keyMask ? [options.keyMask] : [])].map((t) => backend.adopt(t));
  try {
    const [idsT, typesT, maskT] = inputs.map((i) => i.tensor);
    const feeds = { ids: idsT!, positions, tokenTypes: typesT!, keyMask: maskT ?? null };
    const hidden = runOn(backend, model, graph, feeds, null)["hidden"] as B["tensor"];
    backend.evaluate([hidden]);
    return hidden;
  } finally {
    positions.dispose();
    for (const i of inputs) if (i.owned) i.tensor.dispose();
  }
}

/** ids [B, T] in the vocabulary, T within the position table, token types in the type table, key
 * mask of the same shape: the embedding gathers would otherwise read past their tables. */
function checkEncoderInputs(model: Model, ids: TensorData, options: EncodeOptions): void {
  if (ids.shape.length !== 2 || ids.shape.some((d) => d < 1))
    throw new Error(`encode: ids must be [batch, length] with both >= 1, got [${ids.shape.join(", ")}]`);
  const [batch, length] = ids.shape as [number, number];
  const positions = model.weights.get("embeddings.position_embeddings.weight")?.shape[0];
  if (positions !== undefined && length > positions) {
    throw new Error(
      `encode: ${length} tokens per row, but this model has ${positions} positions (max_position_embeddings); cut the input (embed() truncates)`,
    );
  }
  checkIds(ids, model.config.vocabSize, "encode: ids");
  for (const [name, t] of [
    ["tokenTypes", options.tokenTypes],
    ["keyMask", options.keyMask],
  ] as const) {
    if (t !== undefined && (t.shape.length !== 2 || t.shape[0] !== batch || t.shape[1] !== length)) {
      throw new Error(`encode: ${name} must have the ids' shape [${batch}, ${length}], got [${t.shape.join(", ")}]`);
    }
  }
  const types = model.weights.get("embeddings.token_type_embeddings.weight")?.shape[0];
  if (options.tokenTypes !== undefined && types !== undefined)
    checkIds(options.tokenTypes, types, "encode: tokenTypes");
  if (options.keyMask !== undefined && !(options.keyMask instanceof Tensor && !options.keyMask.available)) {
    const mask = options.keyMask.toFloat32Array();
    const bad = mask.findIndex((v) => v !== 0 && v !== 1);
    if (bad >= 0)
      throw new Error(`encode: keyMask[${bad}] is ${mask[bad]}; the key mask holds 1 (real token) or 0 (padding)`);
  }
}

export interface EncodeOptions {
  /** Token type ids [B, T] (zeros when omitted). */
  tokenTypes?: TensorData | undefined;
  /** [B, T]: 1 = real token, 0 = padding. */
  keyMask?: TensorData | undefined;
  /** A rewritten graph to run instead of the model's. */
  graph?: Graph | undefined;
}

export interface ForwardOptions {
  /** The KV cache to read and extend (created for this model), or none: one pass from position 0. */
  cache?: KVCache | HostKVCache | null | undefined;
  /** Logits for the last position (default) or every position. */
  logits?: "last" | "all" | undefined;
  /** A graph to run instead of the model's (a rewritten one, say). */
  graph?: Graph | undefined;
  /** MLX only: evaluate nothing; the caller evaluates the logits and cache.tensors(). */
  lazy?: boolean | undefined;
}

/** Feeds of one forward over ids [B, T] at the cache's offset: positions (from each example's first
 * real token) and the key mask (padded batches only), as new tensors of the backend. */
function feedsOn<B extends BackendTypes>(
  backend: ModelBackend<B>,
  ids: B["tensor"],
  cache: KVCache | HostKVCache | null,
): { positions: B["tensor"]; keyMask: B["tensor"] | null; offset: number } {
  const [batch, length] = ids.shape as [number, number];
  const offset = cache?.offset ?? 0;
  return {
    positions: backend.ints(positionsFrom(batch, length, offset, cache?.padding), [batch, length]),
    keyMask: (cache?.keyMask(offset + length) ?? null) as B["tensor"] | null,
    offset,
  };
}

/** One step's graph run (lazily on MLX) at the cache's offset, the cache advanced: the logits. */
function stepOn<B extends BackendTypes>(
  backend: ModelBackend<B>,
  model: Runnable<B>,
  graph: Graph,
  ids: B["tensor"],
  cache: KVCache | HostKVCache | null,
  feeds = feedsOn(backend, ids, cache),
): B["tensor"] {
  try {
    const out = runOn(backend, model, graph, { ids, ...feeds }, cache);
    cache?.advance(ids.shape[1]!);
    return out["logits"] as B["tensor"];
  } finally {
    feeds.positions.dispose();
    feeds.keyMask?.dispose();
  }
}

/** The feeds of an MLX step (models/replay.ts records and replays them). */
export function mlxFeeds(
  ids: Tensor,
  cache: KVCache | null,
): { positions: Tensor; keyMask: Tensor | null; offset: number } {
  return feedsOn(MLX_BACKEND, ids, cache);
}

/** Runs the graph on MLX (lazily) and advances the cache; returns the logits. */
export function runMlx(
  model: MlxModel,
  graph: Graph,
  ids: Tensor,
  cache: KVCache | null,
  feeds = mlxFeeds(ids, cache),
): Tensor {
  return stepOn(MLX_BACKEND, model, graph, ids, cache, feeds);
}

/** One forward pass over integer ids [B, T] at the cache's offset; the cache is extended. Returns
 * logits [B, T or 1, vocab] on the model's backend (evaluated on MLX unless `lazy`). */
export function forward(model: MlxModel, ids: TensorData, options?: ForwardOptions): Tensor;
export function forward(model: CpuModel, ids: TensorData, options?: ForwardOptions): CpuTensor;
export function forward(model: Model, ids: TensorData, options?: ForwardOptions): Tensor | CpuTensor;
export function forward(model: Model, ids: TensorData, options: ForwardOptions = {}): Tensor | CpuTensor {
  checkOptionNames("forward", options, ["cache", "logits", "graph", "lazy"]);
  if (model.kind !== "decoder") throw new Error(`forward: ${model.config.modelType} is an encoder; use encode`);
  if (ids.ndim !== 2) throw new Error(`forward: ids must be [batch, length], got [${ids.shape.join(", ")}]`);
  checkIds(ids, model.config.vocabSize);
  const { cache = null, logits = "last" } = options;
  if (cache && cache.backend !== model.backend)
    throw new Error(`forward: the cache was made for the ${cache.backend} backend, the model runs on ${model.backend}`);
  if (cache && cache.shape.batch !== ids.shape[0])
    throw new Error(`forward: ids have batch ${ids.shape[0]}, the cache ${cache.shape.batch}`);
  const graph = options.graph ?? model.graph(logits);
  return model.backend === "mlx"
    ? forwardOn(MLX_BACKEND, model, ids, graph, cache, options.lazy === true)
    : forwardOn(CPU_BACKEND, model, ids, graph, cache, false);
}

function forwardOn<B extends BackendTypes>(
  backend: ModelBackend<B>,
  model: Runnable<B>,
  ids: TensorData,
  graph: Graph,
  cache: KVCache | HostKVCache | null,
  lazy: boolean,
): B["tensor"] {
  const input = backend.adopt(ids);
  try {
    const result = stepOn(backend, model, graph, input.tensor, cache);
    // The cache's buffers are in the logits' graph: evaluating the logits evaluates them.
    if (!lazy) backend.evaluate([result]);
    return result;
  } finally {
    if (input.owned) input.tensor.dispose();
  }
}
