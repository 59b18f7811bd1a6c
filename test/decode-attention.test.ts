// Attention of one query position over many keys (a decode step's shape), against a float64
// reference computed here from the same (dtype-rounded) values. On a CUDA GPU this is the shim's
// split-key kernel (shim/ext/attention_cuda.cpp; checked to have run: one DecodeAttentionCuda node;
// MLX's with MLXB_CUDA_ATTENTION=mlx),
// for head dims 64 and 128, query heads per KV head 1 to 8, keys from 1 to over a thousand (one and
// many chunks), keys and values as views of a longer cache (strided), batches; an unsupported head
// dim (80) goes to MLX's kernel; and a batch's decode step with left padding (the KV cache's key
// mask). On the CPU the float32 cases check the CPU kernel (fast_cpu.cpp);
// its bfloat16 and float16 results round the scores and weights to the dtype as MLX's CPU attention
// does (fast-cpu.test.ts compares them with MLX's), so these cases run on a CUDA GPU only.
// Bounds: float32 within 1e-5 of the output's largest magnitude (float32 sums of up to 2200 terms
// in another order); bfloat16 and float16 within one unit in the last place of the reference (the
// kernel computes in float32 and rounds the output once).
import { expect, test } from "bun:test";
import { deviceInfo, type DType, fast, KVCache, ops, Tensor } from "../src/index.ts";

const onCuda = deviceInfo().device === "gpu" && process.platform === "linux";
const split = onCuda && process.env.MLXB_CUDA_ATTENTION !== "mlx";
const ULP: Record<string, number> = { float16: 2 ** -10, bfloat16: 2 ** -7 };

function random(n: number, seed: number): Float32Array {
  let s = seed;
  return Float32Array.from({ length: n }, () => ((s = (s * 1103515245 + 12345) % 2 ** 31) / 2 ** 31) * 4 - 2);
}

interface Case {
  dtype: DType;
  batch: number;
  qHeads: number;
  kvHeads: number;
  keys: number;
  dim: number;
  /** Keys and values are the first `keys` positions of a cache this long (a strided view). */
  cache?: number;
  /** Keys and values start this many elements into rows of dim + shift (a view not aligned for
   * vector loads: the kernel that loads one value at a time). */
  shift?: number;
  /** Left padding per batch row: keys before it are masked (a batch's decode step through the KV
   * cache, with the cache's key mask). */
  padding?: number[];
}

const CASES: [string, Case][] = [
  [
    "float32, 32 query heads over 8, 700 keys",
    { dtype: "float32", batch: 1, qHeads: 32, kvHeads: 8, keys: 700, dim: 128 },
  ],
  [
    "bfloat16, 16 over 8, 640 keys of a 1024 cache",
    { dtype: "bfloat16", batch: 1, qHeads: 16, kvHeads: 8, keys: 640, dim: 128, cache: 1024 },
  ],
  [
    "float16, head 64, no GQA, batch 2, 33 keys",
    { dtype: "float16", batch: 2, qHeads: 4, kvHeads: 4, keys: 33, dim: 64 },
  ],
  [
    "bfloat16, 8 query heads per KV head, one key",
    { dtype: "bfloat16", batch: 1, qHeads: 8, kvHeads: 1, keys: 1, dim: 128 },
  ],
  [
    "float32, batch 3, 2200 keys",
    { dtype: "float32", batch: 3, qHeads: 4, kvHeads: 2, keys: 2200, dim: 64, cache: 2300 },
  ],
  [
    "bfloat16, 32 over 8, 300 keys starting one element into wider rows",
    { dtype: "bfloat16", batch: 1, qHeads: 32, kvHeads: 8, keys: 300, dim: 128, shift: 1 },
  ],
  ["float32, head 80 (MLX's kernel)", { dtype: "float32", batch: 1, qHeads: 4, kvHeads: 2, keys: 50, dim: 80 }],
  [
    "float32, batch 3 left-padded 0 / 37 / 299 of 300 keys",
    { dtype: "float32", batch: 3, qHeads: 8, kvHeads: 4, keys: 300, dim: 64, padding: [0, 37, 299] },
  ],
  [
    "bfloat16, batch 4 left-padded 5 / 0 / 64 / 100 of 120 keys",
    { dtype: "bfloat16", batch: 4, qHeads: 16, kvHeads: 8, keys: 120, dim: 128, padding: [5, 0, 64, 100] },
  ],
];

function check(c: Case): void {
  const made: Tensor[] = [];
  const keep = (t: Tensor) => {
    made.push(t);
    return t;
  };
  const scale = 1 / Math.sqrt(c.dim);
  const length = c.cache ?? c.keys;
  try {
    const input = (shape: number[], seed: number) =>
      keep(
        ops.astype(
          keep(
            Tensor.from(
              random(
                shape.reduce((a, b) => a * b, 1),
                seed,
              ),
              shape,
            ),
          ),
          c.dtype,
        ),
      );
    const q = input([c.batch, c.qHeads, 1, c.dim], 1);
    const shift = c.shift ?? 0;
    const width = c.dim + shift;
    const kAll = input([c.batch, c.kvHeads, length, width], 2);
    const vAll = input([c.batch, c.kvHeads, length, width], 3);
    const stop = [c.batch, c.kvHeads, c.keys, width];
    const view = (all: Tensor) => (c.cache || shift ? keep(ops.slice(all, [0, 0, 0, shift], stop)) : all);
    const k = view(kAll);
    const v = view(vAll);
    const got = keep(
      c.padding ? paddedStep(c, q, k, v, scale, keep) : fast.scaledDotProductAttention(q, k, v, { scale }),
    );
    if (onCuda)
      expect(ops.pendingPrimitiveKinds([got]).get("DecodeAttentionCuda")).toBe(split && c.dim !== 80 ? 1 : undefined);
    expect(got.shape).toEqual([c.batch, c.qHeads, 1, c.dim]);
    expect(got.dtype).toBe(c.dtype);
    const out = keep(ops.astype(got, "float32")).toFloat32Array();
    // The reference reads the dtype-rounded inputs.
    const qs = keep(ops.astype(q, "float32")).toFloat32Array();
    const ks = keep(ops.astype(kAll, "float32")).toFloat32Array();
    const vs = keep(ops.astype(vAll, "float32")).toFloat32Array();
    const want = new Float64Array(out.length);
    const group = c.qHeads / c.kvHeads;
    for (let b = 0; b < c.batch; b++)
      for (let h = 0; h < c.qHeads; h++) {
        const qAt = (b * c.qHeads + h) * c.dim;
        const kvAt = (t: number) => ((b * c.kvHeads + Math.floor(h / group)) * length + t) * width + shift;
        const first = c.padding?.[b] ?? 0;
        const scores = Array.from({ length: c.keys }, (_, t) => {
          if (t < first) return Number.NEGATIVE_INFINITY;
          let s = 0;
          for (let d = 0; d < c.dim; d++) s += qs[qAt + d]! * ks[kvAt(t) + d]!;
          return s * scale;
        });
        const top = Math.max(...scores);
        const weights = scores.map((s) => Math.exp(s - top));
        const total = weights.reduce((a, w) => a + w, 0);
        for (let d = 0; d < c.dim; d++) {
          let sum = 0;
          for (let t = 0; t < c.keys; t++) sum += weights[t]! * vs[kvAt(t) + d]!;
          want[qAt + d] = sum / total;
        }
      }
    const largest = Math.max(...want.map(Math.abs));
    for (let i = 0; i < out.length; i++) {
      const bound = c.dtype === "float32" ? 1e-5 * largest : Math.abs(want[i]!) * ULP[c.dtype]! + 1e-6 * largest;
      if (Math.abs(out[i]! - want[i]!) > bound)
        throw new Error(`element ${i}: ${out[i]} vs the reference's ${want[i]} (bound ${bound} for ${c.dtype})`);
    }
  } finally {
    for (const t of made) t.dispose();
  }
}

/** The last of `keys` positions as a batch's decode step: the others written to a left-padded KV
 * cache, then the step's attention through the cache with its key mask. */
function paddedStep(c: Case, q: Tensor, k: Tensor, v: Tensor, scale: number, keep: (t: Tensor) => Tensor): Tensor {
  const cache = new KVCache({
    layers: 1,
    batch: c.batch,
    heads: c.kvHeads,
    headDim: c.dim,
    maxLength: c.keys + 3,
    dtype: c.dtype,
  });
  try {
    cache.setLeftPadding(c.padding!);
    const at = (t: Tensor, from: number, to: number) =>
      keep(ops.slice(t, [0, 0, from, 0], [c.batch, c.kvHeads, to, c.dim]));
    for (const t of cache.updateAndFetch(0, at(k, 0, c.keys - 1), at(v, 0, c.keys - 1))) keep(t);
    cache.advance(c.keys - 1);
    const mask = keep(cache.keyMask(c.keys)!);
    return cache.attend(0, q, at(k, c.keys - 1, c.keys), at(v, c.keys - 1, c.keys), { scale, keyMask: mask });
  } finally {
    cache.dispose();
  }
}

for (const [name, c] of CASES) {
  test.skipIf(!onCuda && c.dtype !== "float32")(`${name}: equal to the float64 reference`, () => check(c));
}
