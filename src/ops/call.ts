// The one place that turns a shim call into a Tensor: argument checks, status check, wrapping.
import type { Pointer } from "bun:ffi";
import { check, native, outPointer, outWords } from "../native/ffi.ts";
import { Tensor } from "../tensor.ts";

export type Native = ReturnType<typeof native>;

/** The handle of argument `arg` of `op`, with an Error naming both if it was disposed. */
export function handleOf(t: Tensor, op: string, arg: string): Pointer {
  if (!(t instanceof Tensor)) throw new TypeError(`${op}: argument '${arg}' is not a Tensor`);
  if (t.disposed) throw new Error(`${op}: argument '${arg}' (${t.name ?? "tensor"}) was used after dispose()`);
  return t.handle;
}

export function optionalHandleOf(t: Tensor | null | undefined, op: string, arg: string): Pointer | null {
  return t == null ? null : handleOf(t, op, arg);
}

/** Runs a shim function whose first argument is the out-handle, and wraps the result. */
export function call(op: string | (() => string), invoke: (lib: Native, out: Uint32Array) => number): Tensor {
  check(invoke(native(), outWords), op);
  return new Tensor(outPointer());
}

function isInt32(v: unknown): v is number {
  return typeof v === "number" && Number.isInteger(v) && v >= -(2 ** 31) && v <= 2 ** 31 - 1;
}

/** int32 array argument (shape, axes, bounds) for the shim, null when empty; an Error for a value
 * int32 cannot hold (Int32Array.from would wrap 2^32 + 1 to 1). */
export function ints(values: readonly number[]): Int32Array | null {
  for (const v of values) {
    if (!isInt32(v)) throw new Error(`[${values.join(", ")}]: ${v} is not an integer MLX can take (int32)`);
  }
  return values.length > 0 ? Int32Array.from(values) : null;
}

/** A scalar integer argument for the shim (an axis, a count): an Error naming it when it is not an
 * int32 (bun:ffi would pass NaN as 0 and cut 1.5 to 1). */
export function int32(value: number, op: string, name: string): number {
  if (!isInt32(value)) throw new Error(`${op}: ${name} must be an int32 integer, got ${String(value)}`);
  return value;
}

/** A scalar float argument for the shim (an eps, a scale): an Error naming it when it is not a finite
 * number, or is below `min` (or not above it, with `above`). */
export function finite(value: number, op: string, name: string, bound: { min?: number; above?: number } = {}): number {
  if (typeof value !== "number" || !Number.isFinite(value))
    throw new Error(`${op}: ${name} must be a finite number, got ${String(value)}`);
  if (bound.min !== undefined && value < bound.min)
    throw new Error(`${op}: ${name} must be >= ${bound.min}, got ${value}`);
  if (bound.above !== undefined && value <= bound.above)
    throw new Error(`${op}: ${name} must be > ${bound.above}, got ${value}`);
  return value;
}

/** Normalises a possibly negative axis against ndim, with an Error naming the op. */
export function axisOf(axis: number, ndim: number, op: string): number {
  const a = axis < 0 ? axis + ndim : axis;
  if (!Number.isInteger(a) || a < 0 || a >= ndim)
    throw new Error(`${op}: axis ${axis} out of range for ${ndim} dimensions`);
  return a;
}
