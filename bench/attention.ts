// One query position's attention over a KV cache (a decode step's, per layer): the shim's kernel
// (shim/ext/attention_cuda.cpp on a CUDA GPU, fast_cpu.cpp on the CPU) against MLX's (in a child
// process with MLXB_CUDA_ATTENTION=mlx, which the shim reads once; on the CPU ours only). Each
// timing evaluates one graph of a chain of CHAIN attentions, each one's output the next one's query
// (so they run one after another, as a step's layers do), over copies of the keys and values that
// together exceed the caches (as a step's layers read theirs from memory); reported per attention:
// median of the repeats, the key and value bytes read per second and, on a GPU, their share of its
// read bandwidth. Also the largest error of the first link against float32 math.
// The qwen3-8b (32 query heads over 8) and qwen3-0.6b (16 over 8) shapes, head dim 128, bfloat16,
// at several numbers of keys. MLXB_ATTENTION_CHUNKS=MIN,TARGET tries other chunkings of ours.
import { deviceInfo, fast, ops, type Tensor } from "../src/index.ts";
import { chainMicros, type KernelRow, relativeError, runSideBySide, sines } from "./side-by-side.ts";

const CHAIN = 64;
const REPEATS = 12;
const DIM = 128;
const WITH_MLX = process.env.MLXB_BENCH_ATTENTION_MLX !== "0" && deviceInfo().device === "gpu";

/** softmax(q k^T * scale) v in float32 for q [1, Hq, 1, D] over k, v [1, Hkv, L, D]. */
function reference(q: Tensor, k: Tensor, v: Tensor, scale: number): Float32Array {
  const [, hq, , d] = q.shape as [number, number, number, number];
  const [, hkv, keys] = k.shape as [number, number, number];
  using qf = ops.astype(q, "float32");
  using q5 = ops.reshape(qf, [1, hkv, hq / hkv, 1, d]);
  using kf = ops.astype(k, "float32");
  using k5 = ops.reshape(kf, [1, hkv, 1, keys, d]);
  using vf = ops.astype(v, "float32");
  using v5 = ops.reshape(vf, [1, hkv, 1, keys, d]);
  using kt = ops.transpose(k5, [0, 1, 2, 4, 3]);
  using scores = ops.matmul(q5, kt);
  using scaled = ops.multiply(scores, scale);
  using weights = ops.softmax(scaled, -1, true);
  using out = ops.matmul(weights, v5);
  return out.toFloat32Array();
}

function measure(): KernelRow[] {
  const out: KernelRow[] = [];
  const gpu = deviceInfo().device === "gpu";
  const heads: [string, number, number][] = [
    ["qwen3-8b", 32, 8],
    ["qwen3-0.6b", 16, 8],
  ];
  const lengths = gpu ? [64, 576, 2048, 8192] : [64, 576, 2048];
  const dtype = gpu ? "bfloat16" : "float32";
  const scale = 1 / Math.sqrt(DIM);
  for (const [name, hq, hkv] of heads) {
    for (const keys of lengths) {
      const bytes = 2 * hkv * keys * DIM * (dtype === "bfloat16" ? 2 : 4);
      const copies = Math.max(2, Math.ceil((gpu ? 200e6 : 64e6) / bytes));
      const ks: Tensor[] = [];
      const vs: Tensor[] = [];
      for (let c = 0; c < copies; c++) {
        ks.push(sines([1, hkv, keys, DIM], 0.37 + c * 1e-3, 1, dtype));
        vs.push(sines([1, hkv, keys, DIM], 0.11 + c * 1e-3, 1, dtype));
      }
      using q = sines([1, hq, 1, DIM], 0.7, 1, dtype);
      using got = fast.scaledDotProductAttention(q, ks[0]!, vs[0]!, { scale });
      const kernel = [...ops.pendingPrimitiveKinds([got]).keys()].join(",");
      using got32 = ops.astype(got, "float32");
      const error = relativeError(got32.toFloat32Array(), reference(q, ks[0]!, vs[0]!, scale));
      const t = chainMicros(CHAIN, REPEATS, (previous, i) =>
        fast.scaledDotProductAttention(previous ?? q, ks[i % copies]!, vs[i % copies]!, { scale }),
      );
      out.push({
        labels: [`${name} ${hq}/${hkv} ${dtype}`, String(keys)],
        kernel,
        us: t.median,
        spread: t.spread,
        gbs: bytes / t.median / 1e3,
        error,
      });
      for (const x of [...ks, ...vs]) x.dispose();
    }
  }
  return out;
}

export function run(): Record<string, unknown> {
  return runSideBySide({
    bench: "attention",
    script: import.meta.path,
    measure,
    withMlx: WITH_MLX,
    mlxEnv: { MLXB_CUDA_ATTENTION: "mlx" },
    title:
      `Decode attention (1 query, head dim ${DIM}), µs per attention in a chain of ${CHAIN} (each one's output the ` +
      "next one's query); GB/s of keys and values read" +
      (process.env.MLXB_ATTENTION_CHUNKS
        ? `; ours with MLXB_ATTENTION_CHUNKS=${process.env.MLXB_ATTENTION_CHUNKS}`
        : ""),
    labels: ["shape", "keys"],
  });
}

if (import.meta.main && process.argv.includes("--child")) console.log(JSON.stringify(measure()));
