// The pure-TypeScript CPU reference ops against MLX on the same inputs (MLX is itself checked against
// Python MLX in ops.test.ts), so either side drifting fails here.
import { describe, expect, test } from "bun:test";
import * as cpu from "../src/ops/cpu.ts";
import { fast, ops, quant, Tensor } from "../src/index.ts";
import { maxAbsDiff } from "./helpers.ts";

let seed = 7;
function random(shape: number[], scale = 1): cpu.CpuTensor {
  const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
  for (let i = 0; i < data.length; i++) {
    seed = (seed * 16807) % 2147483647;
    data[i] = ((seed / 2147483647) * 2 - 1) * scale;
  }
  return new cpu.CpuTensor(data, shape);
}
const mlx = (t: cpu.CpuTensor) => Tensor.from(t.data, [...t.shape]);

function same(got: cpu.CpuTensor, expected: Tensor, tolerance = 1e-5): void {
  expect(got.shape).toEqual(expected.shape);
  expect(maxAbsDiff(got.data, expected.toFloat32Array())).toBeLessThanOrEqual(tolerance);
}

describe("CPU reference vs MLX", () => {
  const a = random([2, 3, 4]);
  const row = random([4]);
  const b = random([2, 3, 4]);
  const positive = cpu.add(cpu.multiply(random([2, 3, 4]), random([2, 3, 4])), 1.5);

  test("elementwise with broadcasting", () => {
    same(cpu.add(a, row), ops.add(mlx(a), mlx(row)));
    same(cpu.subtract(a, b), ops.subtract(mlx(a), mlx(b)));
    same(cpu.multiply(a, 3), ops.multiply(mlx(a), 3));
    same(cpu.divide(a, positive), ops.divide(mlx(a), mlx(positive)));
    same(cpu.exp(a), ops.exp(mlx(a)));
    same(cpu.rsqrt(positive), ops.rsqrt(mlx(positive)));
    same(cpu.silu(a), ops.silu(mlx(a)));
    const wide = random([64], 4);
    same(cpu.gelu(wide), ops.gelu(mlx(wide)));
    same(cpu.gelu(wide, true), ops.gelu(mlx(wide), true));
    expect(() => cpu.add(a, random([3]))).toThrow("add: shapes [2,3,4] and [3] cannot be broadcast");
  });

  test("layout ops", () => {
    same(cpu.transpose(a, [2, 0, 1]), ops.transpose(mlx(a), [2, 0, 1]));
    same(cpu.reshape(a, [6, -1]), ops.reshape(mlx(a), [6, 4]));
    same(cpu.slice(a, [0, 1, 0], [2, 3, 4], [1, 1, 2]), ops.slice(mlx(a), [0, 1, 0], [2, 3, 4], [1, 1, 2]));
    const update = random([2, 1, 4]);
    same(cpu.sliceUpdate(a, update, [0, 2, 0]), ops.sliceUpdate(mlx(a), mlx(update), [0, 2, 0], [2, 3, 4]));
    const c = random([2, 5, 4]);
    same(cpu.concatenate([a, c], 1), ops.concatenate([mlx(a), mlx(c)], 1));
    const ids = new Int32Array([3, 0, 5, 5]);
    const table = random([6, 4]);
    same(cpu.take(table, ids, [2, 2]), ops.take(mlx(table), Tensor.from(ids, [2, 2]), 0));
    expect(() => cpu.take(table, new Int32Array([6]), [1])).toThrow("take: index 6 out of range for 6 rows");
  });

  test("reductions, softmax, argmax, batched matmul", () => {
    same(cpu.mean(a), ops.mean(mlx(a), -1, true));
    const logits = random([3, 11], 4);
    same(cpu.softmax(logits), ops.softmax(mlx(logits), -1, true));
    expect(Array.from(cpu.argmax(logits))).toEqual(Array.from(ops.argmax(mlx(logits), -1).toInt32Array()));
    const x = random([2, 1, 5, 16]);
    const w = random([3, 16, 7]);
    same(cpu.matmul(x, w), ops.matmul(mlx(x), mlx(w)), 1e-5);
    expect(() => cpu.matmul(x, random([8, 2]))).toThrow("matmul: [2,1,5,16] @ [8,2]: inner dimensions 16 and 8 differ");
  });

  test("norms, rope, attention, swiglu", () => {
    const x = random([2, 5, 32]);
    const w = random([32]);
    const bias = random([32]);
    same(cpu.rmsNorm(x, w, 1e-5), fast.rmsNorm(mlx(x), mlx(w), 1e-5));
    same(cpu.layerNorm(x, w, bias, 1e-5), fast.layerNorm(mlx(x), mlx(w), mlx(bias), 1e-5));
    same(cpu.layerNorm(x, null, null, 1e-5), fast.layerNorm(mlx(x), null, null, 1e-5));

    const q = random([2, 4, 3, 16]);
    const positions = new Int32Array([5, 6, 7, 11, 12, 13]);
    const inverse = Float32Array.from({ length: 8 }, (_, i) => 1 / 10000 ** ((2 * i) / 16));
    same(
      cpu.rope(q, 16, positions, inverse),
      fast.rope(mlx(q), { dims: 16, base: 10000, offset: Tensor.from(new Int32Array([5, 11])) }),
      1e-5,
    );
    const partial = random([1, 2, 3, 16]);
    same(
      cpu.rope(
        partial,
        8,
        new Int32Array([0, 1, 2]),
        inverse.slice(0, 4).map((_, i) => 1 / 10000 ** ((2 * i) / 8)),
      ),
      fast.rope(mlx(partial), { dims: 8, base: 10000 }),
    );

    const k = random([2, 2, 6, 16]);
    const v = random([2, 2, 6, 16]);
    const scale = 0.25;
    same(
      cpu.attention(q, k, v, { scale, causal: false }),
      fast.scaledDotProductAttention(mlx(q), mlx(k), mlx(v), { scale }),
    );
    const keyMask = new Int32Array([1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1]);
    const additive = new Float32Array(2 * 3 * 6);
    for (let bb = 0; bb < 2; bb++) {
      for (let t = 0; t < 3; t++) {
        for (let s = 0; s < 6; s++) {
          const hidden = s > 3 + t || keyMask[bb * 6 + s] === 0;
          additive[(bb * 3 + t) * 6 + s] = hidden ? Number.NEGATIVE_INFINITY : 0;
        }
      }
    }
    same(
      cpu.attention(q, k, v, { scale, causal: true, offset: 3, keyMask }),
      fast.scaledDotProductAttention(mlx(q), mlx(k), mlx(v), { scale, mask: Tensor.from(additive, [2, 1, 3, 6]) }),
    );
    const gate = random([3, 24]);
    const up = random([3, 24]);
    same(cpu.swiglu(gate, up), fast.swiglu(mlx(gate), mlx(up)));
  });

  test("affine dequantization of MLX-packed weights (2, 4, 8 bits)", () => {
    const w = random([8, 128], 0.1);
    for (const bits of [2, 4, 8]) {
      const q = quant.quantize(mlx(w), { bits, groupSize: 64 });
      const packed = new Uint32Array(q.weight.toBytes().buffer);
      const scales = new cpu.CpuTensor(q.scales.toFloat32Array(), [...q.scales.shape]);
      const biases = new cpu.CpuTensor(q.biases!.toFloat32Array(), [...q.biases!.shape]);
      same(cpu.dequantizeAffine(packed, scales, biases, 8, 64, bits), quant.dequantize(q, { bits, groupSize: 64 }));
    }
    expect(() => cpu.dequantizeAffine(new Uint32Array(3), random([1, 1]), random([1, 1]), 1, 32, 3)).toThrow(
      "3-bit values straddle words",
    );
  });
});
