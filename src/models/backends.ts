// What a model's two backends do differently when it runs, as one interface: MLX (Tensor, through
// the shim, lazy until evaluated) and the CPU reference (CpuTensor, plain TypeScript). forward,
// encode and the caches (index.ts) are written once over it.
import { withFallback } from "../backend/dispatch.ts";
import { type DType, itemSize, type TensorData } from "../dtype.ts";
import type { AttentionCache, BackendTypes, CpuTypes, KernelTable, MlxTypes, Value } from "../graph/ops.ts";
import { CPU_KERNELS } from "../graph/ops.ts";
import type { Graph } from "../graph/graph.ts";
import { runGraph } from "../graph/run.ts";
import { type CacheShape, HostKVCache, KVCache } from "../kv-cache.ts";
import { evalAll } from "../ops/core.ts";
import type { Group } from "../ops/distributed.ts";
import { CpuTensor } from "../ops/cpu.ts";
import type { QuantConfig } from "../quant/config.ts";
import { Tensor } from "../tensor.ts";
import type { Model } from "./load.ts";

export interface ModelBackend<B extends BackendTypes> {
  /** The op table: MLX's with per-op CPU fallback, or the CPU reference's. */
  kernels(): KernelTable<B>;
  /** Integers (ids, positions, token types) as this backend's tensor. */
  ints(values: ArrayLike<number>, shape: readonly number[]): B["tensor"];
  /** An integer tensor on this backend: itself, or a copy made here (owned). */
  adopt(t: TensorData): { tensor: B["tensor"]; owned: boolean };
  /** A KV cache of `shape` on this backend. */
  cache(shape: CacheShape): KVCache | HostKVCache;
  /** Where a cache's memory comes from, and the bytes of one of its elements. */
  memory: "mlx" | "host";
  cacheItemBytes(dtype: DType): number;
  /** Evaluates results (MLX is lazy; the CPU reference has computed them already). */
  evaluate(results: readonly B["tensor"][]): void;
}

let mlxTable: KernelTable<MlxTypes> | undefined;

export const MLX_BACKEND: ModelBackend<MlxTypes> = {
  kernels: () => (mlxTable ??= withFallback()),
  ints: (values, shape) => Tensor.from(Int32Array.from(values), shape),
  adopt: (t) =>
    t instanceof Tensor
      ? { tensor: t, owned: false }
      : { tensor: Tensor.from(t.toInt32Array(), [...t.shape]), owned: true },
  cache: (shape) => new KVCache(shape),
  memory: "mlx",
  cacheItemBytes: itemSize,
  evaluate: (results) => evalAll([...results]),
};

export const CPU_BACKEND: ModelBackend<CpuTypes> = {
  kernels: () => CPU_KERNELS,
  ints: (values, shape) => new CpuTensor(Float32Array.from(values), shape),
  adopt: (t) =>
    t instanceof CpuTensor
      ? { tensor: t, owned: false }
      : { tensor: new CpuTensor(Float32Array.from(t.toInt32Array()), [...t.shape]), owned: true },
  cache: (shape) => new HostKVCache({ ...shape, dtype: "float32" }),
  memory: "host",
  cacheItemBytes: () => 4,
  evaluate: () => {},
};

/** The model's backend. */
export function backendOf(model: Model): ModelBackend<MlxTypes> | ModelBackend<CpuTypes> {
  return model.backend === "mlx" ? MLX_BACKEND : CPU_BACKEND;
}

/** What runOn needs of a model. */
export interface Runnable<B extends BackendTypes> {
  weights: ReadonlyMap<string, B["weight"]>;
  checkpoint: { quantization: QuantConfig | null };
  group?: Group | null;
}

/** Runs `graph` on the backend with `feeds` (and the cache, which the caller checked is of this
 * backend): its outputs. */
export function runOn<B extends BackendTypes>(
  backend: ModelBackend<B>,
  model: Runnable<B>,
  graph: Graph,
  feeds: Record<string, Value<B["tensor"]>>,
  cache: KVCache | HostKVCache | null,
): Record<string, Value<B["tensor"]>> {
  return runGraph(graph, backend.kernels(), {
    weights: model.weights,
    quantization: model.checkpoint.quantization,
    feeds,
    // A KVCache serves Tensor attention and a HostKVCache CpuTensor attention.
    cache: cache as AttentionCache<B["tensor"]> | null,
    group: model.group ?? null,
  });
}
