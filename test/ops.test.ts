// Every core and fast op against Python MLX on the same inputs (scripts/fixtures/ops.py).
import { describe, expect, test } from "bun:test";
import { fast, ops, Tensor } from "../src/index.ts";
import { decode, type EncodedArray, fixture, maxAbsDiff } from "./helpers.ts";

interface Case {
  name: string;
  op: string;
  inputs: Record<string, EncodedArray>;
  // biome-ignore lint/suspicious/noExplicitAny: an op's options as the fixture's JSON holds them
  params: Record<string, any>;
  expected: EncodedArray;
  tol: number;
}

// biome-ignore lint/suspicious/noExplicitAny: an op's options as the fixture's JSON holds them
type Run = (x: Record<string, Tensor>, p: Record<string, any>) => Tensor;

const runners: Record<string, Run> = {
  add: (x) => ops.add(x.a!, x.b!),
  subtract: (x) => ops.subtract(x.a!, x.b!),
  multiply: (x) => ops.multiply(x.a!, x.b!),
  divide: (x) => ops.divide(x.a!, x.b!),
  matmul: (x) => ops.matmul(x.a!, x.b!),
  reshape: (x, p) => ops.reshape(x.a!, p.shape),
  transpose: (x, p) => ops.transpose(x.a!, p.axes),
  slice: (x, p) => ops.slice(x.a!, p.start, p.stop, p.strides),
  slice_update: (x, p) => ops.sliceUpdate(x.src!, x.update!, p.start, p.stop),
  concatenate: (x, p) => ops.concatenate([x.a!, x.b!], p.axis),
  take: (x, p) => ops.take(x.a!, x.indices!, p.axis),
  softmax: (x, p) => ops.softmax(x.a!, p.axis),
  mean: (x, p) => ops.mean(x.a!, p.axes, p.keepdims),
  sum: (x, p) => ops.sum(x.a!, p.axes, p.keepdims),
  rsqrt: (x) => ops.rsqrt(x.a!),
  exp: (x) => ops.exp(x.a!),
  silu: (x) => ops.silu(x.a!),
  gelu: (x, p) => ops.gelu(x.a!, p.approximate),
  astype: (x, p) => ops.astype(x.a!, p.dtype),
  argmax: (x, p) => ops.argmax(x.a!, p.axis),
  rms_norm: (x, p) => fast.rmsNorm(x.x!, x.weight ?? null, p.eps),
  layer_norm: (x, p) => fast.layerNorm(x.x!, x.weight ?? null, x.bias ?? null, p.eps),
  rope: (x, p) =>
    fast.rope(x.x!, {
      dims: p.dims,
      traditional: p.traditional,
      base: p.base,
      scale: p.scale,
      offset: x.offset ?? p.offset,
      freqs: x.freqs,
    }),
  sdpa: (x, p) => fast.scaledDotProductAttention(x.q!, x.k!, x.v!, { scale: p.scale, mask: x.mask ?? p.mask }),
  swiglu: (x) => fast.swiglu(x.gate!, x.up!),
};

const { cases, mlx_version } = fixture<{ cases: Case[]; mlx_version: string }>("ops.json");

describe(`ops vs Python MLX ${mlx_version}`, () => {
  test("every op in the shim has a fixture case", () => {
    const covered = new Set(cases.map((c) => c.op));
    for (const op of Object.keys(runners)) expect(covered.has(op)).toBe(true);
  });

  for (const c of cases) {
    test(`${c.name} (tol ${c.tol})`, () => {
      const run = runners[c.op];
      if (!run) throw new Error(`no runner for op '${c.op}'`);
      const inputs = Object.fromEntries(Object.entries(c.inputs).map(([k, v]) => [k, decode(v)]));
      using expected = decode(c.expected);
      using got = run(inputs, c.params);
      expect(got.shape).toEqual(expected.shape);
      expect(got.dtype).toBe(expected.dtype);
      const err = maxAbsDiff(got.toFloat32Array(), expected.toFloat32Array());
      expect(err).toBeLessThanOrEqual(c.tol);
      for (const t of Object.values(inputs)) t.dispose();
    });
  }
});

describe("zeros", () => {
  test("made on the device in the asked dtype; a negative dimension is an Error naming the call", () => {
    using z = ops.zeros([2, 3], "bfloat16");
    expect(z.shape).toEqual([2, 3]);
    expect(z.dtype).toBe("bfloat16");
    expect([...z.toFloat32Array()]).toEqual([0, 0, 0, 0, 0, 0]);
    expect(() => ops.zeros([2, -1])).toThrow("zeros: shape [2, -1] has dimension -1");
  });
});

describe("reading half-precision tensors", () => {
  test("bfloat16 and float16 convert on the host exactly as MLX's astype does", () => {
    const src = Float32Array.from([
      0,
      1,
      -1,
      3.140625,
      65504,
      -0.0001,
      1e-8,
      3.4e38,
      Number.NEGATIVE_INFINITY,
      Number.NaN,
      0.333,
      -0,
    ]);
    using f = Tensor.from(src);
    for (const dtype of ["bfloat16", "float16"] as const) {
      // MLX's astype (Tensor.from refuses values a dtype would turn into infinity, as 3.4e38 here).
      using t = ops.astype(f, dtype);
      using viaMlx = ops.astype(t, "float32");
      // Value for value (Object.is: -0 is not 0, NaN is NaN): a NaN's payload bits differ between
      // MLX's CPU and CUDA conversions.
      const host = t.toFloat32Array();
      const device = viaMlx.toFloat32Array();
      expect(Array.from(host, (v, i) => Object.is(v, device[i]))).toEqual(Array.from(host, () => true));
    }
  });
});

describe("pendingPrimitives", () => {
  test("counts each unevaluated node once: a multi-output node once, compiled nodes sharing one primitive each", () => {
    using a = Tensor.from(new Float32Array([1, 2, 3, 4]));
    using b = Tensor.from(new Float32Array([5, 6, 7, 8]));
    using x = fast.swiglu(a, b);
    using y = fast.swiglu(b, a); // a compile-cache hit: same primitive object, another node
    using sum = ops.add(x, y);
    expect(ops.pendingPrimitives([sum])).toBe(3);
    const parts = ops.split(sum, [1, 3]);
    expect(ops.pendingPrimitives(parts)).toBe(4);
    sum.eval();
    expect(ops.pendingPrimitives(parts)).toBe(1);
    for (const p of parts) p.dispose();
  });
});

describe("pendingPrimitiveKinds", () => {
  test("names the primitives pendingPrimitives counts", () => {
    using a = Tensor.from(new Float32Array([1, 2, 3, 4]));
    using e = ops.exp(a);
    using sum = ops.add(e, a);
    expect(ops.pendingPrimitiveKinds([sum])).toEqual(
      new Map([
        ["Add", 1],
        ["Exp", 1],
      ]),
    );
    sum.eval();
    expect(ops.pendingPrimitiveKinds([sum]).size).toBe(0);
  });
});

describe("contiguous", () => {
  test("a column slice becomes a row-major copy with the same values (one Contiguous node)", () => {
    using a = Tensor.from(
      Float32Array.from({ length: 24 }, (_, i) => i),
      [4, 6],
    );
    using view = ops.slice(a, [0, 2], [4, 5]);
    using copy = ops.contiguous(view);
    expect([...ops.pendingPrimitiveKinds([copy]).keys()]).toContain("Contiguous");
    expect(copy.shape).toEqual([4, 3]);
    expect(Array.from(copy.toFloat32Array())).toEqual([2, 3, 4, 8, 9, 10, 14, 15, 16, 20, 21, 22]);
  });
});
