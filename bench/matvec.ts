// Decode-sized 4-bit matvecs: the shim's own kernel (shim/ext/qmv_cuda.cpp on a CUDA GPU,
// shim/ext/qmv_cpu.cpp on the CPU) against MLX's QuantizedMatmul, side by side in one run (MLX's in a
// child process with MLXB_QMV=mlx, which the shim reads once). Each timing evaluates one graph of a
// chain of CHAIN matvecs over copies of the weight that together exceed the caches (so weights come
// from memory, as in a decode step), each adding the previous one's output (quantizedMatmulAdd, the
// decode's residual form: ours one kernel, MLX's its QuantizedMatmul and an Add), so that they run one
// after another as a step's do (independent ones overlap on a GPU, hiding a kernel that does not
// fill it by itself), reported per matvec: median of the repeats, the weight
// bytes read per second and, on a GPU, their share of its read bandwidth (the decode bench's bound;
// MLX's sum on this CPU reads far below what a core can, so there it is no bound).
// Also the largest error against float32 math on the same values. Weights and x are made on the
// device (a sine hash), so that the large shapes take seconds.
// MLXB_BENCH_MATVEC_ROWS: rows of x, comma-separated (default 1; a batch's decode step has one a
// sequence). MLXB_BENCH_MATVEC_MLX=0 leaves MLX's side out (for trying launch shapes of ours with
// MLXB_QMV_SHAPE, or MLXB_QMV_MMA=0 for the CUDA kernel's float32 form: docs/gpu.md).
import { deviceInfo, ops, quant } from "../src/index.ts";
import { evalAll } from "../src/ops/core.ts";
import { chainMicros, type KernelRow, relativeError, runSideBySide, sines } from "./side-by-side.ts";

const CHAIN = 64;
const REPEATS = 12;
const GROUP = 64;
const ROWS = (process.env.MLXB_BENCH_MATVEC_ROWS ?? "1").split(",").map((r) => {
  const rows = Number(r);
  if (!Number.isInteger(rows) || rows < 1) throw new Error(`MLXB_BENCH_MATVEC_ROWS: '${r}' is not a positive integer`);
  return rows;
});
const WITH_MLX = process.env.MLXB_BENCH_MATVEC_MLX !== "0";

/** (dtype, out, in): a GPU gets the qwen3-8b/0.6b projections and lm_heads in bfloat16, and a
 * 256 x 512 product that reads almost nothing (a chained kernel's floor: launch, dependency and one
 * memory round trip); the CPU a small model's in float32 and bfloat16. */
function cases(): { shapes: ["bfloat16" | "float32", number, number][]; bytesOfCopies: number } {
  if (deviceInfo().device === "gpu") {
    const shapes: [number, number][] = [
      [6144, 4096],
      [4096, 4096],
      [24576, 4096],
      [4096, 12288],
      [151936, 4096],
      [4096, 1024],
      [6144, 1024],
      [1024, 3072],
      [151936, 1024],
      [256, 512],
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

function measure(): KernelRow[] {
  const { shapes, bytesOfCopies } = cases();
  const out: KernelRow[] = [];
  for (const [dtype, n, k] of shapes) {
    const bytes = n * k * 0.5 + n * (k / GROUP) * 2 * (dtype === "float32" ? 4 : 2);
    const copies = Math.max(2, Math.ceil(bytesOfCopies / bytes));
    const qs: quant.QuantizedWeight[] = [];
    {
      using w = sines([n, k], 12.9898, 0.1, dtype);
      for (let c = 0; c < copies; c++) {
        const q = quant.quantize(w, { groupSize: GROUP, bits: 4 });
        evalAll([q.weight, q.scales, q.biases!]);
        qs.push(q);
      }
    }
    using scales = ops.astype(qs[0]!.scales, "float32");
    using biases = ops.astype(qs[0]!.biases!, "float32");
    using dense = quant.dequantize({ weight: qs[0]!.weight, scales, biases }, { groupSize: GROUP });
    using wt = ops.transpose(dense, [1, 0]);
    for (const rows of ROWS) {
      using x = sines([rows, k], 0.7, 1, dtype);
      using zero = ops.zeros([rows, n], dtype).eval();
      using got = quant.quantizedMatmulAdd(x, qs[0]!, zero, { groupSize: GROUP });
      const kernel = [...ops.pendingPrimitiveKinds([got]).keys()].join(",");
      using got32 = ops.astype(got, "float32");
      using xf = ops.astype(x, "float32");
      using want = ops.matmul(xf, wt);
      const error = relativeError(got32.toFloat32Array(), want.toFloat32Array());
      const t = chainMicros(CHAIN, REPEATS, (previous, i) =>
        quant.quantizedMatmulAdd(x, qs[i % copies]!, previous ?? zero, { groupSize: GROUP }),
      );
      out.push({
        labels: [`${n} x ${k} ${dtype}`, String(rows)],
        kernel,
        us: t.median,
        spread: t.spread,
        gbs: bytes / t.median / 1e3,
        error,
      });
    }
    for (const q of qs) quant.disposeQuantized(q);
  }
  return out;
}

export function run(): Record<string, unknown> {
  return runSideBySide({
    bench: "matvec",
    script: import.meta.path,
    measure,
    withMlx: WITH_MLX,
    mlxEnv: { MLXB_QMV: "mlx" },
    title:
      `4-bit matvec (group ${GROUP}), µs per matvec in a chain of ${CHAIN} (each adds the previous output; ` +
      `MLX's: QuantizedMatmul + Add); GB/s of weights read` +
      (process.env.MLXB_QMV_SHAPE ? `; ours with MLXB_QMV_SHAPE=${process.env.MLXB_QMV_SHAPE}` : "") +
      (process.env.MLXB_QMV_MMA === "0" ? "; ours with MLXB_QMV_MMA=0" : ""),
    labels: ["out x in", "rows"],
  });
}

if (import.meta.main && process.argv.includes("--child")) console.log(JSON.stringify(measure()));
