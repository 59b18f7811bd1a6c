// The shim's read-bandwidth probe (`bench decode`'s bound): on a CUDA GPU a kernel of the shim's
// (from 1 MiB) whose sum of a buffer of ones is checked against the element count before timing, so
// a probe that skipped part of the buffer fails here rather than inflating the bound; elsewhere MLX's
// sum (whose float32 sum of many ones is not their count: the 256 MiB case).
import { expect, test } from "bun:test";
import { check, native } from "../src/native/ffi.ts";

test.each([
  [4, "one float"],
  [4 * 1027, "1027 floats"],
  [2 ** 24, "16 MiB"],
  [2 ** 24 + 12, "16 MiB and a tail of 3 floats past the 16-byte loads"],
  [2 ** 28, "256 MiB: more ones than a float32 sum counts exactly"],
])("read bandwidth over %d bytes (%s): the buffer's sum checked, a positive rate", (bytes) => {
  const out = new Float64Array(1);
  check(native().mlx_bench_read_bandwidth(out, bytes, 2), "read bandwidth");
  expect(Number.isFinite(out[0]!)).toBe(true);
  expect(out[0]!).toBeGreaterThan(0);
});

test("read bandwidth: a bad size or repeat count is an Error naming it", () => {
  const out = new Float64Array(1);
  expect(() => check(native().mlx_bench_read_bandwidth(out, 2, 1), "read bandwidth")).toThrow(/nbytes/);
  expect(() => check(native().mlx_bench_read_bandwidth(out, 1024, 0), "read bandwidth")).toThrow(/repeats/);
});
