// The CPU reference ops: plain TypeScript over Float32Array, written to be read and trusted rather
// than to be fast (typed-array loops, no per-element allocation). It is the fallback when MLX cannot
// run an op and the second oracle in tests.
import { axis, broadcastShape, broadcastStrides, CpuTensor, stridesOf } from "./cpu-tensor.ts";

export { broadcastShape, CpuTensor } from "./cpu-tensor.ts";

function binary(a: CpuTensor, b: CpuTensor, fn: (x: number, y: number) => number, op: string): CpuTensor {
  const shape = broadcastShape(a.shape, b.shape, op);
  const out = new Float32Array(shape.reduce((x, y) => x * y, 1));
  const sa = broadcastStrides(a.shape, shape);
  const sb = broadcastStrides(b.shape, shape);
  const index = new Array<number>(shape.length).fill(0);
  let ia = 0;
  let ib = 0;
  for (let i = 0; i < out.length; i++) {
    out[i] = fn(a.data[ia]!, b.data[ib]!);
    // Odometer step over the output index, moving both input offsets along.
    for (let d = shape.length - 1; d >= 0; d--) {
      index[d]!++;
      ia += sa[d]!;
      ib += sb[d]!;
      if (index[d]! < shape[d]!) break;
      ia -= sa[d]! * shape[d]!;
      ib -= sb[d]! * shape[d]!;
      index[d] = 0;
    }
  }
  return new CpuTensor(out, shape);
}

function unary(a: CpuTensor, fn: (x: number) => number): CpuTensor {
  const out = new Float32Array(a.size);
  for (let i = 0; i < out.length; i++) out[i] = fn(a.data[i]!);
  return new CpuTensor(out, a.shape);
}

const scalar = (v: number) => new CpuTensor(Float32Array.of(v), []);
const operand = (x: CpuTensor | number) => (typeof x === "number" ? scalar(x) : x);

export const add = (a: CpuTensor | number, b: CpuTensor | number) =>
  binary(operand(a), operand(b), (x, y) => x + y, "add");
export const subtract = (a: CpuTensor | number, b: CpuTensor | number) =>
  binary(operand(a), operand(b), (x, y) => x - y, "subtract");
export const multiply = (a: CpuTensor | number, b: CpuTensor | number) =>
  binary(operand(a), operand(b), (x, y) => x * y, "multiply");
export const divide = (a: CpuTensor | number, b: CpuTensor | number) =>
  binary(operand(a), operand(b), (x, y) => x / y, "divide");

export const exp = (a: CpuTensor) => unary(a, Math.exp);
export const rsqrt = (a: CpuTensor) => unary(a, (x) => 1 / Math.sqrt(x));
export const silu = (a: CpuTensor) => unary(a, (x) => x / (1 + Math.exp(-x)));

/** Error function (Abramowitz-Stegun 7.1.26 is too coarse for 1e-5; this is the W. J. Cody rational
 * form via erfc for |x| > 0.5 and a Taylor series near 0). */
function erf(x: number): number {
  const ax = Math.abs(x);
  if (ax < 0.5) {
    // Taylor: 2/sqrt(pi) * sum (-1)^n x^(2n+1) / (n! (2n+1))
    let term = ax;
    let sum = ax;
    const x2 = ax * ax;
    for (let n = 1; n < 12; n++) {
      term *= -x2 / n;
      sum += term / (2 * n + 1);
    }
    return Math.sign(x) * (2 / Math.sqrt(Math.PI)) * sum;
  }
  // Continued fraction for erfc, converges fast for |x| >= 0.5.
  let f = 0;
  for (let n = 60; n >= 1; n--) f = n / 2 / (ax + f);
  const erfc = Math.exp(-ax * ax) / Math.sqrt(Math.PI) / (ax + f);
  return Math.sign(x) * (1 - erfc);
}

export function gelu(a: CpuTensor, approximate = false): CpuTensor {
  if (approximate) return unary(a, (x) => 0.5 * x * (1 + Math.tanh(0.7978845608028654 * (x + 0.044715 * x * x * x))));
  return unary(a, (x) => (x * (1 + erf(x / Math.SQRT2))) / 2);
}

export function reshape(a: CpuTensor, shape: readonly number[]): CpuTensor {
  const known = shape.filter((d) => d !== -1).reduce((x, y) => x * y, 1);
  const resolved = shape.map((d) => (d === -1 ? a.size / known : d));
  if (resolved.reduce((x, y) => x * y, 1) !== a.size)
    throw new Error(`reshape: cannot reshape [${a.shape.join(", ")}] into [${shape.join(", ")}]`);
  return new CpuTensor(a.data, resolved);
}

export function transpose(a: CpuTensor, axes?: readonly number[]): CpuTensor {
  const perm = axes ?? a.shape.map((_, i) => a.ndim - 1 - i);
  const shape = perm.map((p) => a.shape[p]!);
  const inStrides = stridesOf(a.shape);
  const gather = perm.map((p) => inStrides[p]!);
  return new CpuTensor(strided(a.data, shape, gather, 0), shape);
}

/** Copies the view (shape, strides, offset) of `data` into a new row-major array. */
function strided(
  data: Float32Array,
  shape: readonly number[],
  strides: readonly number[],
  offset: number,
): Float32Array {
  const out = new Float32Array(shape.reduce((x, y) => x * y, 1));
  const index = new Array<number>(shape.length).fill(0);
  let src = offset;
  for (let i = 0; i < out.length; i++) {
    out[i] = data[src]!;
    for (let d = shape.length - 1; d >= 0; d--) {
      index[d]!++;
      src += strides[d]!;
      if (index[d]! < shape[d]!) break;
      src -= strides[d]! * shape[d]!;
      index[d] = 0;
    }
  }
  return out;
}

export function slice(
  a: CpuTensor,
  start: readonly number[],
  stop: readonly number[],
  steps?: readonly number[],
): CpuTensor {
  const step = steps ?? start.map(() => 1);
  const shape = start.map((s, i) => Math.max(0, Math.ceil((stop[i]! - s) / step[i]!)));
  const own = stridesOf(a.shape);
  const offset = start.reduce((acc, s, i) => acc + s * own[i]!, 0);
  return new CpuTensor(
    strided(
      a.data,
      shape,
      own.map((s, i) => s * step[i]!),
      offset,
    ),
    shape,
  );
}

/** `src` with src[start:stop] = update (stride 1). */
export function sliceUpdate(src: CpuTensor, update: CpuTensor, start: readonly number[]): CpuTensor {
  const out = Float32Array.from(src.data);
  const own = stridesOf(src.shape);
  const index = new Array<number>(update.ndim).fill(0);
  for (let i = 0; i < update.size; i++) {
    let at = 0;
    for (let d = 0; d < update.ndim; d++) at += (start[d]! + index[d]!) * own[d]!;
    out[at] = update.data[i]!;
    for (let d = update.ndim - 1; d >= 0; d--) {
      if (++index[d]! < update.shape[d]!) break;
      index[d] = 0;
    }
  }
  return new CpuTensor(out, src.shape);
}

export function concatenate(arrays: readonly CpuTensor[], axisIn = 0): CpuTensor {
  const ax = axis(axisIn, arrays[0]!.ndim, "concatenate");
  const shape = [...arrays[0]!.shape];
  shape[ax] = arrays.reduce((n, t) => n + t.shape[ax]!, 0);
  const out = new Float32Array(shape.reduce((x, y) => x * y, 1));
  const outer = shape.slice(0, ax).reduce((x, y) => x * y, 1);
  let at = 0;
  for (let o = 0; o < outer; o++) {
    for (const t of arrays) {
      const chunk = t.size / outer;
      out.set(t.data.subarray(o * chunk, (o + 1) * chunk), at);
      at += chunk;
    }
  }
  return new CpuTensor(out, shape);
}

/** Rows of `table` [N, ...] at integer `indices` (any shape): embedding lookup. */
export function take(table: CpuTensor, indices: Int32Array, indexShape: readonly number[]): CpuTensor {
  const row = table.size / table.shape[0]!;
  const out = new Float32Array(indices.length * row);
  for (let i = 0; i < indices.length; i++) {
    const r = indices[i]!;
    if (r < 0 || r >= table.shape[0]!) throw new Error(`take: index ${r} out of range for ${table.shape[0]} rows`);
    out.set(table.data.subarray(r * row, (r + 1) * row), i * row);
  }
  return new CpuTensor(out, [...indexShape, ...table.shape.slice(1)]);
}

/** Reduction over the last axis with keepdims: fn(row) -> value. */
function lastAxis(a: CpuTensor, fn: (row: Float32Array) => number): CpuTensor {
  const n = a.shape[a.ndim - 1]!;
  const out = new Float32Array(a.size / n);
  for (let r = 0; r < out.length; r++) out[r] = fn(a.data.subarray(r * n, (r + 1) * n));
  return new CpuTensor(out, [...a.shape.slice(0, -1), 1]);
}

export function mean(a: CpuTensor): CpuTensor {
  return lastAxis(a, (row) => {
    let s = 0;
    for (let i = 0; i < row.length; i++) s += row[i]!;
    return s / row.length;
  });
}

export function softmax(a: CpuTensor): CpuTensor {
  const n = a.shape[a.ndim - 1]!;
  const out = new Float32Array(a.size);
  for (let r = 0; r < a.size / n; r++) {
    const row = a.data.subarray(r * n, (r + 1) * n);
    let max = Number.NEGATIVE_INFINITY;
    for (let i = 0; i < n; i++) max = Math.max(max, row[i]!);
    let total = 0;
    for (let i = 0; i < n; i++) total += out[r * n + i] = Math.exp(row[i]! - max);
    for (let i = 0; i < n; i++) out[r * n + i]! /= total;
  }
  return new CpuTensor(out, a.shape);
}

export function argmax(a: CpuTensor): Int32Array {
  const n = a.shape[a.ndim - 1]!;
  const out = new Int32Array(a.size / n);
  for (let r = 0; r < out.length; r++) {
    let best = 0;
    for (let i = 1; i < n; i++) if (a.data[r * n + i]! > a.data[r * n + best]!) best = i;
    out[r] = best;
  }
  return out;
}

/** Batched matmul over the last two axes, leading axes broadcast. */
export function matmul(a: CpuTensor, b: CpuTensor): CpuTensor {
  const [m, k] = a.shape.slice(-2) as [number, number];
  const [k2, n] = b.shape.slice(-2) as [number, number];
  if (k !== k2) throw new Error(`matmul: [${a.shape}] @ [${b.shape}]: inner dimensions ${k} and ${k2} differ`);
  const batch = broadcastShape(a.shape.slice(0, -2), b.shape.slice(0, -2), "matmul");
  const count = batch.reduce((x, y) => x * y, 1);
  const sa = broadcastStrides(a.shape.slice(0, -2), batch);
  const sb = broadcastStrides(b.shape.slice(0, -2), batch);
  const out = new Float32Array(count * m * n);
  const index = new Array<number>(batch.length).fill(0);
  for (let p = 0; p < count; p++) {
    let oa = 0;
    let ob = 0;
    for (let d = 0; d < batch.length; d++) {
      oa += index[d]! * sa[d]!;
      ob += index[d]! * sb[d]!;
    }
    oa *= m * k;
    ob *= k * n;
    const o = p * m * n;
    for (let i = 0; i < m; i++) {
      for (let kk = 0; kk < k; kk++) {
        const av = a.data[oa + i * k + kk]!;
        if (av === 0) continue;
        const brow = ob + kk * n;
        for (let j = 0; j < n; j++) out[o + i * n + j]! += av * b.data[brow + j]!;
      }
    }
    for (let d = batch.length - 1; d >= 0; d--) {
      if (++index[d]! < batch[d]!) break;
      index[d] = 0;
    }
  }
  return new CpuTensor(out, [...batch, m, n]);
}

export function rmsNorm(x: CpuTensor, weight: CpuTensor | null, eps: number): CpuTensor {
  const n = x.shape[x.ndim - 1]!;
  const out = new Float32Array(x.size);
  for (let r = 0; r < x.size / n; r++) {
    let ss = 0;
    for (let i = 0; i < n; i++) ss += x.data[r * n + i]! ** 2;
    const inv = 1 / Math.sqrt(ss / n + eps);
    for (let i = 0; i < n; i++) out[r * n + i] = x.data[r * n + i]! * inv * (weight ? weight.data[i]! : 1);
  }
  return new CpuTensor(out, x.shape);
}

export function layerNorm(x: CpuTensor, weight: CpuTensor | null, bias: CpuTensor | null, eps: number): CpuTensor {
  const n = x.shape[x.ndim - 1]!;
  const out = new Float32Array(x.size);
  for (let r = 0; r < x.size / n; r++) {
    let mu = 0;
    for (let i = 0; i < n; i++) mu += x.data[r * n + i]!;
    mu /= n;
    let v = 0;
    for (let i = 0; i < n; i++) v += (x.data[r * n + i]! - mu) ** 2;
    const inv = 1 / Math.sqrt(v / n + eps);
    for (let i = 0; i < n; i++) {
      out[r * n + i] = (x.data[r * n + i]! - mu) * inv * (weight ? weight.data[i]! : 1) + (bias ? bias.data[i]! : 0);
    }
  }
  return new CpuTensor(out, x.shape);
}

/** Rotate-half RoPE (traditional = false) on x [B, H, T, D] over the first `dims` features, with
 * positions [B, T] and inverse frequencies (dims / 2 values). */
export function rope(x: CpuTensor, dims: number, positions: Int32Array, inverseFrequencies: Float32Array): CpuTensor {
  const [batch, heads, length, width] = x.shape as [number, number, number, number];
  const half = dims / 2;
  const out = Float32Array.from(x.data);
  for (let b = 0; b < batch; b++) {
    for (let t = 0; t < length; t++) {
      const p = positions[b * length + t]!;
      for (let i = 0; i < half; i++) {
        const angle = p * inverseFrequencies[i]!;
        const c = Math.cos(angle);
        const s = Math.sin(angle);
        for (let h = 0; h < heads; h++) {
          const base = ((b * heads + h) * length + t) * width;
          const x1 = x.data[base + i]!;
          const x2 = x.data[base + i + half]!;
          out[base + i] = x1 * c - x2 * s;
          out[base + i + half] = x2 * c + x1 * s;
        }
      }
    }
  }
  return new CpuTensor(out, x.shape);
}

export interface AttentionOptions {
  scale: number;
  causal: boolean;
  /** Absolute position of the first query (cached positions before it). */
  offset?: number;
  /** [B, S]: 0 hides a key. */
  keyMask?: Int32Array | null;
}

/** softmax(q k^T * scale + mask) with q [B,H,T,D], k [B,Hkv,S,D] (H a multiple of Hkv: GQA).
 * Causal: query t (absolute offset + t) sees keys s <= offset + t. Returns [B,H,T,S]. */
export function attentionWeights(q: CpuTensor, k: CpuTensor, options: AttentionOptions): CpuTensor {
  const [batch, heads, length, dim] = q.shape as [number, number, number, number];
  const [, kvHeads, keys] = k.shape as [number, number, number, number];
  if (heads % kvHeads !== 0) throw new Error(`attention: ${heads} query heads not a multiple of ${kvHeads} kv heads`);
  const group = heads / kvHeads;
  const offset = options.offset ?? 0;
  const out = new Float32Array(batch * heads * length * keys);
  for (let b = 0; b < batch; b++) {
    for (let h = 0; h < heads; h++) {
      const kBase = (b * kvHeads + Math.floor(h / group)) * keys * dim;
      for (let t = 0; t < length; t++) {
        const qBase = ((b * heads + h) * length + t) * dim;
        const row = out.subarray(((b * heads + h) * length + t) * keys, ((b * heads + h) * length + t + 1) * keys);
        let max = Number.NEGATIVE_INFINITY;
        for (let s = 0; s < keys; s++) {
          const visible = (!options.causal || s <= offset + t) && options.keyMask?.[b * keys + s] !== 0;
          let score = Number.NEGATIVE_INFINITY;
          if (visible) {
            let dot = 0;
            for (let d = 0; d < dim; d++) dot += q.data[qBase + d]! * k.data[kBase + s * dim + d]!;
            score = dot * options.scale;
          }
          row[s] = score;
          max = Math.max(max, score);
        }
        let total = 0;
        for (let s = 0; s < keys; s++) total += row[s] = Math.exp(row[s]! - max);
        for (let s = 0; s < keys; s++) row[s]! /= total;
      }
    }
  }
  return new CpuTensor(out, [batch, heads, length, keys]);
}

/** Repeats each head `repeats` times along axis 1 of [B, H, S, D] (GQA's repeat_interleave). */
export function repeatHeads(x: CpuTensor, repeats: number): CpuTensor {
  if (repeats === 1) return x;
  const [b, h, s, d] = x.shape as [number, number, number, number];
  const out = new Float32Array(b * h * repeats * s * d);
  for (let bh = 0; bh < b * h; bh++) {
    const block = x.data.subarray(bh * s * d, (bh + 1) * s * d);
    for (let r = 0; r < repeats; r++) out.set(block, (bh * repeats + r) * s * d);
  }
  return new CpuTensor(out, [b, h * repeats, s, d]);
}

/** softmax(q k^T * scale + mask) v, GQA without materialising repeats in the weights. */
export function attention(q: CpuTensor, k: CpuTensor, v: CpuTensor, options: AttentionOptions): CpuTensor {
  const weights = attentionWeights(q, k, options);
  return matmul(weights, repeatHeads(v, q.shape[1]! / v.shape[1]!));
}

export function swiglu(gate: CpuTensor, up: CpuTensor): CpuTensor {
  return multiply(silu(gate), up);
}

/** Affine dequantization of a packed [rows, cols * bits / 32] uint32 weight (bits 2, 4, 8; groups along
 * the last axis): w = scale * q + bias. */
export function dequantizeAffine(
  packed: Uint32Array,
  scales: CpuTensor,
  biases: CpuTensor,
  rows: number,
  groupSize: number,
  bits: number,
): CpuTensor {
  if (32 % bits !== 0)
    throw new Error(`dequantizeAffine: ${bits}-bit values straddle words; the CPU reference handles 2, 4 and 8 bits`);
  const perWord = 32 / bits;
  const cols = (packed.length / rows) * perWord;
  const out = new Float32Array(rows * cols);
  const mask = (1 << bits) - 1;
  const groups = cols / groupSize;
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      const word = packed[r * (cols / perWord) + Math.floor(c / perWord)]!;
      const value = (word >>> ((c % perWord) * bits)) & mask;
      const g = r * groups + Math.floor(c / groupSize);
      out[r * cols + c] = scales.data[g]! * value + biases.data[g]!;
    }
  }
  return new CpuTensor(out, [rows, cols]);
}
