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
  bool: 1,
  uint8: 1,
  uint16: 2,
  uint32: 4,
  uint64: 8,
  int8: 1,
  int16: 2,
  int32: 4,
  int64: 8,
  float16: 2,
  float32: 4,
  float64: 8,
  bfloat16: 2,
  complex64: 8,
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
  if (!Array.isArray(shape))
    throw new Error(`${what}: shape must be an array of integers, got ${JSON.stringify(shape)}`);
  for (const d of shape) {
    if (typeof d !== "number" || !Number.isInteger(d) || d < 0 || d > MAX_DIMENSION) {
      throw new Error(
        `${what}: shape [${shape.join(", ")}] has dimension ${d}; dimensions are integers in [0, ${MAX_DIMENSION}]`,
      );
    }
  }
  return shape;
}

const INTEGER_RANGE: Partial<Record<DType, readonly [number, number]>> = {
  bool: [0, 1],
  uint8: [0, 255],
  uint16: [0, 65535],
  uint32: [0, 2 ** 32 - 1],
  uint64: [0, Number.MAX_SAFE_INTEGER],
  int8: [-128, 127],
  int16: [-32768, 32767],
  int32: [-(2 ** 31), 2 ** 31 - 1],
  int64: [Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER],
};

/** The magnitude from which a float dtype rounds a finite value to infinity (its largest value plus
 * half a step at its top binade). */
const FLOAT_OVERFLOW: Partial<Record<DType, number>> = {
  float16: 65520,
  bfloat16: 2 ** 128 * (1 - 2 ** -9),
  float32: 2 ** 128 * (1 - 2 ** -25),
  complex64: 2 ** 128 * (1 - 2 ** -25),
  float64: Number.POSITIVE_INFINITY,
};

/** An Error naming `what` unless every value is a number (or bigint) that `dtype` holds: an integer
 * in range for the integer dtypes (0 or 1 for bool); for the float dtypes, any number that does not
 * round to infinity (a float rounds to its nearest value; NaN and infinities are float values). */
export function checkHolds(values: ArrayLike<unknown>, dtype: DType, what: string): void {
  const range = INTEGER_RANGE[dtype];
  const overflow = FLOAT_OVERFLOW[dtype] ?? Number.POSITIVE_INFINITY;
  for (let i = 0; i < values.length; i++) {
    const raw = values[i];
    const v = typeof raw === "bigint" ? Number(raw) : raw;
    if (typeof v !== "number")
      throw new Error(`${what}: value ${i} is not a number (${typeof raw} ${JSON.stringify(raw)})`);
    if (range) {
      const exact =
        typeof raw === "bigint"
          ? raw >= BigInt(range[0]) && raw <= BigInt(range[1])
          : Number.isInteger(v) && v >= range[0] && v <= range[1];
      if (!exact)
        throw new Error(
          `${what}: value ${i} (${String(raw)}) does not fit ${dtype} (integers in [${range[0]}, ${range[1]}])`,
        );
    } else if (Number.isFinite(v) && Math.abs(v) >= overflow) {
      throw new Error(`${what}: value ${i} (${v}) is beyond ${dtype}'s range (it would become infinity)`);
    }
  }
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
