// What the op table is made of: the backends' value types, the shape of an op definition (input
// names and one kernel per backend), and the input accessors kernels read their inputs with.
import type { TensorData } from "../dtype.ts";
import { CpuTensor } from "../ops/cpu.ts";
import type { Group } from "../ops/distributed.ts";
import type { QuantConfig } from "../quant/config.ts";
import { Tensor } from "../tensor.ts";

/** The tensor kind a backend computes on, and the weights it reads. */
export interface BackendTypes {
  tensor: TensorData;
  weight: TensorData;
}
export interface MlxTypes extends BackendTypes {
  tensor: Tensor;
  weight: Tensor;
}
export interface CpuTypes extends BackendTypes {
  tensor: CpuTensor;
  weight: TensorData;
}

/** What flows along edges: tensors, host numbers (the offset), containers, or nothing (no key mask). */
export type Value<T> = T | number | null | readonly Value<T>[];

/** The KV cache as attention sees it (mlx-lm's cache object): the graph never carries cache buffers. */
export interface AttentionCache<T> {
  /** Writes keys and values [B, kvHeads, T, D] of `layer` at the cache's offset and returns every
   * key and value written so far, [B, kvHeads, offset + T, D] (exact length: no mask needed). */
  updateAndFetch(layer: number, keys: T, values: T): [T, T];
  /** Update and causal attention in one native call (MLX caches): q [B, H, T, D] over the layer's
   * keys after the update; keyMask [B, offset + T] or null. */
  attend?(layer: number, q: T, keys: T, values: T, options: { scale: number; keyMask: T | null }): T;
}

export interface RunContext<B extends BackendTypes> {
  weights: ReadonlyMap<string, B["weight"]>;
  quantization: QuantConfig | null;
  feeds: Readonly<Record<string, Value<B["tensor"]>>>;
  /** null: no cache (one forward over the whole sequence from position 0). */
  cache: AttentionCache<B["tensor"]> | null;
  /** The process group of a tensor-parallel model (all_sum), if any. */
  group?: Group | null | undefined;
}

export type Kernel<A, B extends BackendTypes> = (
  inputs: readonly Value<B["tensor"]>[],
  attrs: A,
  context: RunContext<B>,
) => Value<B["tensor"]>;

/** One op: input names in order (a trailing "?" marks an input that may be left out), both kernels. */
export interface OpDefinition<A, N extends readonly string[] = readonly string[]> {
  inputs: N;
  mlx: Kernel<A, MlxTypes>;
  cpu: Kernel<A, CpuTypes>;
}

/** Declares an op with attributes A: `op<{ eps: number }>()({ inputs: [...], mlx, cpu })`. */
export function op<A = Record<never, never>>() {
  return <const N extends readonly string[]>(definition: OpDefinition<A, N>): OpDefinition<A, N> => definition;
}

/** An op that only moves values around: one generic kernel serves both columns. */
export function structural<A = Record<never, never>>() {
  return <const N extends readonly string[]>(
    inputs: N,
    kernel: <B extends BackendTypes>(
      inputs: readonly Value<B["tensor"]>[],
      attrs: A,
      context: RunContext<B>,
    ) => Value<B["tensor"]>,
  ): OpDefinition<A, N> => ({ inputs, mlx: kernel, cpu: kernel });
}

// ---- input accessors: the executor checks arity; these check kinds, naming the input ----

export function mlx(v: Value<Tensor> | undefined, what: string): Tensor {
  if (!(v instanceof Tensor)) throw new Error(`${what} is not an MLX tensor`);
  return v;
}

export function host(v: Value<CpuTensor> | undefined, what: string): CpuTensor {
  if (!(v instanceof CpuTensor)) throw new Error(`${what} is not a host tensor`);
  return v;
}

export function hostInts(v: Value<CpuTensor> | undefined, what: string): Int32Array {
  return Int32Array.from(host(v, what).data);
}

export function num<T>(v: Value<T> | undefined, what: string): number {
  if (typeof v !== "number") throw new Error(`${what} is not a number`);
  return v;
}

export function list<T>(v: Value<T> | undefined, what: string): readonly Value<T>[] {
  if (!Array.isArray(v)) throw new Error(`${what} is not a container`);
  return v as readonly Value<T>[];
}

export function optional<T>(v: Value<T> | undefined, read: (v: Value<T>, what: string) => T, what: string): T | null {
  return v === undefined || v === null ? null : read(v, what);
}
