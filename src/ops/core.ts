// Plain MLX ops over Tensor. Each returns a new Tensor the caller owns.
import { check, native, outPointer, outWords, pointerFromWord } from "../native/ffi.ts";
import { checkedShape, dtypeCode, type DType, itemSize } from "../dtype.ts";
import { checkAllocation } from "../native/device.ts";
import { Tensor } from "../tensor.ts";
import { checkOptionNames } from "../options.ts";
import { axisOf, call, handleOf, int32, ints, type Native } from "./call.ts";

export { putAlongAxis, scatterAddAxis, take, takeAlongAxis } from "./gather.ts";

type BinaryName =
  | "mlx_add"
  | "mlx_subtract"
  | "mlx_multiply"
  | "mlx_divide"
  | "mlx_maximum"
  | "mlx_minimum"
  | "mlx_power"
  | "mlx_greater"
  | "mlx_greater_equal"
  | "mlx_less_equal"
  | "mlx_equal"
  | "mlx_matmul"
  | "mlx_bitwise_xor"
  | "mlx_right_shift";
type UnaryName =
  | "mlx_rsqrt"
  | "mlx_sqrt"
  | "mlx_exp"
  | "mlx_log"
  | "mlx_negative"
  | "mlx_square"
  | "mlx_tanh"
  | "mlx_sigmoid"
  | "mlx_erf"
  | "mlx_cos"
  | "mlx_sin"
  | "mlx_silu";

/** A binary op; a number operand becomes a scalar of the tensor operand's dtype. Two tensors take
 * the short way: no closure, no scalar, the shim function looked up once. */
function binary(symbol: BinaryName, op: string) {
  let fn: ((out: Uint32Array, a: unknown, b: unknown) => number) | undefined;
  return (a: Tensor | number, b: Tensor | number): Tensor => {
    if (a instanceof Tensor && b instanceof Tensor) {
      const ha = handleOf(a, op, "a");
      const hb = handleOf(b, op, "b");
      check((fn ??= native()[symbol])(outWords, ha, hb), op);
      return new Tensor(outPointer());
    }
    if (typeof a === "number" && typeof b === "number") throw new Error(`${op}: at least one operand must be a Tensor`);
    using sa = typeof a === "number" ? Tensor.scalar(a, (b as Tensor).dtype) : undefined;
    using sb = typeof b === "number" ? Tensor.scalar(b, (a as Tensor).dtype) : undefined;
    const ha = handleOf(sa ?? (a as Tensor), op, "a");
    const hb = handleOf(sb ?? (b as Tensor), op, "b");
    return call(op, (lib: Native, out) => lib[symbol](out, ha, hb));
  };
}

function unary(symbol: UnaryName, op: string) {
  let fn: ((out: Uint32Array, a: unknown) => number) | undefined;
  return (a: Tensor): Tensor => {
    const h = handleOf(a, op, "a");
    check((fn ??= native()[symbol])(outWords, h), op);
    return new Tensor(outPointer());
  };
}

export const add = binary("mlx_add", "add");
export const subtract = binary("mlx_subtract", "subtract");
export const multiply = binary("mlx_multiply", "multiply");
export const divide = binary("mlx_divide", "divide");
export const maximum = binary("mlx_maximum", "maximum");
export const power = binary("mlx_power", "power");
export const minimum = binary("mlx_minimum", "minimum");
export const greater = binary("mlx_greater", "greater");
export const greaterEqual = binary("mlx_greater_equal", "greaterEqual");
export const lessEqual = binary("mlx_less_equal", "lessEqual");
export const equal = binary("mlx_equal", "equal");
/** Bitwise exclusive or of integers. */
export const bitwiseXor = binary("mlx_bitwise_xor", "bitwiseXor");
/** a >> b for integers (logical for unsigned dtypes). */
export const rightShift = binary("mlx_right_shift", "rightShift");
export const matmul = binary("mlx_matmul", "matmul");

export const rsqrt = unary("mlx_rsqrt", "rsqrt");
export const sqrt = unary("mlx_sqrt", "sqrt");
export const exp = unary("mlx_exp", "exp");
export const log = unary("mlx_log", "log");
export const negative = unary("mlx_negative", "negative");
export const square = unary("mlx_square", "square");
export const tanh = unary("mlx_tanh", "tanh");
export const sigmoid = unary("mlx_sigmoid", "sigmoid");
export const erf = unary("mlx_erf", "erf");
export const cos = unary("mlx_cos", "cos");
export const sin = unary("mlx_sin", "sin");
/** x * sigmoid(x) */
export const silu = unary("mlx_silu", "silu");

/** GELU; `approximate` uses the tanh form (HF "gelu_new"/"gelu_pytorch_tanh"). */
export function gelu(a: Tensor, approximate = false): Tensor {
  const h = handleOf(a, "gelu", "a");
  return call("gelu", (lib, out) => lib.mlx_gelu(out, h, approximate ? 1 : 0));
}

export function where(condition: Tensor, a: Tensor, b: Tensor): Tensor {
  const hc = handleOf(condition, "where", "condition");
  const ha = handleOf(a, "where", "a");
  const hb = handleOf(b, "where", "b");
  return call("where", (lib, out) => lib.mlx_where(out, hc, ha, hb));
}

/** c + a @ b */
export function addmm(c: Tensor, a: Tensor, b: Tensor): Tensor {
  const hc = handleOf(c, "addmm", "c");
  const ha = handleOf(a, "addmm", "a");
  const hb = handleOf(b, "addmm", "b");
  return call("addmm", (lib, out) => lib.mlx_addmm(out, hc, ha, hb));
}

export function astype(a: Tensor, dtype: DType): Tensor {
  const h = handleOf(a, "astype", "a");
  const code = dtypeCode(dtype);
  return call(
    () => `astype(${dtype})`,
    (lib, out) => lib.mlx_astype(out, h, code),
  );
}

export function reshape(a: Tensor, shape: readonly number[]): Tensor {
  const h = handleOf(a, "reshape", "a");
  return call(
    () => `reshape(${a.describe()} -> [${shape.join(",")}])`,
    (lib, out) => lib.mlx_reshape(out, h, ints(shape), shape.length),
  );
}

/** Permutes axes; default reverses them. */
export function transpose(a: Tensor, axes?: readonly number[]): Tensor {
  const h = handleOf(a, "transpose", "a");
  const perm = axes ?? a.shape.map((_, i) => a.ndim - 1 - i);
  return call(
    () => `transpose(${a.describe()}, [${perm.join(",")}])`,
    (lib, out) => lib.mlx_transpose(out, h, ints(perm), perm.length),
  );
}

/** Strided slice over every axis: start/stop/strides have one entry per dimension. */
export function slice(
  a: Tensor,
  start: readonly number[],
  stop: readonly number[],
  strides?: readonly number[],
): Tensor {
  const h = handleOf(a, "slice", "a");
  const step = strides ?? start.map(() => 1);
  if (start.length !== a.ndim || stop.length !== a.ndim || step.length !== a.ndim) {
    throw new Error(`slice: start/stop/strides need ${a.ndim} entries for ${a.describe()}`);
  }
  return call(
    () => `slice(${a.describe()})`,
    (lib, out) => lib.mlx_slice(out, h, ints(start), ints(stop), ints(step), start.length),
  );
}

/** A row-major copy of `a` (a view gets a buffer of its own, so it no longer holds its source's). */
export function contiguous(a: Tensor): Tensor {
  const h = handleOf(a, "contiguous", "a");
  return call(
    () => `contiguous(${a.describe()})`,
    (lib, out) => lib.mlx_contiguous(out, h),
  );
}

/** Returns `src` with `src[start:stop:strides] = update`. */
export function sliceUpdate(
  src: Tensor,
  update: Tensor,
  start: readonly number[],
  stop: readonly number[],
  strides?: readonly number[],
): Tensor {
  const hs = handleOf(src, "sliceUpdate", "src");
  const hu = handleOf(update, "sliceUpdate", "update");
  const step = strides ?? start.map(() => 1);
  if (start.length !== src.ndim || stop.length !== src.ndim || step.length !== src.ndim) {
    throw new Error(`sliceUpdate: start/stop/strides need ${src.ndim} entries for ${src.describe()}`);
  }
  return call(
    () => `sliceUpdate(${src.describe()}, ${update.describe()})`,
    (lib, out) => lib.mlx_slice_update(out, hs, hu, ints(start), ints(stop), ints(step), start.length),
  );
}

export function concatenate(arrays: readonly Tensor[], axis = 0): Tensor {
  if (arrays.length === 0) throw new Error("concatenate: no arrays");
  const handles = new BigUint64Array(arrays.length);
  arrays.forEach((t, i) => {
    handles[i] = BigInt(handleOf(t, "concatenate", `arrays[${i}]`));
  });
  const ax = int32(axis, "concatenate", "axis");
  return call("concatenate", (lib, out) => lib.mlx_concatenate(out, handles, arrays.length, ax));
}

/** `a` cut along `axis` into parts of the given sizes (one MLX Split: views, no copy). */
export function split(a: Tensor, sizes: readonly number[], axis = -1): Tensor[] {
  const ax = axisOf(axis, a.ndim, "split");
  const total = sizes.reduce((n, s) => n + s, 0);
  if (sizes.some((s) => !Number.isInteger(s) || s < 0) || total !== a.shape[ax]) {
    throw new Error(`split: sizes [${sizes.join(", ")}] do not add up to axis ${axis} of ${a.describe()}`);
  }
  let at = 0;
  const cuts = sizes.slice(0, -1).map((s) => (at += s));
  const out = new BigUint64Array(sizes.length);
  const h = handleOf(a, "split", "a");
  check(native().mlx_split(out, sizes.length, h, ints(cuts), ax), () => `split(${a.describe()})`);
  return Array.from(out, (w) => new Tensor(pointerFromWord(w)));
}

/** Repeats each element `repeats` times along `axis` (numpy/torch repeat_interleave). */
export function repeat(a: Tensor, repeats: number, axis: number): Tensor {
  const h = handleOf(a, "repeat", "a");
  const count = int32(repeats, "repeat", "repeats");
  if (count < 0) throw new Error(`repeat: repeats must be >= 0, got ${repeats}`);
  const ax = int32(axis, "repeat", "axis");
  return call("repeat", (lib, out) => lib.mlx_repeat(out, h, count, ax));
}

export function softmax(a: Tensor, axis = -1, precise = false): Tensor {
  const h = handleOf(a, "softmax", "a");
  const ax = int32(axis, "softmax", "axis");
  return call("softmax", (lib, out) => lib.mlx_softmax(out, h, ax, precise ? 1 : 0));
}

type ReduceName = "mlx_mean" | "mlx_sum" | "mlx_max";
function reduction(symbol: ReduceName, op: string) {
  return (a: Tensor, axes: number | readonly number[] = [], keepdims = false): Tensor => {
    const h = handleOf(a, op, "a");
    const list = typeof axes === "number" ? [axes] : axes.length > 0 ? axes : a.shape.map((_, i) => i);
    return call(op, (lib, out) => lib[symbol](out, h, ints(list), list.length, keepdims ? 1 : 0));
  };
}

export const mean = reduction("mlx_mean", "mean");
export const sum = reduction("mlx_sum", "sum");
export const max = reduction("mlx_max", "max");

export function argmax(a: Tensor, axis = -1, keepdims = false): Tensor {
  const h = handleOf(a, "argmax", "a");
  const ax = int32(axis, "argmax", "axis");
  return call("argmax", (lib, out) => lib.mlx_argmax(out, h, ax, keepdims ? 1 : 0));
}

/** `a` sorted ascending along `axis`. */
export function sort(a: Tensor, axis = -1): Tensor {
  const h = handleOf(a, "sort", "a");
  const ax = int32(axis, "sort", "axis");
  return call("sort", (lib, out) => lib.mlx_sort(out, h, ax));
}

/** Indices (uint32) that sort `a` ascending along `axis`. */
export function argsort(a: Tensor, axis = -1): Tensor {
  const h = handleOf(a, "argsort", "a");
  const ax = int32(axis, "argsort", "axis");
  return call("argsort", (lib, out) => lib.mlx_argsort(out, h, ax));
}

/** Indices (uint32) that put `a`'s kth smallest element along `axis` in its sorted place, smaller
 * ones before it and the rest after (each side unordered). */
export function argpartition(a: Tensor, kth: number, axis = -1): Tensor {
  const h = handleOf(a, "argpartition", "a");
  const k = int32(kth, "argpartition", "kth");
  const ax = int32(axis, "argpartition", "axis");
  return call("argpartition", (lib, out) => lib.mlx_argpartition(out, h, k, ax));
}

/** Running sums along `axis` (inclusive unless told otherwise). */
export function cumsum(a: Tensor, axis = -1, options: { reverse?: boolean; inclusive?: boolean } = {}): Tensor {
  checkOptionNames("cumsum", options, ["reverse", "inclusive"]);
  const h = handleOf(a, "cumsum", "a");
  const { reverse = false, inclusive = true } = options;
  const ax = int32(axis, "cumsum", "axis");
  return call("cumsum", (lib, out) => lib.mlx_cumsum(out, h, ax, reverse ? 1 : 0, inclusive ? 1 : 0));
}

/** log(sum(exp(a))) over `axes`, computed stably. */
export function logsumexp(a: Tensor, axes: number | readonly number[] = [], keepdims = false): Tensor {
  const h = handleOf(a, "logsumexp", "a");
  const list = typeof axes === "number" ? [axes] : axes.length > 0 ? axes : a.shape.map((_, i) => i);
  return call("logsumexp", (lib, out) => lib.mlx_logsumexp(out, h, ints(list), list.length, keepdims ? 1 : 0));
}

export function arange(start: number, stop: number, step = 1, dtype: DType = "float32"): Tensor {
  const code = dtypeCode(dtype);
  for (const [name, value] of [
    ["start", start],
    ["stop", stop],
    ["step", step],
  ] as const) {
    if (typeof value !== "number" || !Number.isFinite(value))
      throw new Error(`arange: ${name} must be a finite number, got ${String(value)}`);
  }
  if (step === 0) throw new Error("arange: step must not be 0");
  const length = Math.max(0, Math.ceil((stop - start) / step));
  checkAllocation(`arange(${start}, ${stop}, ${step})`, length * itemSize(dtype));
  return call("arange", (lib, out) => lib.mlx_arange(out, start, stop, step, code));
}

/** Zeros of a shape, made on MLX's device (nothing copied from the host). */
export function zeros(shape: readonly number[], dtype: DType = "float32"): Tensor {
  const code = dtypeCode(dtype);
  checkAllocation(
    `zeros([${shape.join(", ")}], ${dtype})`,
    checkedShape(shape, "zeros").reduce((a, b) => a * b, 1) * itemSize(dtype),
  );
  return call(
    () => `zeros([${shape.join(",")}], ${dtype})`,
    (lib, out) => lib.mlx_zeros(out, ints(shape), shape.length, code),
  );
}

function handlesOf(tensors: readonly Tensor[], op: string): BigUint64Array {
  const handles = new BigUint64Array(tensors.length);
  tensors.forEach((t, i) => {
    handles[i] = BigInt(handleOf(t, op, `tensors[${i}]`));
  });
  return handles;
}

/** Evaluates several tensors in one graph run. */
export function evalAll(tensors: readonly Tensor[]): void {
  check(native().mlx_eval(handlesOf(tensors, "evalAll"), tensors.length), "evalAll");
}

/** Starts evaluating the tensors and returns at once (host work can overlap the device's); reading
 * one of them, or anything computed from them, waits for the result. */
export function asyncEval(tensors: readonly Tensor[]): void {
  check(native().mlx_async_eval(handlesOf(tensors, "asyncEval"), tensors.length), "asyncEval");
}

/** How many MLX primitives evaluating the tensors would run (nodes not yet evaluated). */
export function pendingPrimitives(tensors: readonly Tensor[]): number {
  const out = new Int32Array(1);
  check(
    native().mlx_graph_primitives(out, handlesOf(tensors, "pendingPrimitives"), tensors.length),
    "pendingPrimitives",
  );
  return out[0]!;
}

/** Those primitives by kind (MLX's primitive names, "QuantizedMatmul", "RMSNorm", ...): counts. */
export function pendingPrimitiveKinds(tensors: readonly Tensor[]): Map<string, number> {
  const handles = handlesOf(tensors, "pendingPrimitiveKinds");
  const needed = new BigUint64Array(1);
  check(native().mlx_graph_primitive_names(null, 0, needed, handles, tensors.length), "pendingPrimitiveKinds");
  const text = new Uint8Array(Number(needed[0]!));
  check(
    native().mlx_graph_primitive_names(text, text.length, needed, handles, tensors.length),
    "pendingPrimitiveKinds",
  );
  const kinds = new Map<string, number>();
  for (const name of new TextDecoder().decode(text.subarray(0, text.length - 1)).split("\n")) {
    if (name) kinds.set(name, (kinds.get(name) ?? 0) + 1);
  }
  return kinds;
}
