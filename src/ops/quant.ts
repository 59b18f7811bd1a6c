// Quantize / dequantize / quantized matmul over MLX's modes.
import { check, native, pointerFromWord } from "../native/ffi.ts";
import { dtypeCode, type DType } from "../dtype.ts";
import { Tensor } from "../tensor.ts";
import { checkOptionNames } from "../options.ts";
import { call, finite, handleOf, optionalHandleOf } from "./call.ts";
import { type RopeOptions, ropeArguments } from "./fast.ts";

export const QUANT_MODES = ["affine", "mxfp4", "mxfp8", "nvfp4"] as const;
export type QuantMode = (typeof QUANT_MODES)[number];

export interface QuantParams {
  groupSize: number;
  bits: number;
  mode: QuantMode;
}

/** MLX's defaults per mode (group size, bits). */
const DEFAULTS: Record<QuantMode, { groupSize: number; bits: number }> = {
  affine: { groupSize: 64, bits: 4 },
  mxfp4: { groupSize: 32, bits: 4 },
  mxfp8: { groupSize: 32, bits: 8 },
  nvfp4: { groupSize: 16, bits: 4 },
};

/** Some of the parameters; an absent or undefined one takes the mode's default. */
export type QuantParamsInput = { [K in keyof QuantParams]?: QuantParams[K] | undefined };

/** Fills in the mode's defaults; rejects unknown modes with the list of valid ones, and a group
 * size or bit count that is not a positive integer (the shim takes int32: NaN would pass as 0). */
export function quantParams(p: QuantParamsInput = {}): QuantParams {
  const mode = p.mode ?? "affine";
  if (!QUANT_MODES.includes(mode))
    throw new Error(`unknown quantization mode '${mode}' (valid: ${QUANT_MODES.join(", ")})`);
  const groupSize = p.groupSize ?? DEFAULTS[mode].groupSize;
  const bits = p.bits ?? DEFAULTS[mode].bits;
  for (const [name, value] of [
    ["groupSize", groupSize],
    ["bits", bits],
  ] as const) {
    if (typeof value !== "number" || !Number.isInteger(value) || value < 1 || value > 1024)
      throw new Error(`quantization ${name} must be a positive integer, got ${String(value)}`);
  }
  return { mode, groupSize, bits };
}

const PARAM_NAMES = ["groupSize", "bits", "mode"] as const;
const PRODUCT_PARAM_NAMES = [...PARAM_NAMES, "transpose", "activations"] as const;

/** What a quantized product does with x on the CPU: "float" (default) keeps it as it is; "int8"
 * lets the shim's CPU kernel quantize it to int8 per block of 64 values (AVX-512 VNNI, 4-bit
 * affine weights with a group size that is a multiple of 64; elsewhere x stays float): faster and
 * approximate (see LoadOptions.cpuActivations). */
export const ACTIVATIONS = ["float", "int8"] as const;
export type Activations = (typeof ACTIVATIONS)[number];

/** A packed weight: `weight` (uint32), `scales`, and `biases` for the affine mode. */
export interface QuantizedWeight {
  weight: Tensor;
  scales: Tensor;
  biases: Tensor | null;
}

/** NUL-terminated mode names for the shim, made once (a decode step passes one per linear); every
 * caller passes a mode quantParams has validated. */
const MODE_NAMES = new Map<string, Buffer>(QUANT_MODES.map((m) => [m, Buffer.from(`${m}\0`)]));
const cstr = (mode: QuantMode) => MODE_NAMES.get(mode)!;

/** Quantizes `w` along its last axis (which must be divisible by the group size). */
export function quantize(w: Tensor, params: QuantParamsInput = {}): QuantizedWeight {
  checkOptionNames("quantize", params, PARAM_NAMES);
  const { groupSize, bits, mode } = quantParams(params);
  const hw = handleOf(w, "quantize", "w");
  const out = new BigUint64Array(3);
  check(
    native().mlx_quantize(out.subarray(0, 1), out.subarray(1, 2), out.subarray(2, 3), hw, groupSize, bits, cstr(mode)),
    () => `quantize(${w.describe()}, ${mode} ${bits}-bit group ${groupSize})`,
  );
  const wrap = (i: number) => (out[i] === 0n ? null : new Tensor(pointerFromWord(out[i]!)));
  return { weight: wrap(0)!, scales: wrap(1)!, biases: wrap(2) };
}

export function dequantize(q: QuantizedWeight, params: QuantParamsInput = {}, dtype?: DType): Tensor {
  checkOptionNames("dequantize", params, PARAM_NAMES);
  const { groupSize, bits, mode } = quantParams(params);
  const hw = handleOf(q.weight, "dequantize", "weight");
  const hs = handleOf(q.scales, "dequantize", "scales");
  const hb = optionalHandleOf(q.biases, "dequantize", "biases");
  const code = dtype ? dtypeCode(dtype) : -1;
  return call(
    () => `dequantize(${q.weight.describe()}, ${mode} ${bits}-bit group ${groupSize})`,
    (lib, o) => lib.mlx_dequantize(o, hw, hs, hb, groupSize, bits, cstr(mode), code),
  );
}

type ProductParams = QuantParamsInput & { transpose?: boolean | undefined; activations?: Activations | undefined };

/** x @ dequantize(w)^T (transpose, the Linear layout) or x @ dequantize(w). */
export function quantizedMatmul(x: Tensor, q: QuantizedWeight, params: ProductParams = {}): Tensor {
  return quantizedProduct("quantizedMatmul", x, q, null, params);
}

/** quantizedMatmul(x, q, params) + addend as one op: the shim's decode-time matvec kernels (a few
 * rows, 4-bit affine) add it as they write the product, rounded to x's dtype first as a separate add
 * would round it, so the result equals the two ops'; otherwise the two ops run. */
export function quantizedMatmulAdd(x: Tensor, q: QuantizedWeight, addend: Tensor, params: ProductParams = {}): Tensor {
  return quantizedProduct("quantizedMatmulAdd", x, q, addend, params);
}

/** [quantizedMatmulAdd(x, q, addend, params), fast rmsNorm of it (normWeight, eps)] as one op: for a
 * decode step on a CUDA GPU one node of the shim's matvec, whose last warp to finish writes the norm
 * (MLX's roundings; the sum of squares may add in another order, so a normalizer can differ in its
 * last bit); otherwise the two ops. Transposed (the Linear layout) only. */
export function quantizedMatmulAddNorm(
  x: Tensor,
  q: QuantizedWeight,
  addend: Tensor,
  normWeight: Tensor,
  eps: number,
  params: ProductParams = {},
): [Tensor, Tensor] {
  const op = "quantizedMatmulAddNorm";
  if (params.transpose === false) throw new Error(`${op}: transpose must be true (the Linear layout)`);
  if (typeof eps !== "number" || !Number.isFinite(eps))
    throw new Error(`${op}: eps must be a finite number, got ${String(eps)}`);
  const { groupSize, bits, mode, int8, hx, hw, hs, hb } = productOperands(op, x, q, params);
  const ha = handleOf(addend, op, "addend");
  const hn = handleOf(normWeight, op, "normWeight");
  const out = new BigUint64Array(2);
  check(
    native().mlx_quantized_matmul_add_norm(out, hx, hw, hs, hb, ha, hn, eps, 1, groupSize, bits, cstr(mode), int8),
    () =>
      `${op}(${[x, q.weight, addend, normWeight].map((t) => t.describe()).join(", ")}, ${mode} ${bits}-bit group ${groupSize})`,
  );
  return [new Tensor(pointerFromWord(out[0]!)), new Tensor(pointerFromWord(out[1]!))];
}

/** silu(gate) * up where [gate, up] are the halves of quantizedMatmul(x, q) along its last axis (q a
 * fused gate/up weight: a gate's rows, then an up's, as the loader fuses an MLP's projections): the
 * same values as the product, split, then fast swiglu. On a CUDA GPU one node for one bfloat16 row
 * (the decode-time matvec sums a gate row and its up row together and writes their swiglu). */
export function quantizedMatmulSwiglu(x: Tensor, q: QuantizedWeight, params: ProductParams = {}): Tensor {
  const op = "quantizedMatmulSwiglu";
  if (params.transpose === false) throw new Error(`${op}: transpose must be true (the Linear layout)`);
  const { groupSize, bits, mode, int8, hx, hw, hs, hb } = productOperands(op, x, q, params);
  const rows = q.weight.shape[0];
  if (q.weight.shape.length !== 2 || rows === undefined || rows % 2 !== 0)
    throw new Error(
      `${op}: weight ${q.weight.describe()} does not have an even number of rows (a gate's, then an up's)`,
    );
  return call(
    () => `${op}(${x.describe()}, ${q.weight.describe()}, ${mode} ${bits}-bit group ${groupSize})`,
    (lib, out) => lib.mlx_quantized_matmul_swiglu(out, hx, hw, hs, hb, 1, groupSize, bits, cstr(mode), int8),
  );
}

/** quantizedMatmul(x, q, params) as several tensors: the product's last axis split into parts, part i
 * of shape shapes[i] (a reshape of its columns; the sizes must take whole rows, adding up to the
 * product's). For one row of x (a decode step), one MLX node whose outputs are views of the product:
 * the same values as split and reshape, with fewer nodes. */
export function quantizedMatmulSplit(
  x: Tensor,
  q: QuantizedWeight,
  shapes: readonly (readonly number[])[],
  params: ProductParams = {},
): Tensor[] {
  const op = "quantizedMatmulSplit";
  if (shapes.length === 0) throw new Error(`${op}: no output shapes`);
  for (const s of shapes) {
    if (s.some((d) => !Number.isInteger(d) || d < 0))
      throw new Error(`${op}: output shape [${s.join(", ")}] has a dimension that is not a non-negative integer`);
  }
  const { groupSize, bits, mode, transpose, int8, hx, hw, hs, hb } = productOperands(op, x, q, params);
  const out = new BigUint64Array(shapes.length);
  const ranks = Int32Array.from(shapes, (s) => s.length);
  const dims = Int32Array.from(shapes.flat());
  check(
    native().mlx_quantized_matmul_split(
      out,
      shapes.length,
      hx,
      hw,
      hs,
      hb,
      ranks,
      dims.length > 0 ? dims : null,
      transpose,
      groupSize,
      bits,
      cstr(mode),
      int8,
    ),
    () =>
      `${op}(${x.describe()}, ${q.weight.describe()}, ${mode} ${bits}-bit group ${groupSize}, into ${shapes.map((s) => `[${s.join(", ")}]`).join(" ")})`,
  );
  return Array.from(out, (w) => new Tensor(pointerFromWord(w)));
}

/** quantizedMatmulSplit(x, q, shapes) of a fused q/k/v projection (shapes: q's [B, Hq, 1, D], then
 * k's and v's [B, Hk, 1, D]) with q and k then put through qkNormRope(q, k, qWeight, kWeight, eps,
 * rope): [q, k, v]. For one row of x on a CUDA GPU, one node (the matvec writes q and k normed and
 * rotated as the q/k norm + rope kernel makes them); else those ops. */
export function quantizedMatmulQkNormRope(
  x: Tensor,
  q: QuantizedWeight,
  shapes: readonly (readonly number[])[],
  qWeight: Tensor,
  kWeight: Tensor,
  eps: number,
  rope: RopeOptions & { offset: Tensor },
  params: ProductParams = {},
): [Tensor, Tensor, Tensor] {
  const op = "quantizedMatmulQkNormRope";
  if (shapes.length !== 3 || shapes.some((s) => s.length !== 4))
    throw new Error(`${op}: shapes must be q's, k's and v's, each of 4 dimensions`);
  for (const s of shapes) {
    if (s.some((d) => !Number.isInteger(d) || d < 0))
      throw new Error(`${op}: output shape [${s.join(", ")}] has a dimension that is not a non-negative integer`);
  }
  const { groupSize, bits, mode, transpose, int8, hx, hw, hs, hb } = productOperands(op, x, q, params);
  if (transpose !== 1) throw new Error(`${op}: transpose must be true (the Linear layout)`);
  const { dims, traditional, base, scale, hf } = ropeArguments(op, rope);
  const hqw = handleOf(qWeight, op, "qWeight");
  const hkw = handleOf(kWeight, op, "kWeight");
  const ho = handleOf(rope.offset, op, "offset");
  const e = finite(eps, op, "eps", { min: 0 });
  const out = new BigUint64Array(3);
  check(
    native().mlx_quantized_matmul_qk_norm_rope(
      out,
      hx,
      hw,
      hs,
      hb,
      Int32Array.from(shapes.flat()),
      hqw,
      hkw,
      ho,
      hf,
      e,
      dims,
      traditional,
      base,
      scale,
      groupSize,
      bits,
      cstr(mode),
      int8,
    ),
    () => `${op}(${x.describe()}, ${q.weight.describe()}, ${mode} ${bits}-bit group ${groupSize})`,
  );
  const [qo, ko, vo] = Array.from(out, (w) => new Tensor(pointerFromWord(w)));
  return [qo!, ko!, vo!];
}

/** The parameters and handles every quantized product passes to the shim (`op` names the caller in
 * errors). */
function productOperands(op: string, x: Tensor, q: QuantizedWeight, params: ProductParams) {
  checkOptionNames(op, params, PRODUCT_PARAM_NAMES);
  const { groupSize, bits, mode } = quantParams(params);
  const transpose = (params.transpose ?? true) ? 1 : 0;
  const activations = params.activations ?? "float";
  if (!ACTIVATIONS.includes(activations))
    throw new Error(`${op}: activations must be one of ${ACTIVATIONS.join(", ")}, got '${String(activations)}'`);
  const int8 = activations === "int8" ? 1 : 0;
  const hx = handleOf(x, op, "x");
  const hw = handleOf(q.weight, op, "weight");
  const hs = handleOf(q.scales, op, "scales");
  const hb = optionalHandleOf(q.biases, op, "biases");
  return { groupSize, bits, mode, transpose, int8, hx, hw, hs, hb };
}

/** The shim call behind quantizedMatmul and quantizedMatmulAdd. */
function quantizedProduct(
  op: string,
  x: Tensor,
  q: QuantizedWeight,
  addend: Tensor | null,
  params: ProductParams,
): Tensor {
  const { groupSize, bits, mode, transpose, int8, hx, hw, hs, hb } = productOperands(op, x, q, params);
  const ha = addend ? handleOf(addend, op, "addend") : null;
  const describe = () =>
    `${op}(${[x, q.weight, ...(addend ? [addend] : [])].map((t) => t.describe()).join(", ")}, ${mode} ${bits}-bit group ${groupSize})`;
  return call(describe, (lib, o) =>
    ha === null
      ? lib.mlx_quantized_matmul(o, hx, hw, hs, hb, transpose, groupSize, bits, cstr(mode), int8)
      : lib.mlx_quantized_matmul_add(o, hx, hw, hs, hb, ha, transpose, groupSize, bits, cstr(mode), int8),
  );
}

export function disposeQuantized(q: QuantizedWeight): void {
  q.weight.dispose();
  q.scales.dispose();
  q.biases?.dispose();
}
