// Decode-sized 4-bit matvecs: the shim's own kernel (shim/ext/qmv_cuda.cpp on a CUDA GPU,
// shim/ext/qmv_cpu.cpp on the CPU) against MLX's QuantizedMatmul, side by side in one run (MLX's in a
// child process with MLXB_QMV=mlx, which the shim reads once). Each timing evaluates one graph of
// CHAIN independent matvecs over copies of the weight that together exceed the caches (so weights
// come from memory, as in a decode step), reported per matvec: median of the repeats, and the
// weight bytes read per second. Also the largest error against float32 math on the same values.
import { deviceInfo, ops, quant, Tensor } from "../src/index.ts";
import { evalAll } from "../src/ops/core.ts";
import { summarize, table } from "./stats.ts";

const CHAIN = 64;
const REPEATS = 12;
const GROUP = 64;

interface Row {
  shape: string;
  kernel: string;
  us: number;
  spread: number;
  gbs: number;
  error: number;
}

function random(n: number, seed: number, scale: number): Float32Array {
  let s = seed;
  return Float32Array.from({ length: n }, () => ((s = (s * 1103515245 + 12345) % 2 ** 31) / 2 ** 31 - 0.5) * scale);
}

/** (dtype, out, in): a GPU gets the qwen3-8b/0.6b projections and lm_heads in bfloat16; the CPU a
 * small model's in float32 and bfloat16. */
function cases(): { shapes: ["bfloat16" | "float32", number, number][]; bytesOfCopies: number } {
  if (deviceInfo().device === "gpu") {
    const shapes: [number, number][] = [
      [6144, 4096],
      [4096, 4096],
      [24576, 4096],
      [4096, 12288],
      [151936, 4096],
      [4096, 1024],
      [151936, 1024],
    ];
    return { shapes: shapes.map(([n, k]) => ["bfloat16", n, k]), bytesOfCopies: 200e6 };
  }
  const shapes: [number, number][] = [
    [1536, 512],
    [8192, 512],
    [512, 1536],
    [32000, 512],
  ];
  return {
    shapes: (["float32", "bfloat16"] as const).flatMap((dtype) =>
      shapes.map(([n, k]): ["bfloat16" | "float32", number, number] => [dtype, n, k]),
    ),
    bytesOfCopies: 64e6,
  };
}

function measure(): Row[] {
  const { shapes, bytesOfCopies } = cases();
  const rows: Row[] = [];
  for (const [dtype, n, k] of shapes) {
    const bytes = n * k * 0.5 + n * (k / GROUP) * 2 * (dtype === "float32" ? 4 : 2);
    const copies = Math.max(2, Math.ceil(bytesOfCopies / bytes));
    using w32 = Tensor.from(random(n * k, 7, 0.1), [n, k]);
    using w = ops.astype(w32, dtype);
    const qs: quant.QuantizedWeight[] = [];
    for (let c = 0; c < copies; c++) {
      const q = quant.quantize(w, { groupSize: GROUP, bits: 4 });
      evalAll([q.weight, q.scales, q.biases!]);
      qs.push(q);
    }
    using x32 = Tensor.from(random(k, 11, 1), [1, k]);
    using x = ops.astype(x32, dtype).eval();
    using got = quant.quantizedMatmul(x, qs[0]!, { groupSize: GROUP });
    const kernel = [...ops.pendingPrimitiveKinds([got]).keys()].join(",");
    using got32 = ops.astype(got, "float32");
    using scales = ops.astype(qs[0]!.scales, "float32");
    using biases = ops.astype(qs[0]!.biases!, "float32");
    using dense = quant.dequantize({ weight: qs[0]!.weight, scales, biases }, { groupSize: GROUP });
    using wt = ops.transpose(dense, [1, 0]);
    using xf = ops.astype(x, "float32");
    using want = ops.matmul(xf, wt);
    const g = got32.toFloat32Array(),
      v = want.toFloat32Array();
    let worst = 0,
      largest = 0;
    for (let i = 0; i < g.length; i++) {
      worst = Math.max(worst, Math.abs(g[i]! - v[i]!));
      largest = Math.max(largest, Math.abs(v[i]!));
    }
    const times: number[] = [];
    for (let r = 0; r < REPEATS + 2; r++) {
      const outs = Array.from({ length: CHAIN }, (_, i) =>
        quant.quantizedMatmul(x, qs[i % copies]!, { groupSize: GROUP }),
      );
      const start = Bun.nanoseconds();
      evalAll(outs);
      if (r >= 2) times.push((Bun.nanoseconds() - start) / 1e3 / CHAIN);
      for (const o of outs) o.dispose();
    }
    const t = summarize(times);
    rows.push({
      shape: `${n} x ${k} ${dtype}`,
      kernel,
      us: t.median,
      spread: t.spread,
      gbs: bytes / t.median / 1e3,
      error: worst / largest,
    });
    for (const q of qs) quant.disposeQuantized(q);
  }
  return rows;
}

export function run(): Record<string, unknown> {
  const ours = measure();
  const child = Bun.spawnSync([process.execPath, import.meta.path, "--child"], {
    env: { ...process.env, MLXB_QMV: "mlx" },
    stderr: "pipe",
  });
  if (child.exitCode !== 0) throw new Error(`bench matvec: the MLXB_QMV=mlx child failed: ${child.stderr.toString()}`);
  const mlx = JSON.parse(child.stdout.toString().trim().split("\n").pop()!) as Row[];
  table(
    `4-bit matvec (group ${GROUP}, 1 row), µs per matvec in a graph of ${CHAIN}; GB/s of weights read; error: max |out - float32 math| / max |out|`,
    ["out x in", "ours", "µs", "GB/s", "MLX's", "µs", "GB/s", "MLX/ours", "err ours", "err MLX", "spread o/m"],
    ours.map((o, i) => {
      const m = mlx[i]!;
      return [
        o.shape,
        o.kernel,
        o.us,
        o.gbs,
        m.kernel,
        m.us,
        m.gbs,
        m.us / o.us,
        o.error.toExponential(1),
        m.error.toExponential(1),
        `${o.spread.toFixed(2)}/${m.spread.toFixed(2)}`,
      ];
    }),
  );
  return { ours, mlx };
}

if (import.meta.main && process.argv.includes("--child")) console.log(JSON.stringify(measure()));
