// FFI/host overhead: ns per call of a trivial op (no eval) and of building a 30-op graph,
// mlx-bun vs Python MLX on the same libmlx.so, same machine, one after the other.
import { ops, Tensor } from "../src/index.ts";
import { check, native, outPointer, outWords } from "../src/native/ffi.ts";
import { runPeer } from "./peer.ts";
import { type Sample, table, timeNs } from "./stats.ts";

export function run(): Record<string, Sample | number> {
  using a = Tensor.from(new Float32Array(256).fill(1), [16, 16]).eval();
  using b = Tensor.from(new Float32Array(256).fill(1), [16, 16]).eval();
  const add = timeNs(() => ops.add(a, b).dispose(), 20000);
  // Where an add + free goes, layer by layer (each row includes the ones above it).
  const lib = native();
  const [ha, hb] = [a.handle, b.handle];
  const ndim = new Int32Array(1);
  const ffi = timeNs(() => lib.mlx_array_ndim(ndim, ha), 20000);
  const floor = new Float64Array(1);
  check(lib.mlx_bench_add_floor(floor, ha, hb, 20000, 15), "add floor");
  const shim = timeNs(() => {
    check(lib.mlx_add(outWords, ha, hb), "add");
    lib.mlx_array_free(outPointer());
  }, 20000);
  const wrapped = timeNs(() => {
    check(lib.mlx_add(outWords, ha, hb), "add");
    new Tensor(outPointer()).dispose();
  }, 20000);
  table(
    "Where mlx-bun's add + free goes (ns, median; each row includes the ones above)",
    ["layer", "ns"],
    [
      ["FFI call (mlx_array_ndim)", ffi.median],
      ["MLX's mx::add + destroy in C++ (best of 15; the floor)", floor[0]!],
      ["shim mlx_add + mlx_array_free over FFI (guard, handle)", shim.median],
      ["+ Tensor construction and dispose (tracking deferred)", wrapped.median],
      ["ops.add + dispose (argument checks)", add.median],
    ],
  );
  const graph30 = timeNs(() => {
    let x = ops.add(a, b);
    for (let i = 0; i < 10; i++) {
      const y = i === 0 ? x : ops.add(x, b);
      if (i > 0) x.dispose();
      const z = ops.multiply(y, b);
      y.dispose();
      x = ops.exp(z);
      z.dispose();
    }
    x.dispose();
  }, 2000);
  const peer = runPeer("overhead.py") as { add: Sample; graph30: Sample };
  table(
    "FFI/host overhead (ns per call, no eval; median, spread = (p90-p10)/median)",
    ["what", "mlx-bun", "python mlx", "ratio py/bun", "spread bun", "spread py"],
    [
      ["add(a, b) + free", add.median, peer.add.median, peer.add.median / add.median, add.spread, peer.add.spread],
      [
        "30-op graph build",
        graph30.median,
        peer.graph30.median,
        peer.graph30.median / graph30.median,
        graph30.spread,
        peer.graph30.spread,
      ],
    ],
  );
  return { add, graph30, pythonAdd: peer.add, pythonGraph30: peer.graph30, ffi, cppFloor: floor[0]!, shim, wrapped };
}
