// CPU decode and prefill against llama.cpp (node-llama-cpp, its prebuilt CPU binary) on the same
// weights: the default model as mlx-bun runs it (its MLX 4-bit checkpoint, and the Q4_0 GGUF file
// that scripts/fixtures/gguf_files.py writes from it) and as llama.cpp runs the Q4_0 and Q8_0 GGUF
// files with 1 and 2 threads (this machine's cores); mlx-bun also with loadModel's cpuActivations
// "int8" (llama.cpp's Q4_0 path quantizes activations to int8 too). A 96-token prompt as ids, 128 greedy tokens;
// every side in a fresh process per round, rounds alternating; prefill = prompt tokens / time to the
// first token, decode = tokens/s after it, peak RSS of the process. Ratios against llama.cpp's best
// Q4_0 configuration.
import { existsSync } from "node:fs";
import { availableParallelism } from "node:os";
import { join } from "node:path";
import { DEFAULT_MODEL_DIR } from "../src/models/index.ts";
import { runLlamaCpp } from "./peer.ts";
import { summarize, table } from "./stats.ts";

const DATA = join(import.meta.dir, "..", "test", "fixtures", "data");
const PROMPT = Array.from({ length: 96 }, (_, t) => 1 + ((t * 37 + 11) % 8191));
const NEW = 128;
const ROUNDS = 3;

interface Rates {
  prefill: number;
  decode: number;
  rss: number;
}

function mlxb(path: string, activations: "float" | "int8" = "float"): Rates {
  const run = Bun.spawnSync(
    ["bun", join(import.meta.dir, "peers", "mlxb-rate.ts"), path, JSON.stringify(PROMPT), String(NEW), activations],
    { stderr: "pipe" },
  );
  if (run.exitCode !== 0) throw new Error(`bench cpu: mlx-bun failed: ${run.stderr.toString()}`);
  return JSON.parse(run.stdout.toString().trim().split("\n").pop()!) as Rates;
}

export async function run(): Promise<Record<string, unknown>> {
  const file = (kind: string) => join(DATA, `default-model-${kind}.gguf`);
  for (const kind of ["q4_0", "q8_0"]) {
    if (!existsSync(file(kind))) throw new Error(`bench cpu: ${file(kind)} is missing (bash scripts/fixtures.sh)`);
  }
  const sides: Record<string, () => Rates> = {
    "mlx-bun, MLX 4-bit (group 64)": () => mlxb(DEFAULT_MODEL_DIR),
    "mlx-bun, MLX 4-bit, int8 activations": () => mlxb(DEFAULT_MODEL_DIR, "int8"),
    "mlx-bun, GGUF Q4_0": () => mlxb(file("q4_0")),
  };
  const threads = Array.from({ length: availableParallelism() }, (_, i) => i + 1);
  for (const kind of ["q4_0", "q8_0"]) {
    for (const t of threads) {
      sides[`llama.cpp ${kind.toUpperCase()}, ${t} thread${t > 1 ? "s" : ""}`] = () =>
        runLlamaCpp("llama-cpp-rate.mjs", [file(kind), JSON.stringify(PROMPT), String(NEW), String(t)]) as Rates;
    }
  }
  const runs: Record<string, Rates[]> = Object.fromEntries(Object.keys(sides).map((s) => [s, []]));
  for (let r = 0; r < ROUNDS; r++) for (const [side, measure] of Object.entries(sides)) runs[side]!.push(measure());
  const median = (side: string, key: keyof Rates) => summarize(runs[side]!.map((x) => x[key])).median;
  const llamaQ4 = Object.keys(sides).filter((s) => s.startsWith("llama.cpp Q4_0"));
  const best = (key: "prefill" | "decode") => Math.max(...llamaQ4.map((s) => median(s, key)));
  table(
    `CPU, default model, ${PROMPT.length}-token prompt, ${NEW} greedy tokens (median of ${ROUNDS} alternating rounds, fresh processes)`,
    ["side", "decode tok/s", "x llama.cpp Q4_0", "prefill tok/s", "x llama.cpp Q4_0", "peak RSS MiB"],
    Object.keys(sides).map((side) => [
      side,
      median(side, "decode"),
      median(side, "decode") / best("decode"),
      median(side, "prefill"),
      median(side, "prefill") / best("prefill"),
      median(side, "rss") / 2 ** 20,
    ]),
  );
  return runs;
}
