// Loading a model from a checkpoint directory (the backend is chosen here, once) and running its
// graph one step at a time.
import { checkOptionNames } from "../options.ts";
import { selectBackend, withFallback, type BackendKind } from "../backend/dispatch.ts";
import { join } from "node:path";
import { type DType, itemSize, type TensorData } from "../dtype.ts";
import { checkAllocation } from "../native/device.ts";
import type { Graph } from "../graph/graph.ts";
import { CPU_KERNELS } from "../graph/ops.ts";
import { inverseFrequencies } from "../graph/rotary.ts";
import { runGraph } from "../graph/run.ts";
import { type Checkpoint, checkpointBytes, loadCheckpoint } from "../io/checkpoint.ts";
import { HostTensor } from "../io/host.ts";
import { HostKVCache, KVCache } from "../kv-cache.ts";
import { fuseLinears } from "../quant/linear.ts";
import { evalAll } from "../ops/core.ts";
import type { Group } from "../ops/distributed.ts";
import { CpuTensor } from "../ops/cpu.ts";
import { DEFAULT_REWRITERS, rewrite } from "../rewrite/index.ts";
import { Tensor } from "../tensor.ts";
import { buildBert } from "./bert.ts";
import { type ModelConfig, parseModelConfig } from "./config.ts";
import { buildDecoder, type DecoderSpec } from "./decoder.ts";
import { gemmaSpec } from "./gemma.ts";
import { gpt2Spec } from "./gpt2.ts";
import { llamaSpec, qwen3Spec } from "./llama.ts";
import { phiSpec } from "./phi.ts";
import { checkIds, positionsFrom } from "./inputs.ts";
import { shardedConfig, shardWeights } from "./shard.ts";
import { checkShapes, checkShapesOnHost, checkWeights, encoderNames } from "./validate.ts";

const SPECS: Record<string, (config: ModelConfig) => DecoderSpec> = {
  llama: (c) => llamaSpec(c.tieEmbeddings),
  mistral: (c) => llamaSpec(c.tieEmbeddings),
  qwen2: (c) => llamaSpec(c.tieEmbeddings),
  qwen3: (c) => qwen3Spec(c.tieEmbeddings),
  gemma: gemmaSpec,
  phi: phiSpec,
  gpt2: gpt2Spec,
};

const ENCODERS: Record<string, (config: ModelConfig) => Graph> = { bert: buildBert };

/** The model shipped with the package (default-model/README.md): a 29M-parameter 4-bit Llama
 * trained on English prose, what `mlx-bun generate` runs without --model. */
export const DEFAULT_MODEL_DIR = join(import.meta.dir, "..", "..", "default-model");

export const ARCHITECTURES = [...Object.keys(SPECS), ...Object.keys(ENCODERS)];

interface ModelBase {
  /** Decoders generate through a KV cache (forward); encoders (BERT) return hidden states (encode). */
  kind: "decoder" | "encoder";
  config: ModelConfig;
  /** The activations' dtype on MLX, and the KV cache's: the floating dtype that most of the
   * checkpoint's values have (bfloat16 for most released MLX checkpoints). */
  dtype: DType;
  /** The model's graph (built once per variant); encoders ignore `logits`. */
  graph(logits: "last" | "all"): Graph;
  /** What was made for this model and lives as long as it (its decode engines): disposed first by dispose(). */
  readonly dependents: Set<{ dispose(): void }>;
  dispose(): void;
}

/** Disposes a model's dependents, then runs `free`. */
function disposer(dependents: Set<{ dispose(): void }>, free: () => void): () => void {
  return () => {
    for (const d of [...dependents]) d.dispose();
    dependents.clear();
    free();
  };
}

/** Weights mapped into MLX arrays; runs on MLX (ops that fail there fall back to the CPU one by one). */
export interface MlxModel extends ModelBase {
  backend: "mlx";
  checkpoint: Checkpoint<Tensor>;
  /** The checkpoint's weights plus derived tables (rotary frequencies); a tensor-parallel rank's
   * share of the sharded projections. */
  weights: ReadonlyMap<string, Tensor>;
  /** The process group of a tensor-parallel model (LoadOptions.group). */
  group: Group | null;
}

/** Weights read into host memory; runs on the pure-TypeScript CPU reference (no native library). */
export interface CpuModel extends ModelBase {
  backend: "cpu";
  checkpoint: Checkpoint<HostTensor>;
  weights: ReadonlyMap<string, TensorData>;
}

export type Model = MlxModel | CpuModel;

export interface LoadOptions {
  /** "auto" (default): MLX when the shim loads and 1.5 x the model fits memory, else "cpu". */
  backend?: BackendKind | string | undefined;
  onProgress?: ((loaded: number, total: number) => void) | undefined;
  /** Tensor parallelism over this process group (MLX; decoders with separate q/k/v): each rank keeps
   * its share of the heads and MLP features, as mlx-lm's shard_linear; outputs are summed with
   * all_sum. Start the ranks with `mlx-bun launch`. */
  group?: Group | undefined;
}

function architecture(
  dir: string,
  config: ModelConfig,
): { spec?: DecoderSpec; encoder?: (config: ModelConfig) => Graph } {
  const specOf = SPECS[config.modelType];
  const encoder = ENCODERS[config.modelType];
  if (!specOf && !encoder)
    throw new Error(
      `${dir}: model_type '${config.modelType}' is not supported (supported: ${ARCHITECTURES.join(", ")})`,
    );
  return specOf ? { spec: specOf(config) } : { encoder: encoder! };
}

function graphs(
  config: ModelConfig,
  arch: ReturnType<typeof architecture>,
  sharded = false,
): (logits: "last" | "all") => Graph {
  const built = new Map<string, Graph>();
  return (logits) => {
    const key = arch.encoder ? "encoder" : logits;
    if (!built.has(key))
      built.set(key, arch.encoder ? arch.encoder(config) : buildDecoder(config, arch.spec!, { logits, sharded }));
    return built.get(key)!;
  };
}

/** Loads a model, choosing its backend once (see LoadOptions.backend). */
export function loadModel(dir: string, options: LoadOptions & { backend: "mlx" }): MlxModel;
export function loadModel(dir: string, options: LoadOptions & { backend: "cpu" }): CpuModel;
export function loadModel(dir: string, options?: LoadOptions): Model;
export function loadModel(dir: string, options: LoadOptions = {}): Model {
  checkOptionNames("loadModel", options, ["backend", "onProgress", "group"]);
  const backend = selectBackend(options.backend ?? "auto", checkpointBytes(dir));
  const group = options.group && options.group.size > 1 ? options.group : null;
  if (group && backend === "cpu") throw new Error(`${dir}: tensor parallelism (options.group) runs on the MLX backend`);
  if (backend === "cpu") {
    const checkpoint = loadCheckpoint(dir, options.onProgress, true);
    const config = parseModelConfig(checkpoint.config);
    const arch = architecture(dir, config);
    const inverse = inverseFrequencies(config.ropeDims, config.ropeTheta, config.ropeScaling);
    const frequencies = new HostTensor(
      new Uint8Array(inverse.buffer),
      [inverse.length],
      "float32",
      "rotary.inverse_frequencies",
    );
    const named = arch.encoder
      ? encoderNames<TensorData>(checkpoint.weights)
      : new Map<string, TensorData>(checkpoint.weights);
    const weights = new Map(named).set("rotary.inverse_frequencies", frequencies);
    const graph = graphs(config, arch);
    checkWeights(dir, graph("all"), weights, named.keys(), config, arch.encoder ? "required" : "optional");
    checkShapesOnHost(dir, graph("last"), weights, checkpoint.quantization);
    const dependents = new Set<{ dispose(): void }>();
    return {
      kind: arch.encoder ? "encoder" : "decoder",
      backend,
      config,
      checkpoint,
      weights,
      dtype: activationDtype(checkpoint.weights),
      graph,
      dependents,
      dispose: disposer(dependents, () => checkpoint.dispose()),
    };
  }
  const checkpoint = loadCheckpoint(dir, options.onProgress);
  const shards: Tensor[] = [];
  try {
    const full = parseModelConfig(checkpoint.config);
    const arch = architecture(dir, full);
    const config = group ? shardedConfig(dir, full, arch.spec, group) : full;
    const inverse = inverseFrequencies(config.ropeDims, config.ropeTheta, config.ropeScaling);
    const frequencies = Tensor.from(inverse, [inverse.length], "float32");
    const named = arch.encoder ? encoderNames(checkpoint.weights) : new Map(checkpoint.weights);
    // The full projections are not kept: a rank holds its share (the point of sharding a model too
    // large for one device).
    if (group) replaceInCheckpoint(checkpoint, named, shardWeights(dir, named, full, arch.spec!, group, shards));
    const weights = new Map(named).set("rotary.inverse_frequencies", frequencies);
    const graph = graphs(config, arch, group !== null);
    try {
      checkWeights(dir, graph("all"), weights, named.keys(), config, arch.encoder ? "required" : "optional");
      checkShapes(dir, graph("last"), weights, checkpoint.quantization, group);
    } catch (e) {
      frequencies.dispose();
      throw e;
    }
    fuseProjections(weights, graph, checkpoint, shards);
    const dependents = new Set<{ dispose(): void }>();
    return {
      kind: arch.encoder ? "encoder" : "decoder",
      backend,
      config,
      checkpoint,
      weights,
      dtype: activationDtype(checkpoint.weights),
      graph,
      group,
      dependents,
      dispose: disposer(dependents, () => {
        frequencies.dispose();
        for (const t of shards) t.dispose();
        checkpoint.dispose();
      }),
    };
  } catch (e) {
    for (const t of shards) t.dispose();
    checkpoint.dispose();
    throw e;
  }
}

/** The layers the fused_projections rewrite groups (q, k, v; gate and up) get one weight each
 * (fuseLinears); the checkpoint's own tensors for them become views of it and are freed. */
function fuseProjections(
  weights: Map<string, Tensor>,
  graph: (logits: "last" | "all") => Graph,
  checkpoint: Checkpoint<Tensor>,
  made: Tensor[],
): void {
  // Both graphs group the same layers; fuseLinears skips a group fused already.
  const groups = (["last", "all"] as const).flatMap((logits) =>
    rewrite(graph(logits)).nodes.flatMap((n) => (n.op === "dense_fused" ? [n.attrs.modules] : [])),
  );
  replaceInCheckpoint(checkpoint, weights, fuseLinears(weights, groups, checkpoint.quantization, made));
}

/** The checkpoint's tensors `replaced` (by key: the originals) become those of `weights`, and the
 * originals are freed. */
function replaceInCheckpoint(
  checkpoint: Checkpoint<Tensor>,
  weights: ReadonlyMap<string, Tensor>,
  replaced: ReadonlyMap<string, Tensor>,
): void {
  for (const [key, original] of replaced) {
    if (checkpoint.weights.get(key) === original) checkpoint.weights.set(key, weights.get(key)!);
    original.dispose();
  }
}

const FLOATING: readonly DType[] = ["float32", "float16", "bfloat16", "float64"];

function activationDtype(weights: ReadonlyMap<string, TensorData>): DType {
  const counts = new Map<DType, number>();
  for (const w of weights.values()) {
    if (FLOATING.includes(w.dtype)) counts.set(w.dtype, (counts.get(w.dtype) ?? 0) + w.size);
  }
  return [...counts].sort((a, b) => b[1] - a[1])[0]?.[0] ?? "float32";
}

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
  const itemBytes = model.backend === "mlx" ? itemSize(model.dtype) : 4;
  checkAllocation(
    `a KV cache of ${layers} layers x ${batch} x ${heads} heads x ${maxLength} positions x ${headDim}`,
    2 * layers * batch * heads * maxLength * headDim * itemBytes,
    model.backend === "mlx" ? "mlx" : "host",
  );
  return model.backend === "mlx" ? new KVCache(shape) : new HostKVCache({ ...shape, dtype: "float32" });
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
  return model.backend === "cpu"
    ? new CpuTensor(Float32Array.from(ids), shape)
    : Tensor.from(Int32Array.from(ids), shape);
}

/** A tensor of integers on the MLX backend (copied there when it is a host tensor). */
function onMlx(t: TensorData): { tensor: Tensor; owned: boolean } {
  return t instanceof Tensor
    ? { tensor: t, owned: false }
    : { tensor: Tensor.from(t.toInt32Array(), [...t.shape]), owned: true };
}

function onHost(t: TensorData): CpuTensor {
  return t instanceof CpuTensor ? t : new CpuTensor(Float32Array.from(t.toInt32Array()), [...t.shape]);
}

/** Runs an encoder over ids [B, T]: last hidden states [B, T, hidden]. keyMask: [B, T], 1 = real token. */
export function encode(model: MlxModel, ids: TensorData, options?: EncodeOptions): Tensor;
export function encode(model: CpuModel, ids: TensorData, options?: EncodeOptions): CpuTensor;
export function encode(model: Model, ids: TensorData, options?: EncodeOptions): Tensor | CpuTensor;
export function encode(model: Model, ids: TensorData, options: EncodeOptions = {}): Tensor | CpuTensor {
  checkOptionNames("encode", options, ["tokenTypes", "keyMask", "graph"]);
  if (model.kind !== "encoder") throw new Error(`encode: ${model.config.modelType} is a decoder; use forward`);
  const [batch, length] = checkEncoderInputs(model, ids, options);
  const positions = positionsFrom(batch, length, 0);
  const graph = options.graph ?? model.graph("all");
  const types = options.tokenTypes ?? new CpuTensor(new Float32Array(batch * length), [batch, length]);
  if (model.backend === "cpu") {
    const feeds = {
      ids: onHost(ids),
      positions: new CpuTensor(Float32Array.from(positions), [batch, length]),
      tokenTypes: onHost(types),
      keyMask: options.keyMask ? onHost(options.keyMask) : null,
    };
    const out = runGraph(graph, CPU_KERNELS, {
      weights: model.weights,
      quantization: model.checkpoint.quantization,
      feeds,
      cache: null,
    });
    return out["hidden"] as CpuTensor;
  }
  const inputs = [
    ids,
    Tensor.from(positions, [batch, length]),
    types,
    ...(options.keyMask ? [options.keyMask] : []),
  ].map(onMlx);
  try {
    const [idsT, positionsT, typesT, maskT] = inputs.map((i) => i.tensor) as [
      Tensor,
      Tensor,
      Tensor,
      Tensor | undefined,
    ];
    const feeds = { ids: idsT, positions: positionsT, tokenTypes: typesT, keyMask: maskT ?? null };
    const out = runGraph(graph, mlxKernels(), {
      weights: model.weights,
      quantization: model.checkpoint.quantization,
      feeds,
      cache: null,
    });
    return (out["hidden"] as Tensor).eval();
  } finally {
    inputs[1]!.tensor.dispose();
    for (const i of inputs) if (i.owned) i.tensor.dispose();
  }
}

/** ids [B, T] in the vocabulary, T within the position table, token types in the type table, key
 * mask of the same shape: the embedding gathers would otherwise read past their tables. */
function checkEncoderInputs(model: Model, ids: TensorData, options: EncodeOptions): [number, number] {
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
  return [batch, length];
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

/** Feeds of one MLX forward over ids [B, T] at the cache's offset: positions (from each example's
 * first real token) and the key mask (padded batches only), as new tensors. */
export function mlxFeeds(
  ids: Tensor,
  cache: KVCache | null,
): { positions: Tensor; keyMask: Tensor | null; offset: number } {
  const [batch, length] = ids.shape as [number, number];
  const offset = cache?.offset ?? 0;
  return {
    positions: Tensor.from(positionsFrom(batch, length, offset, cache?.padding), [batch, length]),
    keyMask: cache?.keyMask(offset + length) ?? null,
    offset,
  };
}

/** Runs the graph on MLX (lazily) and advances the cache; returns the logits. */
export function runMlx(
  model: MlxModel,
  graph: Graph,
  ids: Tensor,
  cache: KVCache | null,
  feeds = mlxFeeds(ids, cache),
): Tensor {
  try {
    const out = runGraph(graph, mlxKernels(), {
      weights: model.weights,
      quantization: model.checkpoint.quantization,
      feeds: { ids, positions: feeds.positions, offset: feeds.offset, keyMask: feeds.keyMask },
      cache,
      group: model.group,
    });
    cache?.advance(ids.shape[1]!);
    return out["logits"] as Tensor;
  } finally {
    feeds.positions.dispose();
    feeds.keyMask?.dispose();
  }
}

let mlxTable: ReturnType<typeof withFallback> | undefined;

/** The MLX kernels with per-op CPU fallback (made once). */
function mlxKernels(): ReturnType<typeof withFallback> {
  return (mlxTable ??= withFallback());
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
  const [batch, length] = ids.shape as [number, number];
  const { cache = null, logits = "last" } = options;
  if (cache && cache.backend !== model.backend)
    throw new Error(`forward: the cache was made for the ${cache.backend} backend, the model runs on ${model.backend}`);
  if (cache && cache.shape.batch !== batch)
    throw new Error(`forward: ids have batch ${batch}, the cache ${cache.shape.batch}`);
  const graph = options.graph ?? model.graph(logits);
  if (model.backend === "cpu") {
    const hostCache = cache as HostKVCache | null;
    const offset = hostCache?.offset ?? 0;
    const positions = new CpuTensor(Float32Array.from(positionsFrom(batch, length, offset, hostCache?.padding)), [
      batch,
      length,
    ]);
    const feeds = { ids: onHost(ids), positions, offset, keyMask: hostCache?.keyMask(offset + length) ?? null };
    const out = runGraph(graph, CPU_KERNELS, {
      quantization: model.checkpoint.quantization,
      weights: model.weights,
      feeds,
      cache: hostCache,
    });
    hostCache?.advance(length);
    return out["logits"] as CpuTensor;
  }
  const input = onMlx(ids);
  try {
    const result = runMlx(model, graph, input.tensor, cache as KVCache | null);
    // The cache's buffers are in the logits' graph: evaluating the logits evaluates them.
    if (!options.lazy) evalAll([result]);
    return result;
  } finally {
    if (input.owned) input.tensor.dispose();
  }
}
