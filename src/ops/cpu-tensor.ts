// The CPU reference's tensor (ops/cpu.ts holds its ops): a row-major float32 array with its shape,
// and the shape arithmetic the ops share (strides, axes, broadcasting).
import type { TensorData } from "../dtype.ts";

/** A row-major float32 tensor on the host. */
export class CpuTensor implements TensorData {
  readonly data: Float32Array;
  readonly shape: readonly number[];
  readonly dtype = "float32" as const;

  constructor(data: Float32Array, shape: readonly number[]) {
    const size = shape.reduce((a, b) => a * b, 1);
    if (size !== data.length)
      throw new Error(`CpuTensor: shape [${shape}] holds ${size} values, data has ${data.length}`);
    this.data = data;
    this.shape = shape;
  }

  get ndim(): number {
    return this.shape.length;
  }

  get size(): number {
    return this.data.length;
  }

  get nbytes(): number {
    return this.data.byteLength;
  }

  toBytes(): Uint8Array {
    return new Uint8Array(this.data.buffer, this.data.byteOffset, this.data.byteLength);
  }

  toFloat32Array(): Float32Array {
    return this.data;
  }

  toInt32Array(): Int32Array {
    return Int32Array.from(this.data);
  }

  /** Host memory is garbage collected; present so callers treat every tensor kind alike. */
  dispose(): void {}

  [Symbol.dispose](): void {}
}

export function stridesOf(shape: readonly number[]): number[] {
  const strides = new Array<number>(shape.length);
  let s = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    strides[i] = s;
    s *= shape[i]!;
  }
  return strides;
}

export function axis(a: number, ndim: number, op: string): number {
  const r = a < 0 ? a + ndim : a;
  if (r < 0 || r >= ndim) throw new Error(`${op}: axis ${a} out of range for ${ndim} dimensions`);
  return r;
}

/** numpy broadcasting of two shapes. */
export function broadcastShape(a: readonly number[], b: readonly number[], op = "broadcast"): number[] {
  const n = Math.max(a.length, b.length);
  const out = new Array<number>(n);
  for (let i = 0; i < n; i++) {
    const da = a[a.length - n + i] ?? 1;
    const db = b[b.length - n + i] ?? 1;
    if (da !== db && da !== 1 && db !== 1) throw new Error(`${op}: shapes [${a}] and [${b}] cannot be broadcast`);
    out[i] = Math.max(da, db);
  }
  return out;
}

/** Strides of `shape` read as `target` (0 along broadcast axes). */
export function broadcastStrides(shape: readonly number[], target: readonly number[]): number[] {
  const own = stridesOf(shape);
  const offset = target.length - shape.length;
  return target.map((_, i) => (i < offset || shape[i - offset] === 1 ? 0 : own[i - offset]!));
}
