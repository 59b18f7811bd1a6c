// Element types and the read surface every tensor kind shares. The bottom of the import graph:
// MLX tensors (tensor.ts), host-loaded weights (io/host.ts) and the CPU reference's tensors
// (ops/cpu.ts) all implement TensorData, so loaders, quantization checks, the CPU kernels and the
// KV cache take any of them without casts.

/** In mlx_dtype's order: shim/mlxb.h's MLXB_DTYPES table (test/ffi.test.ts compares the two). */
export const DTYPES = [
  "bool",
  "uint8",
  "uint16",
  "uint32",
  "uint64",
  "int8",
  "int16",
  "int32",
  "int64",
  "float16",
  "float32",
  "float64",
  "bfloat16",
  "complex64",
] as const;
export type DType = (typeof DTYPES)[number];

const ITEM_SIZE: Record<DType, number> = {
  bool: 1, uint8: 1, uint16: 2, uint32: 4, uint64: 8, int8: 1, int16: 2, int32: 4, int64: 8,
  float16: 2, float32: 4, float64: 8, bfloat16: 2, complex64: 8,
};

export function itemSize(dtype: DType): number {
  return ITEM_SIZE[dtype];
}

/** The shim's code for a dtype (its index in DTYPES). */
export function dtypeCode(dtype: DType): number {
  const code = DTYPES.indexOf(dtype);
  if (code < 0) throw new Error(`unknown dtype '${dtype}' (valid: ${DTYPES.join(", ")})`);
  return code;
}

/** MLX's largest dimension (int32). */
export const MAX_DIMENSION = 2 ** 31 - 1;

/** `shape` when every dimension is an integer in [0, 2^31 - 1] (MLX's int32 dimensions); an Error
 * naming `what` otherwise (a 2^32 + 1 would wrap to 1 on the way to MLX). */
export function checkedShape(shape: readonly number[], what: string): readonly number[] {
  if (!Array.isArray(shape)) throw new Error(`${what}: shape must be an array of integers, got ${JSON.stringify(shape)}`);
  for (const d of shape) {
    if (typeof d !== "number" || !Number.isInteger(d) || d < 0 || d > MAX_DIMENSION) {
      throw new Error(`${what}: shape [${shape.join(", ")}] has dimension ${d}; dimensions are integers in [0, ${MAX_DIMENSION}]`);
    }
  }
  return shape;
}

/** What every tensor kind offers to code that only reads: shape, dtype, sizes, host copies. */
export interface TensorData {
  readonly shape: readonly number[];
  readonly dtype: DType;
  readonly ndim: number;
  readonly size: number;
  readonly nbytes: number;
  /** A label for messages (a weight path), when known. */
  name?: string | undefined;
  /** Raw row-major bytes of `dtype`. */
  toBytes(): Uint8Array;
  toFloat32Array(): Float32Array;
  toInt32Array(): Int32Array;
  dispose(): void;
}
