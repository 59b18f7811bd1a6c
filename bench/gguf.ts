// GGUF against the MLX format on the same weights: the default model's Q4_0 GGUF file (written by
// scripts/fixtures/gguf_files.py, run by the test command) loaded as GGUF, and the same tensors saved
// as an MLX-format checkpoint (config.json + model.safetensors, 4-bit group 32), decoding a 96-token
// prompt for 96 greedy tokens in alternating rounds (tokens/s after the first; load time beside).
// Then greedy parity with llama.cpp on the same files (F16, Q8_0, Q4_0): node-llama-cpp 3.21.1
// (installed with npm into .cache/peers/ on first use, ~730 MB; MLXB_SKIP_LLAMA_CPP=1 skips it).
import { copyFileSync, existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { generateText } from "../src/engine/generate.ts";
import { saveSafetensors } from "../src/io/safetensors.ts";
import { DEFAULT_MODEL_DIR, loadModel, type Model } from "../src/models/index.ts";
import type { Tensor } from "../src/tensor.ts";
import { Tokenizer } from "../src/tokenizer/tokenizer.ts";
import { alternatingRounds, decodeRate } from "./decode.ts";
import { runLlamaCpp } from "./peer.ts";
import { summarize, table } from "./stats.ts";

const DATA = join(import.meta.dir, "..", "test", "fixtures", "data");
const GGUF = join(DATA, "default-model-q4_0.gguf");
const ROUNDS = 5;

/** node-llama-cpp's greedy tokens on each GGUF file beside ours: how many leading tokens agree. */
async function parity(): Promise<Record<string, unknown>> {
  const prompt = [427, 2013, 3175, 272];
  const rows: (string | number)[][] = [];
  const out: Record<string, unknown> = {};
  for (const kind of ["f16", "q8_0", "q4_0"]) {
    const file = join(DATA, `default-model-${kind}.gguf`);
    const theirs = (runLlamaCpp("llama-cpp-greedy.mjs", [file, JSON.stringify(prompt), "32"]) as { tokens: number[] })
      .tokens;
    const model = loadModel(file, { backend: "mlx" });
    const ours = (await generateText(model, Tokenizer.fromDir(file), prompt, { maxTokens: 32, ignoreEos: true }))
      .tokens;
    model.dispose();
    let same = 0;
    while (same < 32 && ours[same] === theirs[same]) same++;
    rows.push([kind, `${same}/32`]);
    out[kind] = { ours, theirs };
  }
  table(
    "Greedy tokens from the same GGUF file: mlx-bun vs node-llama-cpp (leading tokens equal)",
    ["file", "equal"],
    rows,
  );
  return out;
}

export async function run(): Promise<Record<string, unknown>> {
  if (!existsSync(GGUF)) throw new Error(`bench gguf: ${GGUF} is missing (bash scripts/fixtures.sh writes it)`);
  const dir = mkdtempSync(join(tmpdir(), "mlxb-gguf-"));
  try {
    const source = loadModel(GGUF, { backend: "mlx" });
    saveSafetensors(join(dir, "model.safetensors"), source.checkpoint.weights as Map<string, Tensor>);
    writeFileSync(join(dir, "config.json"), JSON.stringify(source.checkpoint.config));
    source.dispose();
    for (const f of ["tokenizer.json", "tokenizer_config.json"]) copyFileSync(join(DEFAULT_MODEL_DIR, f), join(dir, f));
    const tokenizer = Tokenizer.fromDir(DEFAULT_MODEL_DIR);
    const loads: Record<string, number> = {};
    const models: Record<string, Model> = {};
    for (const [name, path] of [
      ["GGUF Q4_0", GGUF],
      ["MLX format, same weights", dir],
    ] as const) {
      const start = performance.now();
      models[name] = loadModel(path, { backend: "mlx" });
      loads[name] = performance.now() - start;
    }
    const prompt = Array.from({ length: 96 }, (_, t) => 1 + ((t * 37 + 11) % 8191));
    const runs = await alternatingRounds(
      Object.fromEntries(Object.entries(models).map(([name, m]) => [name, () => decodeRate(m, tokenizer, prompt, 96)])),
      ROUNDS,
    );
    for (const m of Object.values(models)) m.dispose();
    const mlx = summarize(runs["MLX format, same weights"]!).median;
    table(
      `GGUF vs MLX format, default model Q4_0 weights, 96-token prompt, 96 greedy tokens (tokens/s after the first; median of ${ROUNDS} alternating rounds)`,
      ["checkpoint", "load ms", "tokens/s", "x MLX format", "spread"],
      Object.keys(models).map((name) => {
        const s = summarize(runs[name]!);
        return [name, loads[name]!, s.median, s.median / mlx, s.spread];
      }),
    );
    const llamaCpp = process.env.MLXB_SKIP_LLAMA_CPP === "1" ? null : await parity();
    return { runs, loads, llamaCpp };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
