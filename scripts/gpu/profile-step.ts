// Where mlx-bun's decode step spends its GPU time: a greedy generation of a bench model (bench/decode.ts's
// names: default, qwen3-0.6b:bf16, qwen3-8b:bf16, ...) with the kernel-time profiler
// (scripts/gpu/kernel_times.cpp, through CUPTI) recording STEPS decode steps after 16 warm ones.
// Prints per step: wall time, kernels, GPU span and busy time (union of kernel intervals), and the
// kernels taking the most time. On the lent GPU machine (docs/gpu.md):
//   bash scripts/gpu/device.sh bun scripts/gpu/profile-step.ts MODEL [PROMPT_TOKENS] [STEPS]
import { dlopen, FFIType } from "bun:ffi";
import { readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { benchModel } from "../../bench/decode.ts";
import { table } from "../../bench/stats.ts";
import { generate } from "../../src/engine/generate.ts";
import { loadModel } from "../../src/models/index.ts";
import { Tokenizer } from "../../src/tokenizer/tokenizer.ts";

const [name = "default", promptArg = "512", stepsArg = "64"] = process.argv.slice(2);
const path = process.env.MLXB_KERNEL_TIMES;
if (!path) throw new Error("profile-step: MLXB_KERNEL_TIMES (the built kernel_times library) is not set");
const profiler = dlopen(path, {
  kt_start: { returns: FFIType.i32 },
  kt_stop: { args: [FFIType.ptr], returns: FFIType.i32 },
}).symbols;
const WARM = 16;
const steps = Number(stepsArg);
const dir = benchModel(name);
const model = loadModel(dir, { backend: "mlx" });
const tokenizer = Tokenizer.fromDir(dir);
const prompt = Array.from({ length: Number(promptArg) }, (_, i) => (i * 37) % 1000);
const out = join(tmpdir(), `kernel-times-${process.pid}.json`);

let n = 0;
let start = 0;
for await (const _ of generate(model, tokenizer, prompt, { maxTokens: WARM + steps + 1, ignoreEos: true })) {
  n++;
  if (n === WARM) {
    const r = profiler.kt_start();
    if (r !== 0) throw new Error(`profile-step: kt_start failed (CUPTI ${r})`);
    start = performance.now();
  }
}
const wallMs = (performance.now() - start) / steps;
const r = profiler.kt_stop(Buffer.from(`${out}\0`));
if (r !== 0) throw new Error(`profile-step: kt_stop failed (${r})`);
model.dispose();

const report = JSON.parse(readFileSync(out, "utf8")) as {
  kernels: number;
  spanNs: number;
  busyNs: number;
  byName: { name: string; count: number; ns: number }[];
};
const perStep = (ns: number) => ns / 1000 / steps;
console.log(
  `${dir.split("/").pop()}, ${prompt.length}-token prompt, ${steps} decode steps: wall ${(wallMs * 1000).toFixed(1)} µs/step, ` +
    `${(report.kernels / steps).toFixed(1)} kernels/step, GPU span ${perStep(report.spanNs).toFixed(1)} µs/step, ` +
    `busy ${perStep(report.busyNs).toFixed(1)} µs/step (${((report.busyNs / report.spanNs) * 100).toFixed(1)}% of span)`,
);
/** A kernel's name cut to 90 characters, its grid kept. */
const short = (s: string) => {
  const at = s.lastIndexOf(" [");
  const [name, grid] = at < 0 ? [s, ""] : [s.slice(0, at), s.slice(at)];
  return (name.length > 90 ? `${name.slice(0, 87)}...` : name) + grid;
};
table(
  "Kernels (and grids) by GPU time per step",
  ["kernel", "per step", "µs/step", "share of busy", "µs each"],
  report.byName
    .sort((a, b) => b.ns - a.ns)
    .slice(0, 40)
    .map((k) => [short(k.name), k.count / steps, perStep(k.ns), k.ns / report.busyNs, k.ns / k.count / 1000]),
);
