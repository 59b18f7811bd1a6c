// The CPU kernel for decode-sized 4-bit matmuls (shim/qmv_cpu.cpp, used in place of MLX's
// QuantizedMatmul on the CPU for <= 8 float32 rows) against MLX's own dequantize + matmul: relative
// error <= 1e-5, strided inputs, and the shapes it does not take (9 rows, 8 bits) left to MLX.
import { expect, test } from "bun:test";
import { ops, quant, Tensor } from "../src/index.ts";

function random(n: number, seed: number): Float32Array {
  let s = seed;
  return Float32Array.from({ length: n }, () => ((s = (s * 1103515245 + 12345) % 2 ** 31) / 2 ** 31) - 0.5);
}

function relativeError(got: Float32Array, want: Float32Array): number {
  let worst = 0;
  const scale = Math.max(...want.map(Math.abs));
  for (let i = 0; i < got.length; i++) worst = Math.max(worst, Math.abs(got[i]! - want[i]!) / scale);
  return worst;
}

test.each([
  [1, 1536, 512, 64, 4],
  [1, 517, 256, 32, 4],
  [3, 300, 1024, 128, 4],
  [8, 64, 64, 64, 4],
  [9, 64, 64, 64, 4],
  [1, 256, 128, 64, 8],
])("rows %d, out %d, in %d, group %d, %d bits: equal to MLX's dequantize + matmul", (rows, out, features, groupSize, bits) => {
  using w = Tensor.from(random(out * features, 7), [out, features]);
  const q = quant.quantize(w, { groupSize, bits });
  using x = Tensor.from(random(rows * features, 11), [rows, features]);
  using got = quant.quantizedMatmul(x, q, { groupSize, bits });
  using dense = quant.dequantize(q, { groupSize, bits });
  using wt = ops.transpose(dense, [1, 0]);
  using want = ops.matmul(x, wt);
  expect(relativeError(got.toFloat32Array(), want.toFloat32Array())).toBeLessThanOrEqual(1e-5);
  quant.disposeQuantized(q);
});

test("a strided x (a transposed view) gives the same result as its contiguous copy", () => {
  using w = Tensor.from(random(96 * 128, 3), [96, 128]);
  const q = quant.quantize(w, { groupSize: 64, bits: 4 });
  using base = Tensor.from(random(128 * 2, 5), [128, 2]);
  using strided = ops.transpose(base, [1, 0]);
  using copy = Tensor.from(strided.toFloat32Array(), [2, 128]);
  using a = quant.quantizedMatmul(strided, q);
  using b = quant.quantizedMatmul(copy, q);
  expect(Array.from(a.toFloat32Array())).toEqual(Array.from(b.toFloat32Array()));
  quant.disposeQuantized(q);
});
