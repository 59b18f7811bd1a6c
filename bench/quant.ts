import { loadCheckpoint } from "../src/io/checkpoint.ts";
import { linear } from "../src/quant/linear.ts";
import { evalAll } from "../src/ops/core.ts";
import { DEFAULT_MODEL_DIR, ops, quant, Tensor } from "../src/index.ts";
import { runPeer } from "./peer.ts";
import { type Sample, summarize, table, timeNs } from "./stats.ts";

const N = 4096;

function random(shape: number[]): Tensor {
  const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
  for (let i = 0; i < data.length; i++) data[i] = Math.sin(i * 0.37) * 0.05;
  return Tensor.from(data, shape).eval();
}

export function run(): Record<string, unknown> {
  const results: Record<string, unknown> = {};
  using w = random([N, N]);
  using wt = ops.transpose(w).eval();
  const q = quant.quantize(w, { bits: 4, groupSize: 64 });
  evalAll([q.weight, q.scales, q.biases!]);
  const rows: (string | number)[][] = [];
  for (const [label, tokens] of [
    ["decode", 1],
    ["prefill", 512],
  ] as const) {
    using x = random([tokens, N]);
    const dense = timeNs(() => ops.matmul(x, wt).eval().dispose(), tokens === 1 ? 20 : 2, 9, 2);
    const packed = timeNs(
      () => quant.quantizedMatmul(x, q, { bits: 4, groupSize: 64 }).eval().dispose(),
      tokens === 1 ? 20 : 2,
      tokens === 1 ? 9 : 3,
      tokens === 1 ? 2 : 1,
    );
    const weights = new Map([
      ["w.weight", q.weight],
      ["w.scales", q.scales],
      ["w.biases", q.biases!],
    ]);
    const config = { global: { mode: "affine" as const, bits: 4, groupSize: 64 }, layers: new Map() };
    const viaLinear = timeNs(() => linear(x, weights, "w", config).eval().dispose(), tokens === 1 ? 20 : 2, 9, 2);
    rows.push([
      `${label} [${tokens}x${N}] @ [${N}x${N}]`,
      dense.median / 1e3,
      packed.median / 1e3,
      viaLinear.median / 1e3,
      dense.median / packed.median,
      dense.median / viaLinear.median,
      dense.spread,
      packed.spread,
      viaLinear.spread,
    ]);
    results[`matmul ${label}`] = { dense, packed, viaLinear };
  }
  table(
    "4-bit (group 64) vs dense float32 matmul (µs per call incl. eval); linear() = mlx-bun's layer (dequantize + BLAS on the CPU from 4 rows)",
    ["shape", "dense µs", "qmm µs", "linear() µs", "dense/qmm", "dense/linear", "spread d", "spread q", "spread l"],
    rows,
  );
  quant.disposeQuantized(q);

  const quantize: Sample = timeNs(
    () => quant.disposeQuantized(evalQuantized(quant.quantize(w, { bits: 4, groupSize: 64 }))),
    1,
    7,
    1,
  );
  const mbPerSecond = (N * N * 4) / 1e6 / (quantize.median / 1e9);
  table(
    "Quantize throughput",
    ["what", "ms", "MB/s of float32 in", "spread"],
    [[`${N}x${N} float32 -> 4-bit`, quantize.median / 1e6, mbPerSecond, quantize.spread]],
  );
  results.quantize = { ...quantize, mbPerSecond };

  const dir = DEFAULT_MODEL_DIR;
  const loads: number[] = [];
  for (let i = 0; i < 7; i++) {
    const start = Bun.nanoseconds();
    const ckpt = loadCheckpoint(dir);
    evalAll([...ckpt.weights.values()]);
    loads.push((Bun.nanoseconds() - start) / 1e6);
    ckpt.dispose();
  }
  const ours = summarize(loads.slice(2));
  const peer = runPeer("load.py", [dir]) as Sample;
  table(
    "Checkpoint load (default model, ms to weights evaluated)",
    ["mlx-bun", "mlx-lm load", "ratio mlx-lm/bun", "spread bun", "spread mlx-lm"],
    [[ours.median, peer.median, peer.median / ours.median, ours.spread, peer.spread]],
  );
  results.load = { mlxBun: ours, mlxLm: peer };
  return results;
}

function evalQuantized(q: quant.QuantizedWeight): quant.QuantizedWeight {
  evalAll([q.weight, q.scales, ...(q.biases ? [q.biases] : [])]);
  return q;
}
