// Loading a model from a checkpoint directory and running its graph one step at a time.
import { CpuTensor } from "../backend/cpu.ts";
import { type Backend, type BackendKind, selectBackend } from "../backend/dispatch.ts";
import { HostTensor } from "../io/host.ts";
import type { Graph } from "../graph/graph.ts";
import { runGraph } from "../graph/run.ts";
import { type Checkpoint, checkpointBytes, loadCheckpoint } from "../io/checkpoint.ts";
import { KVCache } from "../kv-cache.ts";
import { DEFAULT_REWRITERS, rewrite } from "../rewrite/index.ts";
import { evalAll } from "../ops/core.ts";
import type { WeightMap } from "../quant/weights.ts";
import { type DType, Tensor } from "../tensor.ts";
import { inverseFrequencies, type ModelConfig, parseModelConfig } from "./config.ts";
import { buildDecoder, type DecoderSpec } from "./decoder.ts";
import { gemmaSpec } from "./gemma.ts";
import { gpt2Spec } from "./gpt2.ts";
import { llamaSpec, qwen3Spec } from "./llama.ts";
import { phiSpec } from "./phi.ts";
import { buildBert } from "./bert.ts";

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

export const ARCHITECTURES = [...Object.keys(SPECS), ...Object.keys(ENCODERS)];

export interface Model {
  /** Decoders generate through a KV cache (forward); encoders (BERT) return hidden states (encode). */
  kind: "decoder" | "encoder";
  config: ModelConfig;
  checkpoint: Checkpoint;
  /** The checkpoint's weights plus derived tables (rotary frequencies). */
  weights: WeightMap;
  /** Where it runs: MLX (weights mapped into MLX arrays) or the CPU reference (weights on the host). */
  backend: Backend;
  /** The activations' dtype on MLX, and the KV cache's: the floating dtype that most of the
   * checkpoint's values have (bfloat16 for most released MLX checkpoints). */
  dtype: DType;
  /** The model's graph (built once per variant); encoders ignore `logits`. */
  graph(logits: "last" | "all"): Graph;
  dispose(): void;
}

/** Loads a model for a backend kind (default "auto": MLX when the shim loads and the model fits
 * memory, else the CPU reference backend, whose weights are read without the native library). */
export function loadModel(dir: string, onProgress?: (loaded: number, total: number) => void, options: { backend?: BackendKind | string } = {}): Model {
  const backend = selectBackend(options.backend ?? "auto", checkpointBytes(dir));
  const host = backend.name === "cpu";
  const checkpoint = loadCheckpoint(dir, onProgress, host);
  try {
    const config = parseModelConfig(checkpoint.config);
    const specOf = SPECS[config.modelType];
    const encoder = ENCODERS[config.modelType];
    if (!specOf && !encoder) throw new Error(`${dir}: model_type '${config.modelType}' is not supported (supported: ${ARCHITECTURES.join(", ")})`);
    const inverse = inverseFrequencies(config.ropeDims, config.ropeTheta, config.ropeScaling);
    const frequencies = host
      ? new HostTensor(new Uint8Array(inverse.buffer), [inverse.length], "float32", "rotary.inverse_frequencies")
      : Tensor.from(inverse, [inverse.length], "float32");
    const weights: WeightMap = new Map(checkpoint.weights).set("rotary.inverse_frequencies", frequencies);
    const graphs = new Map<string, Graph>();
    return {
      kind: encoder ? "encoder" : "decoder",
      backend,
      config,
      checkpoint,
      weights,
      dtype: activationDtype(checkpoint.weights),
      graph(logits) {
        const key = encoder ? "encoder" : logits;
        if (!graphs.has(key)) graphs.set(key, encoder ? encoder(config) : buildDecoder(config, specOf!(config), { logits }));
        return graphs.get(key)!;
      },
      dispose() {
        frequencies.dispose();
        checkpoint.dispose();
      },
    };
  } catch (e) {
    checkpoint.dispose();
    throw e;
  }
}

const FLOATING: readonly DType[] = ["float32", "float16", "bfloat16", "float64"];

function activationDtype(weights: Checkpoint["weights"]): DType {
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

/** Heads a KV cache serving `graph` holds per layer: the kv heads after gqa_cache_fix, else all
 * query heads (the plain graphs repeat GQA keys/values before the cache update). */
export function cacheHeadsFor(model: Model, graph: Graph): number {
  return graph.cacheHeads === "kv" ? model.config.kvHeads : model.config.heads;
}

/** `heads`: a number, or the graph the cache will serve (the model's plain graph when omitted).
 * `host`: buffers for the CPU reference backend. */
export function createCache(model: Model, batch: number, maxLength: number, heads: number | Graph = model.graph("last"), host = false): KVCache {
  const { layers, headDim } = model.config;
  const count = typeof heads === "number" ? heads : cacheHeadsFor(model, heads);
  return new KVCache({ layers, batch, heads: count, headDim, maxLength, host, dtype: model.dtype });
}

/** Runs an encoder over ids [B, T]: last hidden states [B, T, hidden]. */
export function encode(model: Model, ids: Tensor, options: { tokenTypes?: Tensor; keyMask?: Tensor; graph?: Graph } = {}): Tensor {
  if (model.kind !== "encoder") throw new Error(`encode: ${model.config.modelType} is a decoder; use forward`);
  const [batch, length] = ids.shape as [number, number];
  using positions = positionsFrom(batch, length, 0) as Tensor;
  using zeros = options.tokenTypes ? null : Tensor.from(new Int32Array(batch * length), [batch, length]);
  const out = runGraph(options.graph ?? model.graph("all"), {
    weights: model.weights,
    quantization: model.checkpoint.quantization,
    feeds: { ids, positions, tokenTypes: options.tokenTypes ?? zeros, keyMask: options.keyMask ?? null },
  });
  return (out.hidden as Tensor).eval();
}

/** Positions offset + t, counted from each example's first real token when left-padded. */
function positionsFrom(batch: number, length: number, offset: number, padding?: readonly number[], onHost = false): Tensor | CpuTensor {
  const host = new Int32Array(batch * length);
  for (let b = 0; b < batch; b++) {
    for (let t = 0; t < length; t++) host[b * length + t] = Math.max(0, offset + t - (padding?.[b] ?? 0));
  }
  return onHost ? new CpuTensor(Float32Array.from(host), [batch, length]) : Tensor.from(host, [batch, length]);
}

/** Token ids [B, T] for the model's backend. */
export function tokenIds(model: Model, ids: readonly number[], shape: number[]): Tensor | CpuTensor {
  return model.backend.name === "cpu" ? new CpuTensor(Float32Array.from(ids), shape) : Tensor.from(Int32Array.from(ids), shape);
}

/** One forward pass over ids [B, T] (integers) at the cache's offset; updates the cache and
 * evaluates logits and cache together (one MLX eval). Returns logits [B, T or 1, vocab].
 * `graph` overrides the model's own (a rewritten one, say); `backend` picks the kernels (default MLX).
 * With `lazy` (MLX only) nothing is evaluated: the caller evaluates the logits and cache.tensors(). */
export function forward(
  model: Model,
  ids: Tensor | CpuTensor,
  cache: KVCache | null,
  logits: "last" | "all" = "last",
  graph?: Graph,
  backend: Backend = model.backend,
  lazy = false,
): Tensor {
  if (model.kind !== "decoder") throw new Error(`forward: ${model.config.modelType} is an encoder; use encode`);
  const [batch, length] = ids.shape as [number, number];
  const offset = cache?.offset ?? 0;
  const onHost = backend.name === "cpu";
  using positions = positionsFrom(batch, length, offset, cache?.padding, onHost);
  const out = runGraph(graph ?? model.graph(logits), {
    weights: model.weights,
    quantization: model.checkpoint.quantization,
    feeds: { ids, positions, cache: cache?.feed() ?? null, offset, keyMask: cache?.keyMask ?? null },
  }, backend.kernels);
  const raw = out.logits!;
  if (onHost) {
    cache?.advance(out.cache ?? null, length);
    // Host logits: the same read surface (shape, toFloat32Array, dispose) as a Tensor.
    return raw as unknown as Tensor;
  }
  const result = raw instanceof CpuTensor ? Tensor.from(raw.data, [...raw.shape]) : (raw as Tensor);
  cache?.advance(out.cache ?? null, length);
  if (!lazy) evalAll([result, ...(cache?.tensors() ?? [])]);
  return result;
}
