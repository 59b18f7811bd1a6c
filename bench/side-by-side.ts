// What the kernel benches (matvec, attention) share: inputs made on the device, MLX's side measured
// in a child process (the shim reads its switch to MLX's kernel once per process), and the table of
// both sides.
import { deviceInfo, ops, type Tensor } from "../src/index.ts";
import { evalAll } from "../src/ops/core.ts";
import { readBandwidth } from "./decode.ts";
import { type Sample, summarize, table } from "./stats.ts";

/** One measured case of a kernel bench. */
export interface KernelRow {
  /** The case's columns before the measurements (e.g. shape and rows). */
  labels: string[];
  /** The primitives the case's graph ran. */
  kernel: string;
  /** µs per call (median of the repeats) and the repeats' spread. */
  us: number;
  spread: number;
  /** GB/s of the bytes the call reads. */
  gbs: number;
  /** max |out - float32 math| / max |out|. */
  error: number;
}

/** sin(i * step) * scale for i < the shape's size, as a tensor of the dtype, made on the device (so
 * that large inputs take seconds). */
export function sines(shape: number[], step: number, scale: number, dtype: "bfloat16" | "float32"): Tensor {
  using i = ops.arange(
    0,
    shape.reduce((a, b) => a * b, 1),
    1,
    "float32",
  );
  using angle = ops.multiply(i, step);
  using s = ops.sin(angle);
  using scaled = ops.multiply(s, scale);
  using shaped = ops.reshape(scaled, shape);
  return ops.astype(shaped, dtype).eval();
}

/** max |got - want| / max |want|. */
export function relativeError(got: Float32Array, want: Float32Array): number {
  let worst = 0,
    largest = 0;
  for (let i = 0; i < got.length; i++) {
    worst = Math.max(worst, Math.abs(got[i]! - want[i]!));
    largest = Math.max(largest, Math.abs(want[i]!));
  }
  return worst / largest;
}

/** µs per call in a chain of `chain` calls evaluated as one graph, each made by `link` from the
 * previous one's output (undefined for the first), so that they run one after another: median and
 * spread of `repeats` runs after two warm ones. */
export function chainMicros(
  chain: number,
  repeats: number,
  link: (previous: Tensor | undefined, i: number) => Tensor,
): Sample {
  const times: number[] = [];
  for (let r = 0; r < repeats + 2; r++) {
    const outs: Tensor[] = [];
    for (let i = 0; i < chain; i++) outs.push(link(outs[i - 1], i));
    const start = Bun.nanoseconds();
    evalAll([outs[chain - 1]!]);
    if (r >= 2) times.push((Bun.nanoseconds() - start) / 1e3 / chain);
    for (const o of outs) o.dispose();
  }
  return summarize(times);
}

/** The rows `script` prints when run with --child under `env` (MLX's side). */
export function childRows(script: string, env: Record<string, string>, bench: string): KernelRow[] {
  const child = Bun.spawnSync([process.execPath, script, "--child"], {
    env: { ...process.env, ...env },
    stderr: "pipe",
  });
  const setting = Object.entries(env)
    .map(([k, v]) => `${k}=${v}`)
    .join(" ");
  if (child.exitCode !== 0) throw new Error(`bench ${bench}: the ${setting} child failed: ${child.stderr.toString()}`);
  return JSON.parse(child.stdout.toString().trim().split("\n").pop()!) as KernelRow[];
}

/** Prints ours and, when measured, MLX's rows side by side; `bandwidth` (GB/s, a GPU's read bound)
 * adds each of ours' share of it. */
export function sideBySide(
  title: string,
  labels: string[],
  ours: KernelRow[],
  mlx: KernelRow[] | null,
  bandwidth: number | null,
): void {
  const share = bandwidth
    ? `; share = of the read bandwidth (${bandwidth.toFixed(0)} GB/s, the decode bench's probe)`
    : "";
  table(
    `${title}${share}; error: max |out - float32 math| / max |out|`,
    [
      ...labels,
      "ours",
      "µs",
      "GB/s",
      ...(bandwidth ? ["share"] : []),
      "err ours",
      ...(mlx ? ["MLX's", "µs", "GB/s", "MLX/ours", "err MLX", "spread o/m"] : ["spread"]),
    ],
    ours.map((o, i) => {
      const m = mlx?.[i];
      const mine = [
        ...o.labels,
        o.kernel,
        o.us,
        o.gbs,
        ...(bandwidth ? [o.gbs / bandwidth] : []),
        o.error.toExponential(1),
      ];
      if (!m) return [...mine, o.spread.toFixed(2)];
      return [
        ...mine,
        m.kernel,
        m.us,
        m.gbs,
        m.us / o.us,
        m.error.toExponential(1),
        `${o.spread.toFixed(2)}/${m.spread.toFixed(2)}`,
      ];
    }),
  );
}

/** A kernel bench's run: ours measured here, MLX's (when `withMlx`) in a child process of `script`
 * under `mlxEnv`, printed side by side with a GPU's read bandwidth; what it returns is the results
 * file's entry. */
export function runSideBySide(options: {
  bench: string;
  script: string;
  measure: () => KernelRow[];
  withMlx: boolean;
  mlxEnv: Record<string, string>;
  title: string;
  labels: string[];
}): Record<string, unknown> {
  const bandwidth = deviceInfo().device === "gpu" ? readBandwidth() / 1e9 : null;
  const ours = options.measure();
  const mlx = options.withMlx ? childRows(options.script, options.mlxEnv, options.bench) : null;
  sideBySide(options.title, options.labels, ours, mlx, bandwidth);
  return { readBandwidthGBs: bandwidth, ours, mlx };
}
