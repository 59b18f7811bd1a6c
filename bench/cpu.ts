// CPU decode and prefill against llama.cpp (node-llama-cpp, its prebuilt CPU binary) for each model
// of MLXB_BENCH_MODELS: the default model on the same weights (its MLX 4-bit checkpoint, and the Q4_0
// GGUF file that scripts/fixtures/gguf_files.py writes from it, as mlx-bun runs them; the Q4_0 and
// Q8_0 GGUF files as llama.cpp runs them), a random-weight shape (qwen3-0.6b) against a random Q4_0
// GGUF file of that shape; llama.cpp with 1..cores threads; mlx-bun also with loadModel's
// cpuActivations "int8" (llama.cpp's Q4_0 path quantizes activations to int8 too). A 96-token prompt
// as ids, 128 greedy tokens; every side in a fresh process per round, rounds alternating; prefill =
// prompt tokens / time to the first token, decode = tokens/s after it, peak RSS of the process.
// Ratios against llama.cpp's best Q4_0 configuration.
import { existsSync } from "node:fs";
import { availableParallelism } from "node:os";
import { join } from "node:path";
import { DEFAULT_MODEL_DIR } from "../src/models/index.ts";
import { benchModel, randomQ4Gguf } from "./decode.ts";
import { runLlamaCpp } from "./peer.ts";
import { summarize, table } from "./stats.ts";

const DATA = join(import.meta.dir, "..", "test", "fixtures", "data");
const PROMPT = Array.from({ length: 96 }, (_, t) => 1 + ((t * 37 + 11) % 8191));
const NEW = 128;
const ROUNDS = Number(process.env.MLXB_BENCH_ROUNDS ?? 5);

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

/** The sides of one model: mlx-bun on its MLX 4-bit checkpoint (float and int8 activations) and,
 * for the default model, on the Q4_0 GGUF file of the same weights; llama.cpp on Q4_0 (and for the
 * default model Q8_0) GGUF files with 1..cores threads. */
function sides(name: string): Record<string, () => Rates> {
  const threads = Array.from({ length: availableParallelism() }, (_, i) => i + 1);
  const llama = (label: string, gguf: string) =>
    Object.fromEntries(
      threads.map((t) => [
        `llama.cpp ${label}, ${t} thread${t > 1 ? "s" : ""}`,
        () => runLlamaCpp("llama-cpp-rate.mjs", [gguf, JSON.stringify(PROMPT), String(NEW), String(t)]) as Rates,
      ]),
    );
  if (name === "default") {
    const file = (kind: string) => join(DATA, `default-model-${kind}.gguf`);
    for (const kind of ["q4_0", "q8_0"]) {
      if (!existsSync(file(kind))) throw new Error(`bench cpu: ${file(kind)} is missing (bash scripts/fixtures.sh)`);
    }
    return {
      "mlx-bun, MLX 4-bit (group 64)": () => mlxb(DEFAULT_MODEL_DIR),
      "mlx-bun, MLX 4-bit, int8 activations": () => mlxb(DEFAULT_MODEL_DIR, "int8"),
      "mlx-bun, GGUF Q4_0": () => mlxb(file("q4_0")),
      ...llama("Q4_0", file("q4_0")),
      ...llama("Q8_0", file("q8_0")),
    };
  }
  // A random-weight shape (bench/decode.ts's names): llama.cpp gets random Q4_0 weights of the same
  // shape (speed does not depend on the values; Q4_0 and MLX's 4-bit with float32 scales read about
  // the same bytes).
  const dir = benchModel(name);
  const gguf = randomQ4Gguf(dir);
  return {
    "mlx-bun, MLX 4-bit (group 64)": () => mlxb(dir),
    "mlx-bun, MLX 4-bit, int8 activations": () => mlxb(dir, "int8"),
    ...llama("Q4_0 (random weights)", gguf),
  };
}

/** The models: MLXB_BENCH_MODELS ("default,qwen3-0.6b" unless set). */
const CPU_MODELS = (process.env.MLXB_BENCH_MODELS ?? "default,qwen3-0.6b").split(",").map((m) => m.trim());

export async function run(): Promise<Record<string, unknown>> {
  const results: Record<string, unknown> = {};
  for (const name of CPU_MODELS) {
    const measures = sides(name);
    const runs: Record<string, Rates[]> = Object.fromEntries(Object.keys(measures).map((s) => [s, []]));
    for (let r = 0; r < ROUNDS; r++)
      for (const [side, measure] of Object.entries(measures)) runs[side]!.push(measure());
    const median = (side: string, key: keyof Rates) => summarize(runs[side]!.map((x) => x[key])).median;
    const llamaQ4 = Object.keys(measures).filter((s) => s.startsWith("llama.cpp Q4_0"));
    const best = (key: "prefill" | "decode") => Math.max(...llamaQ4.map((s) => median(s, key)));
    table(
      `CPU, ${name}, ${PROMPT.length}-token prompt, ${NEW} greedy tokens (median of ${ROUNDS} alternating rounds, fresh processes)`,
      ["side", "decode tok/s", "x llama.cpp Q4_0", "prefill tok/s", "x llama.cpp Q4_0", "peak RSS MiB"],
      Object.keys(measures).map((side) => [
        side,
        median(side, "decode"),
        median(side, "decode") / best("decode"),
        median(side, "prefill"),
        median(side, "prefill") / best("prefill"),
        median(side, "rss") / 2 ** 20,
      ]),
    );
    results[name] = runs;
  }
  return results;
}
