// Times the CUDA 4-bit matvec alone (no peer) on the decode shapes of bench/matvec.ts, for trying
// launch shapes: run once per setting, e.g. MLXB_QMV_SHAPE=16,1,8,2 bun scripts/gpu/qmv-tune.ts 1.
// The argument is x's rows (default 1). Weights are made on the device (a sine hash), so a run takes
// seconds; µs per matvec in a graph of 64 over copies that exceed the caches, median of 12.
import { ops, quant } from "../../src/index.ts";
import { evalAll } from "../../src/ops/core.ts";

const rows = Number(process.argv[2] ?? 1);
const all: [number, number][] = [
  [6144, 4096],
  [4096, 4096],
  [24576, 4096],
  [4096, 12288],
  [151936, 4096],
  [4096, 1024],
  [6144, 1024],
  [1024, 3072],
  [151936, 1024],
];
const shapes = process.env.QMV_TUNE_SMALL ? all.slice(5, 8) : all;
const out: string[] = [];
for (const [n, k] of shapes) {
  const bytes = n * k * 0.5 + n * (k / 64) * 4;
  const copies = Math.max(2, Math.ceil(200e6 / bytes));
  using i = ops.arange(0, n * k, 1, "float32");
  using h = ops.sin(ops.multiply(i, 12.9898));
  using w32 = ops.reshape(ops.multiply(h, 0.1), [n, k]);
  using w = ops.astype(w32, "bfloat16");
  const qs = Array.from({ length: copies }, () => quant.quantize(w, { groupSize: 64, bits: 4 }));
  evalAll(qs.flatMap((q) => [q.weight, q.scales, q.biases!]));
  using xi = ops.arange(0, rows * k, 1, "float32");
  using x = ops.astype(ops.reshape(ops.sin(xi), [rows, k]), "bfloat16").eval();
  const times: number[] = [];
  for (let r = 0; r < 14; r++) {
    const outs = Array.from({ length: 64 }, (_, c) => quant.quantizedMatmul(x, qs[c % copies]!, { groupSize: 64 }));
    const start = Bun.nanoseconds();
    evalAll(outs);
    if (r >= 2) times.push((Bun.nanoseconds() - start) / 1e3 / 64);
    for (const o of outs) o.dispose();
  }
  times.sort((a, b) => a - b);
  const us = times[times.length >> 1]!;
  out.push(`${n}x${k} ${us.toFixed(2)}us ${(bytes / us / 1e3).toFixed(0)}GB/s`);
  for (const q of qs) quant.disposeQuantized(q);
}
console.log(
  `rows ${rows} shape ${process.env.MLXB_QMV_SHAPE ?? "auto"} mma ${process.env.MLXB_QMV_MMA ?? "1"}: ${out.join(" | ")}`,
);
