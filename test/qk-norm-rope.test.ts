// fast.qkNormRope (Qwen3's q/k norms and the rope after them in one call) against MLX's rms_norm then
// rope on each of q and k. On the CPU the shim runs those very ops (its CPU kernels, fast_cpu.cpp):
// equal bit for bit. On a CUDA GPU
// it is one kernel of ours (shim/ext/norm_rope_cuda.cpp), checked to have run (one QKNormRopeCuda node,
// no RMSNorm or RoPE). In bfloat16 and float16 every element is within one unit in the last place of
// MLX's and at most 1% are not bit-equal (the sum of squares is reduced in another order; the
// rounding to the dtype absorbs the rest). In float32, which rounds nothing away, within 1e-6 of the
// output's largest magnitude (a few float32 ulps: the rotation's products and the sum's order).
import { expect, test } from "bun:test";
import { deviceInfo, type DType, fast, ops, Tensor } from "../src/index.ts";

const onCuda = deviceInfo().device === "gpu" && process.platform === "linux";

function random(n: number, seed: number): Float32Array {
  let s = seed;
  return Float32Array.from({ length: n }, () => ((s = (s * 1103515245 + 12345) % 2 ** 31) / 2 ** 31) * 4 - 2);
}

/** A unit in the last place of the dtype, relative to the value (float16 2^-10, bfloat16 2^-7). */
const ULP: Record<string, number> = { float16: 2 ** -10, bfloat16: 2 ** -7 };

interface Case {
  dtype: DType;
  q: number[];
  k: number[];
  dims?: number;
  traditional?: boolean;
  offsets: number[];
  periods?: boolean;
  /** q and k made as [B, T, H, D] and transposed: strided inputs. */
  strided?: boolean;
}

const CASES: [string, Case][] = [
  ["float32 decode", { dtype: "float32", q: [1, 4, 1, 64], k: [1, 2, 1, 64], offsets: [37] }],
  ["bfloat16 decode, head 128", { dtype: "bfloat16", q: [1, 8, 1, 128], k: [1, 2, 1, 128], offsets: [1029] }],
  ["float16 decode", { dtype: "float16", q: [1, 4, 1, 64], k: [1, 4, 1, 64], offsets: [3] }],
  [
    "float32 batch of 2, 3 positions, an offset each",
    { dtype: "float32", q: [2, 4, 3, 32], k: [2, 2, 3, 32], offsets: [5, 0] },
  ],
  ["bfloat16 strided prefill", { dtype: "bfloat16", q: [1, 4, 6, 64], k: [1, 2, 6, 64], offsets: [0], strided: true }],
  [
    "float32 partial rotation (dims 16 of 32), traditional",
    { dtype: "float32", q: [1, 2, 2, 32], k: [1, 2, 2, 32], dims: 16, traditional: true, offsets: [9] },
  ],
  ["float32 with periods", { dtype: "float32", q: [1, 2, 1, 64], k: [1, 1, 1, 64], offsets: [700], periods: true }],
];

test.each(CASES)("%s: equal to rms_norm then rope on q and on k", (_, c) => {
  const D = c.q[3]!;
  const dims = c.dims ?? D;
  const eps = 1e-6;
  const made: Tensor[] = [];
  const keep = (t: Tensor) => {
    made.push(t);
    return t;
  };
  const input = (shape: number[], seed: number) => {
    const [b, h, t, d] = shape as [number, number, number, number];
    const base = keep(Tensor.from(random(b * h * t * d, seed), c.strided ? [b, t, h, d] : shape));
    const laid = c.strided ? keep(ops.transpose(base, [0, 2, 1, 3])) : base;
    return keep(ops.astype(laid, c.dtype));
  };
  try {
    const q = input(c.q, 1);
    const k = input(c.k, 2);
    const qWeight = keep(ops.astype(keep(Tensor.from(random(D, 3), [D])), c.dtype));
    const kWeight = keep(ops.astype(keep(Tensor.from(random(D, 4), [D])), c.dtype));
    const offset = keep(Tensor.from(Int32Array.from(c.offsets), [c.offsets.length]));
    const freqs = c.periods
      ? keep(
          Tensor.from(
            Float32Array.from({ length: dims / 2 }, (_, i) => 10000 ** ((2 * i) / dims) * (i % 3 === 0 ? 8 : 1)),
            [dims / 2],
          ),
        )
      : null;
    const options = { dims, traditional: c.traditional ?? false, base: 500000, scale: 1, offset, freqs };
    const got = fast.qkNormRope(q, k, qWeight, kWeight, eps, options).map(keep);
    const want = [
      fast.rope(keep(fast.rmsNorm(q, qWeight, eps)), options),
      fast.rope(keep(fast.rmsNorm(k, kWeight, eps)), options),
    ].map(keep);
    const kinds = ops.pendingPrimitiveKinds(got);
    if (onCuda) {
      expect(kinds.get("QKNormRopeCuda")).toBe(1);
      expect(kinds.has("RoPE") || kinds.has("RMSNorm")).toBe(false);
    }
    for (let i = 0; i < 2; i++) {
      expect(got[i]!.shape).toEqual(want[i]!.shape);
      expect(got[i]!.dtype).toBe(c.dtype);
      const a = keep(ops.astype(got[i]!, "float32")).toFloat32Array();
      const b = keep(ops.astype(want[i]!, "float32")).toFloat32Array();
      if (!onCuda) {
        expect(Buffer.compare(Buffer.from(a.buffer), Buffer.from(b.buffer))).toBe(0);
        continue;
      }
      const largest = Math.max(...b.map(Math.abs));
      let unequal = 0;
      for (let j = 0; j < a.length; j++) {
        if (a[j] === b[j]) continue;
        unequal++;
        const bound =
          c.dtype === "float32" ? 1e-6 * largest : Math.max(Math.abs(a[j]!), Math.abs(b[j]!)) * ULP[c.dtype]!;
        if (Math.abs(a[j]! - b[j]!) > bound)
          throw new Error(`output ${i} element ${j}: ${a[j]} vs MLX's ${b[j]} (bound ${bound} for ${c.dtype})`);
      }
      if (c.dtype !== "float32") expect(unequal).toBeLessThanOrEqual(a.length / 100);
    }
  } finally {
    for (const t of made) t.dispose();
  }
});

test("bad inputs name the argument", () => {
  const q = Tensor.from(new Float32Array(8), [1, 1, 1, 8]);
  using w = Tensor.from(new Float32Array(8), [8]);
  using offset = Tensor.from(new Int32Array([0]), [1]);
  q.dispose();
  expect(() => fast.qkNormRope(q, w, w, w, 1e-6, { dims: 8, offset })).toThrow(/qkNormRope.*q/);
});
