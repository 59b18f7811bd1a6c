// The graph's ops, each defined once: its input names, typed attributes, the MLX implementation and
// the CPU reference implementation side by side. Layer ops (rms_norm, apply_rotary_embedding,
// attention_weights, ...) are written out of plain ops so that the rewriter's fused replacements
// (fast_*, native_attention) can be proven equal to them. Adding an op = one entry here (+ its shim
// function; + a rewriter if it is a fused replacement). A table missing an op or a backend column
// does not compile: OPS's type is what GraphBuilder and the executor are typed by.
import type { TensorData } from "../dtype.ts";
import * as core from "../ops/core.ts";
import * as cpu from "../ops/cpu.ts";
import { CpuTensor } from "../ops/cpu.ts";
import * as fast from "../ops/fast.ts";
import { dequantize } from "../ops/quant.ts";
import { type QuantConfig, quantizationFor } from "../quant/config.ts";
import { fusedLinear, linear, linearAdd } from "../quant/linear.ts";
import { packedTriple } from "../quant/weights.ts";
import type { Group } from "../ops/distributed.ts";
import { Tensor } from "../tensor.ts";
import { cpuLinear, denseWeight, toCpu } from "./cpu-weights.ts";
import { attentionMask, rotaryTables, applyRotary } from "./plain.ts";
import type { RopeScaling } from "./rotary.ts";

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

export type Kernel<A, B extends BackendTypes> = (inputs: readonly Value<B["tensor"]>[], attrs: A, context: RunContext<B>) => Value<B["tensor"]>;

/** One op: input names in order (a trailing "?" marks an input that may be left out), both kernels. */
export interface OpDefinition<A, N extends readonly string[] = readonly string[]> {
  inputs: N;
  mlx: Kernel<A, MlxTypes>;
  cpu: Kernel<A, CpuTypes>;
}

/** Declares an op with attributes A: `op<{ eps: number }>()({ inputs: [...], mlx, cpu })`. */
function op<A = Record<never, never>>() {
  return <const N extends readonly string[]>(definition: OpDefinition<A, N>): OpDefinition<A, N> => definition;
}

/** An op that only moves values around: one generic kernel serves both columns. */
function structural<A = Record<never, never>>() {
  return <const N extends readonly string[]>(
    inputs: N,
    kernel: <B extends BackendTypes>(inputs: readonly Value<B["tensor"]>[], attrs: A, context: RunContext<B>) => Value<B["tensor"]>,
  ): OpDefinition<A, N> => ({ inputs, mlx: kernel, cpu: kernel });
}

// ---- input accessors: the executor checks arity; these check kinds, naming the input ----

function mlx(v: Value<Tensor> | undefined, what: string): Tensor {
  if (!(v instanceof Tensor)) throw new Error(`${what} is not an MLX tensor`);
  return v;
}

function host(v: Value<CpuTensor> | undefined, what: string): CpuTensor {
  if (!(v instanceof CpuTensor)) throw new Error(`${what} is not a host tensor`);
  return v;
}

function hostInts(v: Value<CpuTensor> | undefined, what: string): Int32Array {
  return Int32Array.from(host(v, what).data);
}

function num<T>(v: Value<T> | undefined, what: string): number {
  if (typeof v !== "number") throw new Error(`${what} is not a number`);
  return v;
}

function list<T>(v: Value<T> | undefined, what: string): readonly Value<T>[] {
  if (!Array.isArray(v)) throw new Error(`${what} is not a container`);
  return v as readonly Value<T>[];
}

function optional<T>(v: Value<T> | undefined, read: (v: Value<T>, what: string) => T, what: string): T | null {
  return v === undefined || v === null ? null : read(v, what);
}

/** [start, stop] of each of `parts` equal slices of `shape` along `axis` (split). */
function splitBounds(shape: readonly number[], parts: number, axis: number): [number[], number[]][] {
  const a = (axis + shape.length) % shape.length;
  const size = shape[a]! / parts;
  return Array.from({ length: parts }, (_, i) => [
    shape.map((_, d) => (d === a ? i * size : 0)),
    shape.map((n, d) => (d === a ? (i + 1) * size : n)),
  ]);
}

/** [start, stop] of the last position of [B, T, D]. */
function lastPositionBounds(shape: readonly number[]): [number[], number[]] {
  const [b, length, d] = shape as [number, number, number];
  return [[0, length - 1, 0], [b, length, d]];
}

/** Reshape target where 0 copies the input's dimension at that axis (as ONNX's Reshape). */
function reshapeTarget(input: readonly number[], shape: readonly number[]): number[] {
  return shape.map((d, i) => (d === 0 ? input[i]! : d));
}

/** Inverse frequencies of a fast_rope node: from its periods, else base and scale. */
function ropeFrequencies(attrs: FastRopeAttrs): Float32Array {
  if (attrs.periods) return attrs.periods.map((p) => 1 / p);
  return Float32Array.from({ length: attrs.dims / 2 }, (_, i) => attrs.scale / attrs.base ** ((2 * i) / attrs.dims));
}

const mlxPeriods = new WeakMap<Float32Array, Tensor>();

/** llama3 rope periods as an MLX array, made once per attribute value (lives as long as the graph). */
function periodsTensor(periods: Float32Array): Tensor {
  let t = mlxPeriods.get(periods);
  if (!t) mlxPeriods.set(periods, (t = Tensor.from(periods, [periods.length])));
  return t;
}

/** The key mask as the CPU attention reads it: [B, S] ints, 0 hides a key. */
function hostKeyMask(v: Value<CpuTensor> | undefined): Int32Array | null {
  const mask = optional(v, host, "keyMask");
  return mask ? Int32Array.from(mask.data) : null;
}

interface FastRopeAttrs {
  dims: number;
  base: number;
  scale: number;
  /** llama3-scaled periods (1 / inverse frequency), else null: base and scale. */
  periods: Float32Array | null;
}

/** MLX rope's options for a fast_rope node: its attributes and each example's offset. */
function ropeOptions(offset: Tensor, attrs: FastRopeAttrs) {
  return { dims: attrs.dims, base: attrs.base, scale: attrs.scale, offset, freqs: attrs.periods ? periodsTensor(attrs.periods) : null };
}

/** fast_rope on the CPU: q and k [B, H, T, D] rotated from each example's offset [B]. */
function cpuRope(query: CpuTensor, key: CpuTensor, offsets: CpuTensor, attrs: FastRopeAttrs): [CpuTensor, CpuTensor] {
  const [batch, , length] = query.shape as [number, number, number];
  const first = offsets.data;
  const p = Int32Array.from({ length: batch * length }, (_, i) => first[Math.floor(i / length)]! + (i % length));
  const inverse = ropeFrequencies(attrs);
  return [cpu.rope(query, attrs.dims, p, inverse), cpu.rope(key, attrs.dims, p, inverse)];
}

interface AttentionAttrs {
  scale: number;
  causal: boolean;
  /** Sliding window (not applied by any kernel: rewriters leave such attention alone). */
  window?: number;
}

function cpuAttentionOptions(keyMask: Value<CpuTensor> | undefined, offset: Value<CpuTensor> | undefined, attrs: { scale: number; causal: boolean }): cpu.AttentionOptions {
  return { scale: attrs.scale, causal: attrs.causal, offset: num(offset, "offset"), keyMask: hostKeyMask(keyMask) };
}

function rmsNormPlain(x: Tensor, weight: Tensor, eps: number, shift: number): Tensor {
  using squared = core.square(x);
  using meanSquare = core.mean(squared, -1, true);
  using shifted = core.add(meanSquare, eps);
  using inverse = core.rsqrt(shifted);
  using normed = core.multiply(x, inverse);
  if (shift === 0) return core.multiply(normed, weight);
  using w = core.add(weight, shift);
  return core.multiply(normed, w);
}

function layerNormPlain(x: Tensor, weight: Tensor | null, bias: Tensor | null, eps: number): Tensor {
  using mu = core.mean(x, -1, true);
  using centered = core.subtract(x, mu);
  using squared = core.square(centered);
  using variance = core.mean(squared, -1, true);
  using shifted = core.add(variance, eps);
  using inverse = core.rsqrt(shifted);
  const normed = core.multiply(centered, inverse);
  if (!weight && !bias) return normed;
  using n = normed;
  if (!bias) return core.multiply(n, weight!);
  using scaled = weight ? core.multiply(n, weight) : null;
  return core.add(scaled ?? n, bias);
}

export const OPS = {
  // ---- structure ----
  /** A value fed at run time (ids, positions, offset, keyMask). */
  input: structural<{ feed: string }>()([], (_, { feed }, { feeds }) => {
    const value = feeds[feed];
    if (value === undefined) throw new Error(`no feed named '${feed}'`);
    return value;
  }),
  constant: structural<{ value: number | null }>()([], (_, { value }) => value),
  container: structural()(["...items"], (inputs) => inputs),
  /** Element `index` of a container. */
  get: structural<{ index: number }>()(["container"], ([c], { index }) => list(c, "get input")[index] ?? null),
  /** Inference: identity. */
  dropout: structural<{ rate: number }>()(["x"], ([x]) => x ?? null),

  // ---- weights ----
  /** A weight by path (borrowed from the model's map). */
  param: op<{ path: string }>()({
    inputs: [],
    mlx: (_, { path }, { weights }) => {
      const w = weights.get(path);
      if (!w) throw new Error(`missing weight '${path}'`);
      return w;
    },
    cpu: (_, { path }, { weights }) => {
      const w = weights.get(path);
      if (!w) throw new Error(`missing weight '${path}'`);
      return toCpu(w);
    },
  }),
  /** x W^T + b for the layer at `module`; packed layers through quantizedMatmul. */
  dense: op<{ module: string }>()({
    inputs: ["x"],
    mlx: ([x], { module }, { weights, quantization }) => linear(mlx(x, "x"), weights, module, quantization),
    cpu: ([x], { module }, context) => cpuLinear(host(x, "x"), context.weights, module, context.quantization),
  }),
  /** dense(x) + addend (the dense_residual rewrite: a residual added to a layer's output): on MLX
   * one op for packed layers (linearAdd), the same values as the two. */
  dense_add: op<{ module: string }>()({
    inputs: ["x", "addend"],
    mlx: ([x, addend], { module }, { weights, quantization }) => linearAdd(mlx(x, "x"), mlx(addend, "addend"), weights, module, quantization),
    cpu: ([x, addend], { module }, context) => {
      const y = cpuLinear(host(x, "x"), context.weights, module, context.quantization);
      return cpu.add(y, host(addend, "addend"));
    },
  }),
  /** Several dense layers over one input (the fused_projections rewrite): on MLX one matmul over
   * their fused weight when the loader made it (fuseLinears), outputs split; one dense each on the
   * CPU and for layers that could not be fused. A container of the outputs, in `modules` order;
   * output i reshaped to shapes[i] where that is given (0 keeps the output's dimension, as reshape;
   * the single-position graph folds the heads' reshapes in: projectionShapes). */
  dense_fused: op<{ modules: readonly string[]; shapes?: readonly (readonly number[] | null)[] }>()({
    inputs: ["x"],
    mlx: ([x], { modules, shapes }, { weights, quantization }) => {
      const t = mlx(x, "x");
      if (!shapes) return fusedLinear(t, weights, modules, quantization);
      const lead = t.shape.slice(0, -1);
      const targets = modules.map((m, i) => {
        const shape = shapes[i];
        return shape ? reshapeTarget([...lead, weights.get(`${m}.weight`)!.shape[0]!], shape) : null;
      });
      return fusedLinear(t, weights, modules, quantization, targets);
    },
    cpu: ([x], { modules, shapes }, context) =>
      modules.map((m, i) => {
        const y = cpuLinear(host(x, "x"), context.weights, m, context.quantization);
        const shape = shapes?.[i];
        return shape ? cpu.reshape(y, reshapeTarget(y.shape, shape)) : y;
      }),
  }),
  /** Rows of the embedding table at `module` (packed tables: gather, then dequantize the rows). */
  embedding: op<{ module: string }>()({
    inputs: ["ids"],
    mlx: ([ids], { module }, { weights, quantization }) => {
      const indices = mlx(ids, "ids");
      const table = weights.get(`${module}.weight`);
      if (!table) throw new Error(`missing weight '${module}.weight'`);
      if (!weights.has(`${module}.scales`)) return core.take(table, indices, 0);
      const p = quantizationFor(quantization, module);
      if (!p) throw new Error(`'${module}' is packed but the quantization config leaves it dense`);
      const triple = packedTriple(weights, module, p);
      using w = core.take(triple.weight, indices, 0);
      using s = core.take(triple.scales, indices, 0);
      using b = triple.biases ? core.take(triple.biases, indices, 0) : null;
      return dequantize({ weight: w, scales: s, biases: b }, p);
    },
    cpu: ([ids], { module }, { weights, quantization }) => {
      const indices = host(ids, "ids");
      return cpu.take(denseWeight(weights, module, quantization), Int32Array.from(indices.data), indices.shape);
    },
  }),

  // ---- elementwise and layout ----
  add: op()({ inputs: ["a", "b"], mlx: ([a, b]) => core.add(mlx(a, "a"), mlx(b, "b")), cpu: ([a, b]) => cpu.add(host(a, "a"), host(b, "b")) }),
  subtract: op()({
    inputs: ["a", "b"],
    mlx: ([a, b]) => core.subtract(mlx(a, "a"), mlx(b, "b")),
    cpu: ([a, b]) => cpu.subtract(host(a, "a"), host(b, "b")),
  }),
  /** Two inputs, or one container of two (Axon's multiply layer: SwiGLU is matched on it). */
  multiply: op()({
    inputs: ["a", "b?"],
    mlx: (inputs) => {
      const [a, b] = inputs.length === 1 ? list(inputs[0], "multiply input") : inputs;
      return core.multiply(mlx(a, "a"), mlx(b, "b"));
    },
    cpu: (inputs) => {
      const [a, b] = inputs.length === 1 ? list(inputs[0], "multiply input") : inputs;
      return cpu.multiply(host(a, "a"), host(b, "b"));
    },
  }),
  scale: op<{ factor: number }>()({
    inputs: ["x"],
    mlx: ([x], { factor }) => core.multiply(mlx(x, "x"), factor),
    cpu: ([x], { factor }) => cpu.multiply(host(x, "x"), factor),
  }),
  matmul: op()({ inputs: ["a", "b"], mlx: ([a, b]) => core.matmul(mlx(a, "a"), mlx(b, "b")), cpu: ([a, b]) => cpu.matmul(host(a, "a"), host(b, "b")) }),
  /** A 0 in `shape` keeps the input's dimension at that axis. */
  reshape: op<{ shape: readonly number[] }>()({
    inputs: ["x"],
    mlx: ([x], { shape }) => {
      const t = mlx(x, "x");
      // Only a 0 needs the input's shape (a query over FFI).
      return core.reshape(t, shape.includes(0) ? reshapeTarget(t.shape, shape) : shape);
    },
    cpu: ([x], { shape }) => {
      const t = host(x, "x");
      return cpu.reshape(t, reshapeTarget(t.shape, shape));
    },
  }),
  transpose: op<{ axes: readonly number[] }>()({
    inputs: ["x"],
    mlx: ([x], { axes }) => core.transpose(mlx(x, "x"), axes),
    cpu: ([x], { axes }) => cpu.transpose(host(x, "x"), axes),
  }),
  /** Over the last axis, in float32 internally (MLX's precise softmax). */
  softmax: op()({ inputs: ["x"], mlx: ([x]) => core.softmax(mlx(x, "x"), -1, true), cpu: ([x]) => cpu.softmax(host(x, "x")) }),
  silu: op()({ inputs: ["x"], mlx: ([x]) => core.silu(mlx(x, "x")), cpu: ([x]) => cpu.silu(host(x, "x")) }),
  gelu: op<{ approximate: boolean }>()({
    inputs: ["x"],
    mlx: ([x], { approximate }) => core.gelu(mlx(x, "x"), approximate),
    cpu: ([x], { approximate }) => cpu.gelu(host(x, "x"), approximate),
  }),
  /** Equal parts along an axis (GPT-2's fused q/k/v): a container. */
  split: op<{ parts: number; axis: number }>()({
    inputs: ["x"],
    mlx: ([x], { parts, axis }) => {
      const t = mlx(x, "x");
      const size = t.shape[(axis + t.ndim) % t.ndim]! / parts;
      return core.split(t, Array.from({ length: parts }, () => size), axis);
    },
    cpu: ([x], { parts, axis }) => {
      const t = host(x, "x");
      return splitBounds(t.shape, parts, axis).map(([start, stop]) => cpu.slice(t, start, stop));
    },
  }),
  /** Last position only: [B, T, D] -> [B, 1, D]. */
  last_position: op()({
    inputs: ["x"],
    mlx: ([x]) => {
      const t = mlx(x, "x");
      return core.slice(t, ...lastPositionBounds(t.shape));
    },
    cpu: ([x]) => {
      const t = host(x, "x");
      return cpu.slice(t, ...lastPositionBounds(t.shape));
    },
  }),
  /** GQA: each kv head repeated for its query heads, [B, Hkv, S, D] -> [B, Hkv * repeats, S, D]. */
  repeat_interleave: op<{ repeats: number; axis: number }>()({
    inputs: ["x"],
    mlx: ([x], { repeats, axis }) => (repeats === 1 ? mlx(x, "x") : core.repeat(mlx(x, "x"), repeats, axis)),
    cpu: ([x], { repeats }) => cpu.repeatHeads(host(x, "x"), repeats),
  }),

  // ---- layers, in plain form ----
  /** x * rsqrt(mean(x^2) + eps) * (weight + shift) over the last axis (Gemma: shift 1). */
  rms_norm: op<{ eps: number; shift: number }>()({
    inputs: ["x", "weight"],
    mlx: ([x, weight], { eps, shift }) => rmsNormPlain(mlx(x, "x"), mlx(weight, "weight"), eps, shift),
    cpu: ([x, weight], { eps, shift }) => {
      const w = host(weight, "weight");
      return cpu.rmsNorm(host(x, "x"), shift === 0 ? w : cpu.add(w, shift), eps);
    },
  }),
  layer_norm: op<{ eps: number; axis: number }>()({
    inputs: ["x", "weight?", "bias?"],
    mlx: ([x, weight, bias], { eps }) => layerNormPlain(mlx(x, "x"), optional(weight, mlx, "weight"), optional(bias, mlx, "bias"), eps),
    cpu: ([x, weight, bias], { eps }) => cpu.layerNorm(host(x, "x"), optional(weight, host, "weight"), optional(bias, host, "bias"), eps),
  }),
  /** Rotate-half RoPE on q and k [B, H, T, D] at positions [B, T]: a container [q, k]. */
  apply_rotary_embedding: op<{ dims: number; base: number; scaling: RopeScaling }>()({
    inputs: ["q", "k", "positions", "frequencies"],
    mlx: ([q, k, positions, frequencies], { dims }) => {
      const query = mlx(q, "q");
      const [cos, sin] = rotaryTables(mlx(positions, "positions"), mlx(frequencies, "frequencies"), query.dtype);
      using c = cos;
      using s = sin;
      return [applyRotary(query, c, s, dims), applyRotary(mlx(k, "k"), c, s, dims)];
    },
    cpu: ([q, k, positions, frequencies], { dims }) => {
      const p = hostInts(positions, "positions");
      const inverse = host(frequencies, "frequencies").data;
      return [cpu.rope(host(q, "q"), dims, p, inverse), cpu.rope(host(k, "k"), dims, p, inverse)];
    },
  }),
  /** The layer's keys and values so far: [keys, values]. Writes k, v [B, kvHeads, T, D] into the
   * KV cache at its offset when there is one; without a cache, k and v themselves. */
  /** The sum of x over the model's process group: after a projection whose input features are split
   * across the ranks (tensor parallelism, mlx-lm's sharded-to-all). */
  all_sum: op()({
    inputs: ["x"],
    mlx: ([x], _, { group }) => {
      if (!group) throw new Error("all_sum: this graph is tensor-parallel; run it with its model's process group");
      return group.allSum(mlx(x, "x"));
    },
    cpu: () => {
      throw new Error("all_sum: tensor-parallel models run on the MLX backend");
    },
  }),
  cache_update: op<{ layer: number }>()({
    inputs: ["k", "v"],
    mlx: ([k, v], { layer }, { cache }) => {
      const [key, value] = [mlx(k, "k"), mlx(v, "v")];
      return cache ? cache.updateAndFetch(layer, key, value) : [key, value];
    },
    cpu: ([k, v], { layer }, { cache }) => {
      const [key, value] = [host(k, "k"), host(v, "v")];
      return cache ? cache.updateAndFetch(layer, key, value) : [key, value];
    },
  }),
  /** softmax(q k^T * scale + mask), q [B, H, T, D], k [B, H, S, D]; the mask hides keys after each
   * query's position (causal, queries start at `offset`) and keys the key mask [B, S] zeroes. */
  attention_weights: op<AttentionAttrs>()({
    inputs: ["q", "k", "keyMask", "offset"],
    mlx: ([q, k, keyMask, offset], { scale, causal }) => {
      const query = mlx(q, "q");
      const key = mlx(k, "k");
      const [batch, , queries] = query.shape as [number, number, number, number];
      using kt = core.transpose(key, [0, 1, 3, 2]);
      using raw = core.matmul(query, kt);
      using scores = core.multiply(raw, scale);
      const mask = attentionMask(batch, queries, key.shape[2]!, num(offset, "offset"), causal, optional(keyMask, mlx, "keyMask"), query.dtype);
      using masked = mask ? core.add(scores, mask) : null;
      mask?.dispose();
      return core.softmax(masked ?? scores, -1, true);
    },
    cpu: ([q, k, keyMask, offset], attrs) => cpu.attentionWeights(host(q, "q"), host(k, "k"), cpuAttentionOptions(keyMask, offset, attrs)),
  }),
  attention_output: op()({
    inputs: ["weights", "v"],
    mlx: ([weights, v]) => core.matmul(mlx(weights, "weights"), mlx(v, "v")),
    cpu: ([weights, v]) => cpu.matmul(host(weights, "weights"), host(v, "v")),
  }),

  // ---- fused replacements made by the rewriter (src/rewrite/) ----
  fast_rms_norm: op<{ eps: number }>()({
    inputs: ["x", "weight"],
    mlx: ([x, weight], { eps }) => fast.rmsNorm(mlx(x, "x"), mlx(weight, "weight"), eps),
    cpu: ([x, weight], { eps }) => cpu.rmsNorm(host(x, "x"), host(weight, "weight"), eps),
  }),
  fast_layer_norm: op<{ eps: number }>()({
    inputs: ["x", "weight?", "bias?"],
    mlx: ([x, weight, bias], { eps }) => fast.layerNorm(mlx(x, "x"), optional(weight, mlx, "weight"), optional(bias, mlx, "bias"), eps),
    cpu: ([x, weight, bias], { eps }) => cpu.layerNorm(host(x, "x"), optional(weight, host, "weight"), optional(bias, host, "bias"), eps),
  }),
  /** Each example's first position [B] from positions [B, T]: its last position - (T - 1). The last
   * position is real even in a left-padded prompt (padding slots carry clamped positions), so
   * positions are assumed sequential over the real tokens. One per graph, shared by every fast_rope. */
  rope_offset: op()({
    inputs: ["positions"],
    mlx: ([positions]) => {
      const p = mlx(positions, "positions");
      const [batch, length] = p.shape as [number, number];
      using last = core.slice(p, [0, length - 1], [batch, length]);
      using flat = core.reshape(last, [batch]);
      return core.subtract(flat, length - 1);
    },
    cpu: ([positions]) => {
      const p = host(positions, "positions");
      const [batch, length] = p.shape as [number, number];
      return new CpuTensor(Float32Array.from({ length: batch }, (_, b) => p.data[b * length + length - 1]! - (length - 1)), [batch]);
    },
  }),
  /** MLX rope on q and k [B, H, T, D] from each example's offset [B] (rope_offset): a container [q, k]. */
  fast_rope: op<FastRopeAttrs>()({
    inputs: ["q", "k", "offsets"],
    mlx: ([q, k, offsets], attrs) => {
      const options = ropeOptions(mlx(offsets, "offsets"), attrs);
      return [fast.rope(mlx(q, "q"), options), fast.rope(mlx(k, "k"), options)];
    },
    cpu: ([q, k, offsets], attrs) => cpuRope(host(q, "q"), host(k, "k"), host(offsets, "offsets"), attrs),
  }),
  /** fast_rms_norm of q and of k (each with its weight), then fast_rope of both (Qwen3's q/k norms):
   * one kernel on a CUDA GPU, MLX's four ops elsewhere. A container [q, k]. */
  fast_qk_norm_rope: op<FastRopeAttrs & { eps: number }>()({
    inputs: ["q", "k", "q_weight", "k_weight", "offsets"],
    mlx: ([q, k, qWeight, kWeight, offsets], attrs) =>
      fast.qkNormRope(mlx(q, "q"), mlx(k, "k"), mlx(qWeight, "q_weight"), mlx(kWeight, "k_weight"), attrs.eps, ropeOptions(mlx(offsets, "offsets"), attrs)),
    cpu: ([q, k, qWeight, kWeight, offsets], attrs) => {
      const normed = (x: CpuTensor, weight: CpuTensor) => cpu.rmsNorm(x, weight, attrs.eps);
      return cpuRope(normed(host(q, "q"), host(qWeight, "q_weight")), normed(host(k, "k"), host(kWeight, "k_weight")), host(offsets, "offsets"), attrs);
    },
  }),
  /** MLX sdpa over q [B, H, T, D] and k, v [B, Hkv, S, D] (GQA native). Pure "causal" (or no mask
   * for one query) when the keys end at the last query's position and nothing is padded: the fast
   * path; otherwise the combined additive mask. */
  fast_sdpa: op<{ scale: number; causal: boolean }>()({
    inputs: ["q", "k", "v", "keyMask", "offset"],
    mlx: ([q, k, v, keyMask, offset], { scale, causal }) => {
      const query = mlx(q, "q");
      const key = mlx(k, "k");
      const [batch, , queries] = query.shape as [number, number, number, number];
      const keys = key.shape[2]!;
      const at = num(offset, "offset");
      const padding = optional(keyMask, mlx, "keyMask");
      // Keys end at the query's position (a single query sees every key the cache returns, a
      // rotating cache's slots included): no mask needed, MLX's fast path.
      if (padding === null && (!causal || keys === at + queries || queries === 1)) {
        return fast.scaledDotProductAttention(query, key, mlx(v, "v"), { scale, mask: causal && queries > 1 ? "causal" : null });
      }
      using mask = attentionMask(batch, queries, keys, at, causal, padding, query.dtype);
      return fast.scaledDotProductAttention(query, key, mlx(v, "v"), { scale, mask });
    },
    cpu: ([q, k, v, keyMask, offset], attrs) => cpu.attention(host(q, "q"), host(k, "k"), host(v, "v"), cpuAttentionOptions(keyMask, offset, attrs)),
  }),
  fast_swiglu: op()({
    inputs: ["gate", "up"],
    mlx: ([gate, up]) => fast.swiglu(mlx(gate, "gate"), mlx(up, "up")),
    cpu: ([gate, up]) => cpu.swiglu(host(gate, "gate"), host(up, "up")),
  }),
  /** cache_update + causal attention of q over the result: one shim call where the cache offers it
   * (MLX), else the same two steps. Without a cache: causal attention over k, v from position 0. */
  native_attention: op<{ layer: number; scale: number }>()({
    inputs: ["q", "k", "v", "keyMask", "offset"],
    mlx: ([q, k, v, keyMask, offset], { layer, scale }, { cache }) => {
      const [query, key, value] = [mlx(q, "q"), mlx(k, "k"), mlx(v, "v")];
      const padding = optional(keyMask, mlx, "keyMask");
      if (cache?.attend) return cache.attend(layer, query, key, value, { scale, keyMask: padding });
      const [keys, values] = cache ? cache.updateAndFetch(layer, key, value) : [key, value];
      const at = num(offset, "offset");
      const queries = query.shape[2]!;
      if (padding === null) return fast.scaledDotProductAttention(query, keys, values, { scale, mask: queries > 1 ? "causal" : null });
      using mask = attentionMask(query.shape[0]!, queries, keys.shape[2]!, at, true, padding, query.dtype);
      return fast.scaledDotProductAttention(query, keys, values, { scale, mask });
    },
    cpu: ([q, k, v, keyMask, offset], { layer, scale }, { cache }) => {
      const [key, value] = [host(k, "k"), host(v, "v")];
      const [keys, values] = cache ? cache.updateAndFetch(layer, key, value) : [key, value];
      return cpu.attention(host(q, "q"), keys, values, cpuAttentionOptions(keyMask, offset, { scale, causal: true }));
    },
  }),
} satisfies Record<string, OpDefinition<never>>;

export type OpName = keyof typeof OPS;
export type AttrsOf<K extends OpName> = (typeof OPS)[K] extends OpDefinition<infer A, readonly string[]> ? A : never;
export type InputNamesOf<K extends OpName> = (typeof OPS)[K]["inputs"];

/** One backend's column of the table: a kernel for every op. */
export type KernelTable<B extends BackendTypes> = { readonly [K in OpName]: Kernel<AttrsOf<K>, B> };

function column<B extends BackendTypes>(pick: (definition: OpDefinition<never>) => Kernel<never, B>): KernelTable<B> {
  return Object.fromEntries(Object.entries(OPS).map(([name, definition]) => [name, pick(definition as OpDefinition<never>)])) as unknown as KernelTable<B>;
}

export const MLX_KERNELS: KernelTable<MlxTypes> = column<MlxTypes>((d) => d.mlx);
export const CPU_KERNELS: KernelTable<CpuTypes> = column<CpuTypes>((d) => d.cpu);
