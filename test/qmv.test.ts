// The decode-sized 4-bit matmul kernels of the shim against MLX's own dequantize + matmul: on the
// CPU shim/ext/qmv_cpu.cpp (with AVX2 any number of rows), on a CUDA GPU shim/ext/qmv_cuda.cpp (<= 32 rows;
// each of float32, bfloat16 or float16). Each case also checks which primitive ran, so a silent
// fallback to MLX's QuantizedMatmul fails the test; relative error <= 1e-5 in float32, strided
// inputs, and the shapes they do not take (more rows, 8 bits) left to MLX.
import { expect, test } from "bun:test";
import { existsSync, readFileSync } from "node:fs";
import { deviceInfo, fast, memory, ops, quant, Tensor } from "../src/index.ts";

/** The shim's kernel on this machine's default device: on the GPU of Linux (MLX's CUDA build) the
 * CUDA one, on the CPU the CPU one; Metal has none of ours. */
const onCuda = deviceInfo().device === "gpu" && process.platform === "linux";
const ourKernel = onCuda ? "QuantizedMatvecCuda" : deviceInfo().device === "cpu" ? "QuantizedMatvecCpu" : null;
/** Rows the kernel takes: on a CUDA GPU up to 32; on the CPU any number with AVX2 (from 8 rows by
 * tiles), else up to 32. */
const cpuHasAvx2 =
  process.arch === "x64" && existsSync("/proc/cpuinfo") && / avx2 /.test(readFileSync("/proc/cpuinfo", "utf8"));
const MAX_ROWS = onCuda ? 32 : cpuHasAvx2 ? Number.POSITIVE_INFINITY : 32;

function expectedKind(rows: number, bits: number, features: number, groupSize: number): string {
  if (rows <= MAX_ROWS && bits === 4 && ourKernel !== null) return ourKernel;
  // A prompt's rows the kernels do not take (on a GPU from 128, on the CPU from 33), and where MLX's
  // Hopper kernel would run (an inner axis of one group, a multiple of 64; its results were wrong on
  // an H200): the shim multiplies by the dequantized weight (shim/quant.cpp).
  if (onCuda) return rows >= 128 || (features % 64 === 0 && features <= groupSize) ? "Matmul" : "QuantizedMatmul";
  return deviceInfo().device === "cpu" && rows >= 33 ? "Matmul" : "QuantizedMatmul";
}

function random(n: number, seed: number): Float32Array {
  let s = seed;
  return Float32Array.from({ length: n }, () => (s = (s * 1103515245 + 12345) % 2 ** 31) / 2 ** 31 - 0.5);
}

function relativeError(got: Float32Array, want: Float32Array): number {
  let worst = 0;
  const scale = Math.max(...want.map(Math.abs));
  for (let i = 0; i < got.length; i++) worst = Math.max(worst, Math.abs(got[i]! - want[i]!) / scale);
  return worst;
}

test.each([
  [1, 1536, 512, 64, 4],
  [2, 4096, 512, 64, 4], // >= 2^21 weight values x rows: the CPU kernel splits the outputs between two threads
  [1, 517, 256, 32, 4],
  [3, 300, 1024, 128, 4],
  [8, 64, 64, 64, 4],
  [9, 64, 64, 64, 4],
  [14, 96, 128, 64, 4], // blocks of 4 rows and a remainder of 2; on a CUDA GPU the 16-row variant
  [21, 200, 256, 64, 4], // on a CUDA GPU the 32-row variant, 11 of its rows past x's
  [32, 64, 128, 32, 4],
  [33, 64, 64, 64, 4],
  [8, 40, 128, 64, 4], // the CPU's tile kernel: a partial tile of 8 columns
  [47, 530, 256, 32, 4], // tiles of 16 columns and a remainder of 2; register blocks of 6 rows and a remainder of 5
  [200, 96, 192, 64, 4], // blocks of 96 rows and a remainder of 8; on a GPU a matmul over the dequantized weight
  [128, 64, 256, 32, 8], // 8 bits: on a GPU a matmul over the dequantized weight too
  [1, 256, 128, 64, 8],
])(
  "rows %d, out %d, in %d, group %d, %d bits: equal to MLX's dequantize + matmul",
  (rows, out, features, groupSize, bits) => {
    using w = Tensor.from(random(out * features, 7), [out, features]);
    const q = quant.quantize(w, { groupSize, bits });
    using x = Tensor.from(random(rows * features, 11), [rows, features]);
    using got = quant.quantizedMatmul(x, q, { groupSize, bits });
    expect([...ops.pendingPrimitiveKinds([got]).keys()]).toContain(expectedKind(rows, bits, features, groupSize));
    using dense = quant.dequantize(q, { groupSize, bits });
    using wt = ops.transpose(dense, [1, 0]);
    using want = ops.matmul(x, wt);
    // MLX's own CUDA kernel for more rows (JIT-compiled with tensor-core MMAs) rounds float32 inputs
    // to a tensor-core type; its bound is bfloat16's rounding. Ours, and MLX's on the CPU: float32.
    const bound = onCuda && expectedKind(rows, bits, features, groupSize) === "QuantizedMatmul" ? 2 ** -8 : 1e-5;
    expect(relativeError(got.toFloat32Array(), want.toFloat32Array())).toBeLessThanOrEqual(bound);
    quant.disposeQuantized(q);
  },
);

test("a strided x (a transposed view) gives the same result as its contiguous copy", () => {
  using w = Tensor.from(random(96 * 128, 3), [96, 128]);
  const q = quant.quantize(w, { groupSize: 64, bits: 4 });
  using base = Tensor.from(random(128 * 2, 5), [128, 2]);
  using strided = ops.transpose(base, [1, 0]);
  using copy = Tensor.from(strided.toFloat32Array(), [2, 128]);
  using a = quant.quantizedMatmul(strided, q);
  using b = quant.quantizedMatmul(copy, q);
  // The CUDA primitive hands a strided x to MLX's kernel: the same result up to float rounding.
  expect(relativeError(a.toFloat32Array(), b.toFloat32Array())).toBeLessThanOrEqual(1e-5);
  quant.disposeQuantized(q);
});

// Half precision: x, scales and biases in the model's dtype, as a bfloat16/float16 checkpoint has
// them. The reference is float32 math on the same half-precision values; the output is rounded once
// to the dtype (bfloat16 keeps 8 significant bits, float16 11), so the bound is that rounding of the
// largest output, with room for float32 accumulation order. On a CUDA GPU these take the
// tensor-core kernel (one row only where k >= 4096 or n >= 65536, else the float32 kernel), whose
// steps cover 8 / 4 / 2 / 1 groups for 1 / 2 / 3-4 / 5-32 rows (8 rows of x a fragment, 16 and 32
// rows in two and four), 8 warps sharing each 16 rows (every 8th step each) below 65536 rows: the
// cases include a partial last step (3 groups, 12 groups of 128, 10 of 32 with 3 rows, 65 and 193
// groups of 64 with one row: a warp with two steps, and with four issuing three at a time) and x's
// rows repeated past its last (3 rows in the 4-row variant, 6 in the 8-row one, 27 in the 32-row one).
test.skipIf(ourKernel === null).each([
  ["bfloat16", 1, 4096, 1024, 64, 2 ** -8],
  ["bfloat16", 1, 100, 192, 64, 2 ** -8],
  ["bfloat16", 1, 24, 1536, 128, 2 ** -8],
  ["float16", 3, 40, 320, 32, 2 ** -10],
  ["bfloat16", 6, 200, 4096, 64, 2 ** -8],
  ["bfloat16", 1, 40, 4160, 64, 2 ** -8],
  ["bfloat16", 1, 24, 12352, 64, 2 ** -8],
  ["float16", 1, 65552, 128, 64, 2 ** -10],
  ["bfloat16", 2, 517, 512, 32, 2 ** -8],
  ["bfloat16", 5, 300, 1024, 128, 2 ** -8],
  ["float16", 1, 1024, 2048, 64, 2 ** -10],
  ["float16", 8, 64, 256, 64, 2 ** -10],
  ["bfloat16", 16, 517, 512, 32, 2 ** -8],
  ["float16", 27, 300, 1024, 128, 2 ** -10],
  // (More rows than the CUDA kernel takes: the CPU's tile kernel only.)
  ...(onCuda ? [] : ([["bfloat16", 40, 300, 512, 64, 2 ** -8]] as const)),
] as const)(
  "%s, rows %d, out %d, in %d, group %d: equal to float32 math on the same values",
  (dtype, rows, out, features, groupSize, bound) => {
    using w32 = Tensor.from(random(out * features, 13), [out, features]);
    using w = ops.astype(w32, dtype);
    const q = quant.quantize(w, { groupSize, bits: 4 });
    using x32 = Tensor.from(random(rows * features, 17), [rows, features]);
    using x = ops.astype(x32, dtype);
    using got = quant.quantizedMatmul(x, q, { groupSize, bits: 4 });
    expect([...ops.pendingPrimitiveKinds([got]).keys()]).toContain(ourKernel!);
    expect(got.dtype).toBe(dtype);
    using got32 = ops.astype(got, "float32");
    using scales = ops.astype(q.scales, "float32");
    using biases = ops.astype(q.biases!, "float32");
    using dense = quant.dequantize({ weight: q.weight, scales, biases }, { groupSize, bits: 4 });
    using wt = ops.transpose(dense, [1, 0]);
    using xf = ops.astype(x, "float32");
    using want = ops.matmul(xf, wt);
    expect(relativeError(got32.toFloat32Array(), want.toFloat32Array())).toBeLessThanOrEqual(bound);
    quant.disposeQuantized(q);
  },
);

// The CUDA kernel's outputs come from the shim's own pool of device buffers (MLX's allocator does not
// export device allocation): they count as MLX's do (in use: active, idle: cache), and clearCache
// frees the idle ones.
test.skipIf(!onCuda)(
  "CUDA: the matvec's output buffers count in memory.active/cache, and clearCache frees them",
  async () => {
    using w = Tensor.from(random(4096 * 256, 19), [4096, 256]);
    const q = quant.quantize(w, { groupSize: 64, bits: 4 });
    using x = Tensor.from(random(256, 23), [1, 256]);
    ops.evalAll([x, q.weight, q.scales, q.biases!]);
    memory.clearCache();
    const active = memory.active();
    const out = quant.quantizedMatmul(x, q);
    expect([...ops.pendingPrimitiveKinds([out]).keys()]).toContain("QuantizedMatvecCuda");
    out.eval();
    expect(memory.active()).toBeGreaterThanOrEqual(active + 4096 * 4);
    out.dispose();
    // MLX releases a buffer once the GPU work using it has completed, a moment later.
    for (let i = 0; i < 200 && memory.cache() < 4096 * 4; i++) await Bun.sleep(5);
    expect(memory.cache()).toBeGreaterThanOrEqual(4096 * 4);
    memory.clearCache();
    expect(memory.cache()).toBe(0);
    quant.disposeQuantized(q);
  },
);

// MLX's kernels divide by zero (SIGFPE) on an empty x or w; the shim returns the product's value,
// zeros (an empty sum) of the shape MLX infers, without running them.
test.each([
  ["no rows", [0, 64], 4, 64, [0, 4]],
  ["no outputs", [1, 64], 0, 64, [1, 0]],
  ["an empty inner axis", [1, 0], 4, 0, [1, 4]],
] as const)("an empty operand (%s) gives zeros of the product's shape", (_, xShape, n, k, shape) => {
  using w = Tensor.from(new Uint32Array((n * k) / 8), [n, k / 8]);
  using s = Tensor.from(new Float32Array((n * k) / 64).fill(1), [n, k / 64]);
  using x = Tensor.from(new Float32Array(xShape[0] * xShape[1]).fill(1), [...xShape]);
  using got = quant.quantizedMatmul(x, { weight: w, scales: s, biases: s });
  expect(got.shape).toEqual([...shape]);
  expect(Array.from(got.toFloat32Array())).toEqual(new Array(shape[0] * shape[1]).fill(0));
});

/** Operands of `dtype` for a product with an addend: a 4-bit weight [out, features] quantized by
 * groupSize, x [rows, features] and the addend [rows, out] (random with seeds[0..2]); `of` makes more
 * of the dtype. Disposed together. */
function addOperands(
  dtype: "float32" | "bfloat16" | "float16",
  rows: number,
  out: number,
  features: number,
  groupSize: number,
  seeds: readonly [number, number, number],
) {
  const made: Tensor[] = [];
  const of = (shape: number[], seed: number) => {
    using values = Tensor.from(
      random(
        shape.reduce((a, b) => a * b, 1),
        seed,
      ),
      shape,
    );
    const t = ops.astype(values, dtype);
    made.push(t);
    return t;
  };
  const q = quant.quantize(of([out, features], seeds[0]), { groupSize, bits: 4 });
  return {
    q,
    x: of([rows, features], seeds[1]),
    r: of([rows, out], seeds[2]),
    of,
    [Symbol.dispose]() {
      for (const t of made) t.dispose();
      quant.disposeQuantized(q);
    },
  };
}

// quantizedMatmulAdd: the kernels add the addend as they write the product, rounded to the dtype
// first as the separate add rounds it, so the one op equals quantizedMatmul, then add, bit for bit.
// Its primitives are the kernel's alone (no Add); an addend the kernel does not take (broadcast, other
// dtype) gets MLX's add after the kernel, a strided x MLX's product and add.
test.each([
  ["float32", 1, 1536, 512, 64],
  ["float32", 3, 300, 1024, 128],
  ["bfloat16", 1, 4096, 1024, 64],
  ["bfloat16", 1, 100, 192, 64],
  ["bfloat16", 1, 40, 4160, 64],
  ["bfloat16", 2, 517, 512, 32],
  ["float16", 3, 40, 320, 32],
  ["float16", 8, 64, 256, 64],
  ["bfloat16", 16, 517, 512, 32],
] as const)(
  "quantizedMatmulAdd %s, rows %d, out %d, in %d, group %d: one op, equal to quantizedMatmul then add bit for bit",
  (dtype, rows, out, features, groupSize) => {
    using operands = addOperands(dtype, rows, out, features, groupSize, [29, 31, 37]);
    const { q, x, r } = operands;
    using got = quant.quantizedMatmulAdd(x, q, r, { groupSize, bits: 4 });
    const kinds = [...ops.pendingPrimitiveKinds([got]).keys()];
    if (ourKernel !== null) {
      expect(kinds).toContain(ourKernel);
      expect(kinds).not.toContain("Add");
    }
    using product = quant.quantizedMatmul(x, q, { groupSize, bits: 4 });
    using want = ops.add(product, r);
    expect(got.dtype).toBe(dtype);
    expect(Buffer.compare(got.toBytes(), want.toBytes())).toBe(0);
  },
);

test("quantizedMatmulAdd: a broadcast addend, a strided x, and a wrong addend", () => {
  using w = Tensor.from(random(96 * 128, 41), [96, 128]);
  const q = quant.quantize(w, { groupSize: 64, bits: 4 });
  using x = Tensor.from(random(2 * 128, 43), [2, 128]);
  using row = Tensor.from(random(96, 47), [96]);
  using product = quant.quantizedMatmul(x, q);
  // Broadcast: the kernel's product, then MLX's add.
  using broadcast = quant.quantizedMatmulAdd(x, q, row);
  using wantBroadcast = ops.add(product, row);
  expect(Buffer.compare(broadcast.toBytes(), wantBroadcast.toBytes())).toBe(0);
  // A strided x with a full addend: the same values as its contiguous copy's.
  using r = Tensor.from(random(2 * 96, 53), [2, 96]);
  using base = Tensor.from(random(128 * 2, 59), [128, 2]);
  using strided = ops.transpose(base, [1, 0]);
  using copy = Tensor.from(strided.toFloat32Array(), [2, 128]);
  using a = quant.quantizedMatmulAdd(strided, q, r);
  using b = quant.quantizedMatmulAdd(copy, q, r);
  expect(relativeError(a.toFloat32Array(), b.toFloat32Array())).toBeLessThanOrEqual(1e-5);
  // An addend that does not broadcast to the product: an Error naming the op, the process lives on.
  using wrong = Tensor.from(random(3 * 5, 61), [3, 5]);
  expect(() => quant.quantizedMatmulAdd(x, q, wrong)).toThrow(/quantizedMatmulAdd/);
  quant.disposeQuantized(q);
});

// quantizedMatmulAddNorm: quantizedMatmulAdd and the next rms_norm of its result as one op. The sum
// is quantizedMatmulAdd's bit for bit; the norm is fast.rmsNorm's: on the CPU the same ops (bit for
// bit), on a CUDA GPU written by the kernel's last warp, its sum of squares added in another order
// than MLX's kernel (a normalizer may differ in its last bit; through the norm's two roundings a
// value by up to two units of the dtype: <= 2^-6 of it in bfloat16, 2^-9 in float16; 1e-5 of the
// largest in float32). On a CUDA GPU the
// one node is the kernel's (no RMSNorm, no Add).
function withinUnits(got: Float32Array, want: Float32Array, dtype: "float32" | "bfloat16" | "float16"): boolean {
  const largest = Math.max(...want.map(Math.abs));
  const units = dtype === "bfloat16" ? 2 ** -6 : 2 ** -9;
  return got.every((g, i) => {
    const w = want[i]!;
    return dtype === "float32" ? Math.abs(g - w) <= 1e-5 * largest : Math.abs(g - w) <= units * Math.abs(w);
  });
}

test.each([
  ["float32", 1, 1536, 512, 64],
  ["bfloat16", 1, 4096, 1024, 64],
  ["bfloat16", 1, 1024, 4096, 64],
  ["bfloat16", 1, 100, 192, 64],
  ["float16", 3, 40, 320, 32],
  ["bfloat16", 8, 517, 512, 32],
  ["bfloat16", 21, 200, 256, 64],
] as const)(
  "quantizedMatmulAddNorm %s, rows %d, out %d, in %d, group %d: the sum and its rms_norm",
  (dtype, rows, out, features, groupSize) => {
    using operands = addOperands(dtype, rows, out, features, groupSize, [67, 71, 73]);
    const { q, x, r } = operands;
    const g = operands.of([out], 79);
    const [sum, normed] = quant.quantizedMatmulAddNorm(x, q, r, g, 1e-6, { groupSize, bits: 4 });
    using s = sum;
    using n = normed;
    if (onCuda) {
      const kinds = [...ops.pendingPrimitiveKinds([s, n]).keys()];
      expect(kinds).toContain(ourKernel!);
      expect(kinds).not.toContain("RMSNorm");
      expect(kinds).not.toContain("Add");
    }
    using want = quant.quantizedMatmulAdd(x, q, r, { groupSize, bits: 4 });
    using wantNormed = fast.rmsNorm(want, g, 1e-6);
    expect(s.dtype).toBe(dtype);
    expect(n.dtype).toBe(dtype);
    expect(Buffer.compare(s.toBytes(), want.toBytes())).toBe(0);
    if (onCuda) expect(withinUnits(n.toFloat32Array(), wantNormed.toFloat32Array(), dtype)).toBe(true);
    else expect(Buffer.compare(n.toBytes(), wantNormed.toBytes())).toBe(0);
  },
);

test("quantizedMatmulAddNorm: a strided x, and a norm weight one element into its buffer (not 16-byte aligned), give their contiguous copies' values; bad arguments are Errors naming the op", () => {
  using w = Tensor.from(random(96 * 128, 83), [96, 128]);
  const q = quant.quantize(w, { groupSize: 64, bits: 4 });
  using r = Tensor.from(random(2 * 96, 89), [2, 96]);
  using g = Tensor.from(random(96, 97), [96]);
  using base = Tensor.from(random(128 * 2, 101), [128, 2]);
  using strided = ops.transpose(base, [1, 0]);
  using copy = Tensor.from(strided.toFloat32Array(), [2, 128]);
  const [a0, a1] = quant.quantizedMatmulAddNorm(strided, q, r, g, 1e-5);
  const [b0, b1] = quant.quantizedMatmulAddNorm(copy, q, r, g, 1e-5);
  using _a0 = a0;
  using _a1 = a1;
  using _b0 = b0;
  using _b1 = b1;
  expect(relativeError(a0.toFloat32Array(), b0.toFloat32Array())).toBeLessThanOrEqual(1e-5);
  expect(relativeError(a1.toFloat32Array(), b1.toFloat32Array())).toBeLessThanOrEqual(1e-5);
  using wider = Tensor.from(random(97, 107), [97]);
  using shifted = ops.slice(wider, [1], [97]);
  using shiftedCopy = Tensor.from(shifted.toFloat32Array(), [96]);
  const [c0, c1] = quant.quantizedMatmulAddNorm(copy, q, r, shifted, 1e-5);
  const [d0, d1] = quant.quantizedMatmulAddNorm(copy, q, r, shiftedCopy, 1e-5);
  using _c0 = c0;
  using _c1 = c1;
  using _d0 = d0;
  using _d1 = d1;
  expect(Buffer.compare(c0.toBytes(), d0.toBytes())).toBe(0);
  expect(relativeError(c1.toFloat32Array(), d1.toFloat32Array())).toBeLessThanOrEqual(1e-5);
  using short = Tensor.from(random(95, 103), [95]);
  expect(() => quant.quantizedMatmulAddNorm(copy, q, r, short, 1e-5)).toThrow(/quantizedMatmulAddNorm/);
  expect(() => quant.quantizedMatmulAddNorm(copy, q, r, g, Number.NaN)).toThrow(/quantizedMatmulAddNorm: eps/);
  expect(() => quant.quantizedMatmulAddNorm(copy, q, r, g, 1e-5, { transpose: false })).toThrow(
    /transpose must be true/,
  );
  quant.disposeQuantized(q);
});

// quantizedMatmulSwiglu: the swiglu of a fused gate/up product's halves. On a CUDA GPU, for one
// bfloat16 row of a matrix the tensor-core kernel takes, one node: the kernel sums each gate row with
// its up row in the product's order and runs MLX's compiled-swiglu instructions on their bfloat16
// values, so it equals the product split and MLX's swiglu bit for bit; elsewhere those ops.
test.each([
  ["bfloat16", 1, 1024, 4096, 64],
  ["bfloat16", 1, 100, 4096, 64],
  ["bfloat16", 1, 200, 8192, 128],
  ["bfloat16", 1, 256, 1024, 64],
  ["bfloat16", 3, 64, 512, 32],
  ["float16", 1, 64, 4096, 64],
  ["float32", 2, 64, 256, 64],
] as const)(
  "quantizedMatmulSwiglu %s, rows %d, halves of %d, in %d, group %d: the product split, then swiglu, bit for bit",
  (dtype, rows, half, features, groupSize) => {
    using operands = addOperands(dtype, rows, 2 * half, features, groupSize, [151, 157, 163]);
    const { q, x } = operands;
    using got = quant.quantizedMatmulSwiglu(x, q, { groupSize, bits: 4 });
    if (onCuda && dtype === "bfloat16" && rows === 1 && features >= 4096) {
      const kinds = [...ops.pendingPrimitiveKinds([got]).keys()];
      expect(kinds).toContain(ourKernel!);
      expect(kinds).not.toContain("Compiled");
    }
    // Elsewhere, for one row, the product's halves are one node's views (then the swiglu).
    if (!onCuda && rows === 1) {
      const kinds = [...ops.pendingPrimitiveKinds([got]).keys()];
      expect(kinds).toContain("SplitProduct");
      expect(kinds).not.toContain("Split");
    }
    const [gate, up] = quant.quantizedMatmulSplit(
      x,
      q,
      [
        [rows, half],
        [rows, half],
      ],
      { groupSize, bits: 4 },
    );
    using g = gate!;
    using u = up!;
    using want = fast.swiglu(g, u);
    expect(got.dtype).toBe(dtype);
    expect(got.shape).toEqual([rows, half]);
    expect(Buffer.compare(got.toBytes(), want.toBytes())).toBe(0);
  },
);

test("quantizedMatmulSwiglu and quantizedMatmul: an x not 16-byte aligned gives its copy's values; a weight of an odd number of rows is an Error naming the op", () => {
  using w = Tensor.from(random(64 * 4096, 167), [64, 4096]);
  using wb = ops.astype(w, "bfloat16");
  const q = quant.quantize(wb, { groupSize: 64, bits: 4 });
  using wider32 = Tensor.from(random(4097, 173), [1, 4097]);
  using wider = ops.astype(wider32, "bfloat16");
  using shifted = ops.slice(wider, [0, 1], [1, 4097]);
  using copy = ops.astype(Tensor.from(shifted.toFloat32Array(), [1, 4096]), "bfloat16");
  // On a CUDA GPU the kernel reads a copy of the misaligned x (MLX's product would fault on it).
  using a = quant.quantizedMatmulSwiglu(shifted, q);
  using b = quant.quantizedMatmulSwiglu(copy, q);
  expect(Buffer.compare(a.toBytes(), b.toBytes())).toBe(0);
  using c = quant.quantizedMatmul(shifted, q);
  using d = quant.quantizedMatmul(copy, q);
  expect(Buffer.compare(c.toBytes(), d.toBytes())).toBe(0);
  using odd = Tensor.from(random(63 * 256, 179), [63, 256]);
  const qo = quant.quantize(odd, { groupSize: 64, bits: 4 });
  using x = Tensor.from(random(256, 181), [1, 256]);
  expect(() => quant.quantizedMatmulSwiglu(x, qo)).toThrow(
    /quantizedMatmulSwiglu: weight .* does not have an even number of rows/,
  );
  expect(() => quant.quantizedMatmulSwiglu(x, qo, { transpose: false })).toThrow(/transpose must be true/);
  quant.disposeQuantized(q);
  quant.disposeQuantized(qo);
});

// quantizedMatmulQkNormRope: a fused q/k/v projection in its heads' shapes with q and k then normed
// and rotated (Qwen3's q/k norms and rope). On a CUDA GPU, for one row, one node: the matvec's last
// block of each q or k head norms and rotates it with the q/k norm + rope kernel's own row code, so
// the result equals the product split and that kernel bit for bit; elsewhere those ops.
test.each([
  ["bfloat16", 1, 32, 8, 128, 4096, 64, false], // the qwen3-8b shape: the tensor-core kernel
  ["bfloat16", 1, 16, 8, 128, 1024, 64, false], // the qwen3-0.6b shape: the float32 kernel
  ["float16", 1, 4, 2, 64, 512, 32, true],
  ["float32", 1, 4, 2, 64, 256, 64, false],
  ["bfloat16", 2, 4, 2, 64, 512, 64, false], // two rows: the ops
] as const)(
  "quantizedMatmulQkNormRope %s, rows %d, %d q and %d k heads of %d, in %d, group %d, periods %p: the product split, then qkNormRope, bit for bit",
  (dtype, rows, qHeads, kHeads, headDim, features, groupSize, periods) => {
    const out = (qHeads + 2 * kHeads) * headDim;
    using operands = addOperands(dtype, rows, out, features, groupSize, [191, 193, 197]);
    const { q, x: x2 } = operands;
    using x = ops.reshape(x2, [rows, 1, features]);
    using wq32 = Tensor.from(random(headDim, 199), [headDim]);
    using wk32 = Tensor.from(random(headDim, 211), [headDim]);
    using wq = ops.astype(wq32, dtype);
    using wk = ops.astype(wk32, dtype);
    using offset = Tensor.from(Int32Array.of(37), []);
    using freqs = periods
      ? Tensor.from(
          Float32Array.from({ length: headDim / 2 }, (_, i) => 1 / 10000 ** ((2 * i) / headDim)),
          [headDim / 2],
        )
      : null;
    const rope = { dims: headDim, base: 1000000, scale: 1, offset, freqs };
    const shapes = [
      [rows, qHeads, 1, headDim],
      [rows, kHeads, 1, headDim],
      [rows, kHeads, 1, headDim],
    ];
    const got = quant.quantizedMatmulQkNormRope(x, q, shapes, wq, wk, 1e-6, rope, { groupSize, bits: 4 });
    using gq = got[0];
    using gk = got[1];
    using gv = got[2];
    if (onCuda && rows === 1) expect([...ops.pendingPrimitiveKinds(got).keys()]).toContain("QkvNormRopeCuda");
    const parts = quant.quantizedMatmulSplit(x, q, shapes, { groupSize, bits: 4 });
    using pq = parts[0]!;
    using pk = parts[1]!;
    using pv = parts[2]!;
    const [wantQ, wantK] = fast.qkNormRope(pq, pk, wq, wk, 1e-6, rope);
    using rq = wantQ;
    using rk = wantK;
    for (const [a, b] of [
      [gq, rq],
      [gk, rk],
      [gv, pv],
    ] as const) {
      expect(a.dtype).toBe(dtype);
      expect(a.shape).toEqual(b.shape);
      expect(Buffer.compare(a.toBytes(), b.toBytes())).toBe(0);
    }
  },
);

test("quantizedMatmulQkNormRope: shapes that are not q's, k's and v's are an Error naming the op", () => {
  using w = Tensor.from(random(3 * 64 * 256, 223), [3 * 64, 256]);
  const q = quant.quantize(w, { groupSize: 64, bits: 4 });
  using x = Tensor.from(random(256, 227), [1, 1, 256]);
  using wn = Tensor.from(random(64, 229), [64]);
  using offset = Tensor.from(Int32Array.of(0), []);
  const rope = { dims: 64, base: 10000, scale: 1, offset };
  expect(() => quant.quantizedMatmulQkNormRope(x, q, [[1, 1, 1, 64]], wn, wn, 1e-6, rope)).toThrow(
    /quantizedMatmulQkNormRope: shapes must be q's, k's and v's/,
  );
  expect(() =>
    quant.quantizedMatmulQkNormRope(
      x,
      q,
      [
        [1, 1, 1, 64],
        [1, 1, 1, 64],
        [1, 1, 1, 32],
      ],
      wn,
      wn,
      1e-6,
      rope,
    ),
  ).toThrow(/quantizedMatmulQkNormRope|columns/);
  quant.disposeQuantized(q);
});

// quantizedMatmulSplit: the product's columns as several tensors, each in its own shape (the fused q,
// k and v projections in their heads' shapes). For one row, one node (SplitProduct) around the
// product's own primitive, whose outputs are views of its buffer; for more rows, the product split
// and reshaped. Either way the values are quantizedMatmul's, split and reshaped, bit for bit.
test.each([
  ["float32", 1, 4],
  ["bfloat16", 1, 4],
  ["float32", 1, 8], // MLX's QuantizedMatmul inside the node
  ["float32", 3, 4],
] as const)(
  "quantizedMatmulSplit %s, rows %d, %d bits: equal to quantizedMatmul, split, reshape",
  (dtype, rows, bits) => {
    using w32 = Tensor.from(random(160 * 256, 67), [160, 256]);
    using w = ops.astype(w32, dtype);
    const q = quant.quantize(w, { groupSize: 64, bits });
    using x32 = Tensor.from(random(rows * 256, 71), [rows, 256]);
    using x = ops.astype(x32, dtype);
    ops.evalAll([x, q.weight, q.scales, q.biases!]);
    const shapes =
      rows === 1
        ? [
            [1, 6, 1, 16],
            [1, 2, 1, 16],
            [1, 32],
          ]
        : [
            [rows, 6, 16],
            [rows, 2, 16],
            [rows, 32],
          ];
    const got = quant.quantizedMatmulSplit(x, q, shapes, { groupSize: 64, bits });
    const kinds = [...ops.pendingPrimitiveKinds(got).keys()];
    if (rows === 1) {
      expect(kinds).toContain("SplitProduct");
      expect(ops.pendingPrimitives(got)).toBe(1);
    } else {
      expect(kinds).toContain("Split");
    }
    using product = quant.quantizedMatmul(x, q, { groupSize: 64, bits });
    const parts = ops.split(product, [96, 32, 32], -1);
    got.forEach((t, i) => {
      using want = ops.reshape(parts[i]!, shapes[i]!);
      expect(t.shape).toEqual(shapes[i]!);
      expect(t.dtype).toBe(dtype);
      expect(Buffer.compare(t.toBytes(), want.toBytes())).toBe(0);
    });
    for (const t of [...got, ...parts]) t.dispose();
    quant.disposeQuantized(q);
  },
);

test("quantizedMatmulSplit: shapes that do not add up to the product, or do not take whole rows, are Errors naming the op", () => {
  using w = Tensor.from(random(64 * 128, 73), [64, 128]);
  const q = quant.quantize(w, { groupSize: 64, bits: 4 });
  using x = Tensor.from(random(2 * 128, 79), [2, 128]);
  expect(() =>
    quant.quantizedMatmulSplit(x, q, [
      [2, 32],
      [2, 16],
    ]),
  ).toThrow(/quantizedMatmulSplit.*48 of the product's 64 columns/);
  expect(() =>
    quant.quantizedMatmulSplit(x, q, [
      [3, 21],
      [2, 32],
    ]),
  ).toThrow(/quantizedMatmulSplit.*output 0 does not take whole rows/);
  expect(() =>
    quant.quantizedMatmulSplit(x, q, [
      [2, -32],
      [2, 64],
    ]),
  ).toThrow(/quantizedMatmulSplit/);
  expect(() => quant.quantizedMatmulSplit(x, q, [])).toThrow(/no output shapes/);
  quant.disposeQuantized(q);
});
