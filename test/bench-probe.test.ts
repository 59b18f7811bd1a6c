// The shim's read-bandwidth probe (`bench decode`'s bound): it sums a buffer of ones and checks the
// sum against the element count before timing (on a CUDA GPU by a kernel of the shim's from 1 MiB,
// elsewhere MLX's sum), so a probe that skipped part of the buffer fails here rather than inflating
// the bound.
import { expect, test } from "bun:test";
import { check, native } from "../src/native/ffi.ts";

test.each([
  [4, "one float"],
  [4 * 1027, "1027 floats"],
  [2 ** 24, "16 MiB"],
  [2 ** 24 + 12, "16 MiB and a tail of 3 floats past the 16-byte loads"],
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
