// The graph's ops, each defined once: its input names, typed attributes, the MLX implementation and
// the CPU reference implementation side by side. Layer ops (rms_norm, apply_rotary_embedding,
// attention_weights, ...) are written out of plain ops so that the rewriter's fused replacements
// (fast_*, native_attention) can be proven equal to them. Adding an op = one entry here (+ its shim
// function; + a rewriter if it is a fused replacement). A table missing an op or a backend column
// does not compile: OPS's type is what GraphBuilder and the executor are typed by.
import * as core from "../ops/core.ts";
import * as cpu from "../ops/cpu.ts";
import type { CpuTensor } from "../ops/cpu.ts";
import { dequantize } from "../ops/quant.ts";
import { quantizationFor } from "../quant/config.ts";
import {
  fusedLinear,
  fusedLinearQkNormRope,
  fusedLinearSwiglu,
  linear,
  linearAdd,
  linearAddNorm,
} from "../quant/linear.ts";
import { packedTriple } from "../quant/weights.ts";
import { cpuLinear, denseWeight, toCpu } from "./cpu-weights.ts";
import { cpuRope, type FastRopeAttrs, LAYER_OPS, ropeOptions } from "./layer-ops.ts";
import {
  type BackendTypes,
  type CpuTypes,
  host,
  type Kernel,
  list,
  mlx,
  type MlxTypes,
  op,
  type OpDefinition,
  structural,
} from "./op-kit.ts";

export type {
  AttentionCache,
  BackendTypes,
  CpuTypes,
  Kernel,
  MlxTypes,
  OpDefinition,
  RunContext,
  Value,
} from "./op-kit.ts";

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
  return [
    [0, length - 1, 0],
    [b, length, d],
  ];
}

/** Reshape target where 0 copies the input's dimension at that axis (as ONNX's Reshape). */
function reshapeTarget(input: readonly number[], shape: readonly number[]): number[] {
  return shape.map((d, i) => (d === 0 ? input[i]! : d));
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
    mlx: ([x, addend], { module }, { weights, quantization }) =>
      linearAdd(mlx(x, "x"), mlx(addend, "addend"), weights, module, quantization),
    cpu: ([x, addend], { module }, context) => {
      const y = cpuLinear(host(x, "x"), context.weights, module, context.quantization);
      return cpu.add(y, host(addend, "addend"));
    },
  }),
  /** [dense_add(x, addend), fast_rms_norm of it with `weight`] (the dense_residual_norm rewrite: a
   * residual sum and the next norm of it): on MLX one op for packed layers (linearAddNorm; on a CUDA
   * GPU the decode-time matvec writes the norm too). A container [sum, normed]. */
  dense_add_norm: op<{ module: string; eps: number }>()({
    inputs: ["x", "addend", "weight"],
    mlx: ([x, addend, weight], { module, eps }, { weights, quantization }) =>
      linearAddNorm(mlx(x, "x"), mlx(addend, "addend"), mlx(weight, "weight"), eps, weights, module, quantization),
    cpu: ([x, addend, weight], { module, eps }, context) => {
      const y = cpuLinear(host(x, "x"), context.weights, module, context.quantization);
      const sum = cpu.add(y, host(addend, "addend"));
      return [sum, cpu.rmsNorm(sum, host(weight, "weight"), eps)];
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
  /** fast_swiglu of an MLP's gate and up layers over one input (the fused_swiglu rewrite): on MLX one
   * op for their fused packed weight (fusedLinearSwiglu; on a CUDA GPU the decode-time matvec writes
   * the swiglu of the two halves it sums), else the layers and the swiglu. */
  dense_fused_swiglu: op<{ gate: string; up: string }>()({
    inputs: ["x"],
    mlx: ([x], { gate, up }, { weights, quantization }) =>
      fusedLinearSwiglu(mlx(x, "x"), weights, gate, up, quantization),
    cpu: ([x], { gate, up }, context) =>
      cpu.swiglu(
        cpuLinear(host(x, "x"), context.weights, gate, context.quantization),
        cpuLinear(host(x, "x"), context.weights, up, context.quantization),
      ),
  }),
  /** dense_fused over an attention's q, k and v layers in their heads' shapes (the single-position
   * graph's, projectionShapes), then fast_qk_norm_rope of q and k (the qk_norm_projection rewrite):
   * [q, k, v]. On MLX one op for their fused packed weight (fusedLinearQkNormRope; on a CUDA GPU, for
   * one row, the matvec writes q and k normed and rotated), else the layers and the norm + rope. */
  dense_fused_qk_norm_rope: op<
    FastRopeAttrs & {
      eps: number;
      modules: readonly [string, string, string];
      shapes: readonly [readonly number[], readonly number[], readonly number[]];
    }
  >()({
    inputs: ["x", "q_weight", "k_weight", "offsets"],
    mlx: ([x, qWeight, kWeight, offsets], attrs, { weights, quantization }) => {
      const t = mlx(x, "x");
      const lead = t.shape.slice(0, -1);
      const targets = attrs.modules.map((m, i) =>
        reshapeTarget([...lead, weights.get(`${m}.weight`)!.shape[0]!], attrs.shapes[i]!),
      ) as [number[], number[], number[]];
      return fusedLinearQkNormRope(
        t,
        weights,
        attrs.modules,
        targets,
        mlx(qWeight, "q_weight"),
        mlx(kWeight, "k_weight"),
        attrs.eps,
        ropeOptions(mlx(offsets, "offsets"), attrs),
        quantization,
      );
    },
    cpu: ([x, qWeight, kWeight, offsets], attrs, context) => {
      const [q, k, v] = attrs.modules.map((m, i) => {
        const y = cpuLinear(host(x, "x"), context.weights, m, context.quantization);
        return cpu.reshape(y, reshapeTarget(y.shape, attrs.shapes[i]!));
      }) as [CpuTensor, CpuTensor, CpuTensor];
      const normed = (t: CpuTensor, weight: CpuTensor) => cpu.rmsNorm(t, weight, attrs.eps);
      const [qr, kr] = cpuRope(
        normed(q, host(qWeight, "q_weight")),
        normed(k, host(kWeight, "k_weight")),
        host(offsets, "offsets"),
        attrs,
      );
      return [qr, kr, v];
    },
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
  add: op()({
    inputs: ["a", "b"],
    mlx: ([a, b]) => core.add(mlx(a, "a"), mlx(b, "b")),
    cpu: ([a, b]) => cpu.add(host(a, "a"), host(b, "b")),
  }),
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
  matmul: op()({
    inputs: ["a", "b"],
    mlx: ([a, b]) => core.matmul(mlx(a, "a"), mlx(b, "b")),
    cpu: ([a, b]) => cpu.matmul(host(a, "a"), host(b, "b")),
  }),
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
  softmax: op()({
    inputs: ["x"],
    mlx: ([x]) => core.softmax(mlx(x, "x"), -1, true),
    cpu: ([x]) => cpu.softmax(host(x, "x")),
  }),
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
      return core.split(
        t,
        Array.from({ length: parts }, () => size),
        axis,
      );
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
  ...LAYER_OPS,
} satisfies Record<string, OpDefinition<never>>;

export type OpName = keyof typeof OPS;
export type AttrsOf<K extends OpName> = (typeof OPS)[K] extends OpDefinition<infer A, readonly string[]> ? A : never;
export type InputNamesOf<K extends OpName> = (typeof OPS)[K]["inputs"];

/** One backend's column of the table: a kernel for every op. */
export type KernelTable<B extends BackendTypes> = { readonly [K in OpName]: Kernel<AttrsOf<K>, B> };

function column<B extends BackendTypes>(pick: (definition: OpDefinition<never>) => Kernel<never, B>): KernelTable<B> {
  return Object.fromEntries(
    Object.entries(OPS).map(([name, definition]) => [name, pick(definition as OpDefinition<never>)]),
  ) as unknown as KernelTable<B>;
}

export const MLX_KERNELS: KernelTable<MlxTypes> = column<MlxTypes>((d) => d.mlx);
export const CPU_KERNELS: KernelTable<CpuTypes> = column<CpuTypes>((d) => d.cpu);
