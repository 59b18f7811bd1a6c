// The CPU kernels of shim/ext/fast_cpu.cpp (rms_norm, rope, attention, swiglu): on the CPU each fast op is one
// node of ours (test/ops.test.ts checks their values against Python MLX's ops on contiguous inputs),
// and a strided view in gives what its contiguous copy gives, bit for bit (the kernels read strides).
// On a GPU MLX's own ops run and only the values are checked (against the same ops on copies).
import { expect, test } from "bun:test";
import { deviceInfo, type DType, fast, KVCache, ops, Tensor } from "../src/index.ts";

const onCpu = deviceInfo().device === "cpu";

function random(n: number, seed: number): Float32Array {
  let s = seed;
  return Float32Array.from({ length: n }, () => ((s = (s * 1103515245 + 12345) % 2 ** 31) / 2 ** 31) * 4 - 2);
}

function tensor(shape: number[], seed: number, dtype: DType): Tensor {
  using f = Tensor.from(
    random(
      shape.reduce((a, b) => a * b, 1),
      seed,
    ),
    shape,
  );
  return ops.astype(f, dtype);
}

/** [B, T, H, D] made, transposed to [B, H, T, D]: a strided view, and its contiguous copy. */
function strided(b: number, t: number, h: number, d: number, seed: number, dtype: DType): [Tensor, Tensor] {
  using made = tensor([b, t, h, d], seed, dtype);
  const view = ops.transpose(made, [0, 2, 1, 3]);
  return [view, ops.contiguous(view)];
}

/** Primitive kinds of the pending graph of `t` (its producing node and what it waits on). */
function kinds(t: Tensor): string[] {
  return [...ops.pendingPrimitiveKinds([t]).keys()];
}

function expectSame(a: Tensor, b: Tensor): void {
  expect(a.shape).toEqual(b.shape);
  expect(Array.from(a.toFloat32Array())).toEqual(Array.from(b.toFloat32Array()));
}

for (const dtype of ["float32", "bfloat16", "float16"] as const) {
  test(`${dtype}: rms_norm of a strided view equals that of its copy; one RmsNormCpu node on the CPU`, () => {
    const [view, copy] = strided(2, 3, 4, 64, 1, dtype);
    using w = tensor([64], 2, dtype);
    using a = fast.rmsNorm(view, w, 1e-5);
    using b = fast.rmsNorm(copy, w, 1e-5);
    if (onCpu) expect(kinds(a)).toContain("RmsNormCpu");
    if (onCpu) expect(kinds(a)).not.toContain("Rsqrt");
    expectSame(a, b);
    view.dispose();
    copy.dispose();
  });

  test(`${dtype}: rope of a strided view equals that of its copy (per-example offsets); one RopeCpu node`, () => {
    const [view, copy] = strided(2, 5, 4, 32, 3, dtype);
    using offsets = Tensor.from(Int32Array.from([0, 17]), [2]);
    for (const traditional of [false, true]) {
      const options = { dims: 24, traditional, base: 10000, scale: 1, offset: offsets };
      using a = fast.rope(view, options);
      using b = fast.rope(copy, options);
      if (onCpu) expect(kinds(a)).toContain("RopeCpu");
      if (onCpu) expect(kinds(a)).not.toContain("Cos");
      expectSame(a, b);
    }
    view.dispose();
    copy.dispose();
  });

  test(`${dtype}: attention over sliced keys and values (a cache's view) equals it over copies; GQA, causal`, () => {
    const [q, qCopy] = strided(2, 3, 8, 16, 4, dtype);
    using cacheK = tensor([2, 2, 12, 16], 5, dtype);
    using cacheV = tensor([2, 2, 12, 16], 6, dtype);
    using k = ops.slice(cacheK, [0, 0, 0, 0], [2, 2, 7, 16]);
    using v = ops.slice(cacheV, [0, 0, 0, 0], [2, 2, 7, 16]);
    using kCopy = ops.contiguous(k);
    using vCopy = ops.contiguous(v);
    for (const mask of ["causal", null] as const) {
      using a = fast.scaledDotProductAttention(q, k, v, { scale: 0.25, mask });
      using b = fast.scaledDotProductAttention(qCopy, kCopy, vCopy, { scale: 0.25, mask });
      if (onCpu) expect(kinds(a)).toContain("AttentionCpu");
      if (onCpu) expect(kinds(a)).not.toContain("Softmax");
      expect(a.shape).toEqual([2, 8, 3, 16]);
      expectSame(a, b);
    }
    q.dispose();
    qCopy.dispose();
  });
}

// Keys and values in contiguous rows of 64 or 128 go by 16 keys at once (AVX-512: the 16 dot products
// summed by one shuffle tree, the weighted sum held in registers); keys whose last axis is strided
// (a transposed view) go one at a time. Both take the same inputs: the scores' sums in another order
// may differ in their last bit (and, rounded to bfloat16 or float16, by one of its steps).
for (const dtype of ["float32", "bfloat16", "float16"] as const) {
  for (const [dim, keys, queries] of [
    [64, 40, 1],
    [128, 300, 1],
    [64, 37, 5],
  ] as const) {
    test(`${dtype}: attention of ${queries} queries over ${keys} keys of ${dim}: the 16-key path equals the one-key path`, () => {
      using q = tensor([2, 4, queries, dim], 21, dtype);
      using k = tensor([2, 2, keys, dim], 22, dtype);
      using v = tensor([2, 2, keys, dim], 23, dtype);
      // The same keys with a strided last axis: [B, H, D, L] made, swapped to [B, H, L, D].
      using kT = ops.contiguous(ops.transpose(k, [0, 1, 3, 2]));
      using kView = ops.transpose(kT, [0, 1, 3, 2]);
      for (const mask of ["causal", null] as const) {
        using a = fast.scaledDotProductAttention(q, k, v, { scale: 0.3, mask });
        using b = fast.scaledDotProductAttention(q, kView, v, { scale: 0.3, mask });
        if (onCpu) expect(kinds(a)).toContain("AttentionCpu");
        const x = a.toFloat32Array();
        const y = b.toFloat32Array();
        const largest = Math.max(...y.map(Math.abs));
        const bound = dtype === "float32" ? 1e-5 * largest : 2 ** -7 * largest;
        let worst = 0;
        for (let i = 0; i < x.length; i++) worst = Math.max(worst, Math.abs(x[i]! - y[i]!));
        expect(worst).toBeLessThanOrEqual(bound);
      }
    });
  }
}

for (const dtype of ["float32", "bfloat16"] as const) {
  test(`${dtype}: swiglu of a product's two halves (strided views) equals it of their copies; one SwigluCpu node`, () => {
    using product = tensor([3, 2, 96], 10, dtype);
    using gate = ops.slice(product, [0, 0, 0], [3, 2, 48]);
    using up = ops.slice(product, [0, 0, 48], [3, 2, 96]);
    using gateCopy = ops.contiguous(gate);
    using upCopy = ops.contiguous(up);
    using a = fast.swiglu(gate, up);
    using b = fast.swiglu(gateCopy, upCopy);
    if (onCpu) expect(kinds(a)).toContain("SwigluCpu");
    expectSame(a, b);
  });
}

test("attention with an array mask stays MLX's; a long causal pass is the kernel's, its last query as a lone one", () => {
  using q = tensor([1, 2, 20, 8], 7, "float32");
  using k = tensor([1, 2, 20, 8], 8, "float32");
  using a = fast.scaledDotProductAttention(q, k, k, { scale: 0.3, mask: "causal" });
  if (onCpu) expect(kinds(a)).toContain("AttentionCpu");
  using mask = Tensor.from(new Float32Array(20 * 20), [1, 1, 20, 20]);
  using one = tensor([1, 2, 1, 8], 9, "float32");
  using m = ops.slice(mask, [0, 0, 0, 0], [1, 1, 1, 20]);
  using b = fast.scaledDotProductAttention(one, k, k, { scale: 0.3, mask: m });
  if (onCpu) expect(kinds(b)).not.toContain("AttentionCpu");
  // Both equal the one-query kernel's where they overlap: the last query of a causal pass sees
  // every key, as the unmasked single query does.
  using last = ops.slice(q, [0, 0, 19, 0], [1, 2, 20, 8]);
  using c = fast.scaledDotProductAttention(last, k, k, { scale: 0.3, mask: null });
  using aLast = ops.slice(a, [0, 0, 19, 0], [1, 2, 20, 8]);
  const diff = Math.max(...Array.from(c.toFloat32Array(), (x, i) => Math.abs(x - aLast.toFloat32Array()[i]!)));
  expect(diff).toBeLessThan(1e-5);
});

// A batch's left padding: the cache's attention with a key mask (decode rows of a batch, and their
// prompts) is one AttentionCpu node on the CPU, equal to MLX's attention with the same mask as an
// explicit -inf/0 array (float32: within 1e-6 of the largest value; bfloat16: one ulp of it).
for (const [dtype, bound] of [
  ["float32", 1e-6],
  ["bfloat16", 2 ** -7],
] as const) {
  test(`${dtype}: cache attention with left padding (a prompt, then a decode step) equals MLX's with the mask`, () => {
    const [batch, heads, kvHeads, dim, padding] = [2, 4, 2, 8, [2, 0]];
    using cache = new KVCache({ layers: 1, batch, heads: kvHeads, headDim: dim, maxLength: 16, dtype });
    cache.setLeftPadding(padding);
    using k0 = tensor([batch, kvHeads, 5, dim], 21, dtype);
    using v0 = tensor([batch, kvHeads, 5, dim], 22, dtype);
    using k1 = tensor([batch, kvHeads, 1, dim], 23, dtype);
    using v1 = tensor([batch, kvHeads, 1, dim], 24, dtype);
    using keys = ops.concatenate([k0, k1], 2);
    using values = ops.concatenate([v0, v1], 2);
    for (const [queries, offset, k, v, seed] of [
      [5, 0, k0, v0, 25],
      [1, 5, k1, v1, 26],
    ] as const) {
      using q = tensor([batch, heads, queries, dim], seed, dtype);
      using mask = cache.keyMask(offset + queries);
      using got = cache.attend(0, q, k, v, { scale: 0.35, keyMask: mask });
      if (onCpu) expect(kinds(got)).toContain("AttentionCpu");
      cache.advance(queries);
      const length = offset + queries;
      const additive = new Float32Array(batch * queries * length);
      for (let b = 0; b < batch; b++)
        for (let t = 0; t < queries; t++)
          for (let j = 0; j < length; j++)
            if (j < padding[b]! || j > offset + t) additive[(b * queries + t) * length + j] = -Infinity;
      using m32 = Tensor.from(additive, [batch, 1, queries, length]);
      using m = ops.astype(m32, dtype);
      using kk = ops.slice(keys, [0, 0, 0, 0], [batch, kvHeads, length, dim]);
      using vv = ops.slice(values, [0, 0, 0, 0], [batch, kvHeads, length, dim]);
      using want = fast.scaledDotProductAttention(q, kk, vv, { scale: 0.35, mask: m });
      // A padded query that sees no key at all (b 0's first prompt positions) is NaN on both sides
      // and unused: only the others are compared.
      const a = got.toFloat32Array();
      const w = want.toFloat32Array();
      const seen = (i: number) => {
        const t = Math.floor(i / dim) % queries;
        const b = Math.floor(i / (dim * queries * heads));
        return offset + t >= padding[b]!;
      };
      const compared = Array.from(w.keys()).filter(seen);
      expect(compared.length).toBeGreaterThan(w.length / 2);
      const peak = Math.max(...compared.map((i) => Math.abs(w[i]!)));
      const worst = Math.max(...compared.map((i) => Math.abs(a[i]! - w[i]!)));
      expect(worst).toBeLessThanOrEqual(bound * peak);
    }
  });
}
