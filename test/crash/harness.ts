// The crash cases' registry (cases and add) and the helpers they share: the llama fixture, damaged
// copies of it, generation with options.
import { cpSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { generateText, loadModel, Tensor, Tokenizer } from "../../src/index.ts";

export interface Case {
  name: string;
  expect: "error" | "ok";
  run: () => unknown;
}

export const FIXTURE = join(import.meta.dir, "..", "fixtures", "data", "models", "llama");
export const VOCAB = 320;
/** The Q4_0 GGUF fixture (scripts/fixtures/gguf_files.py; not carried to the GPU machine). */
export const GGUF = join(import.meta.dir, "..", "fixtures", "data", "default-model-q4_0.gguf");

/** A copy of the llama fixture with config.json changed by `edit` (and `damage` applied after). */
export function brokenCopy(edit: (config: Record<string, unknown>) => void, damage?: (dir: string) => void): string {
  const dir = mkdtempSync(join(tmpdir(), "mlxb-crash-"));
  cpSync(FIXTURE, dir, { recursive: true });
  const config = JSON.parse(readFileSync(join(dir, "config.json"), "utf8"));
  edit(config);
  writeFileSync(join(dir, "config.json"), JSON.stringify(config));
  damage?.(dir);
  return dir;
}

export async function generateWith(options: Record<string, unknown>, prompt: string | number[] = [1, 2, 3]) {
  const model = loadModel(FIXTURE, { backend: "mlx" });
  return generateText(model, Tokenizer.fromDir(FIXTURE), prompt, { maxTokens: 2, ...options } as never);
}

export async function generateOnCpu(options: Record<string, unknown>, prompt: number[]) {
  const model = loadModel(FIXTURE, { backend: "cpu" });
  return generateText(model, Tokenizer.fromDir(FIXTURE), prompt, { maxTokens: 2, ...options } as never);
}

export const cases: Case[] = [];
export const add = (name: string, expect: Case["expect"], run: () => unknown) => cases.push({ name, expect, run });

/** The llama fixture on MLX. */
export const mlxModel = () => loadModel(FIXTURE, { backend: "mlx" });
/** A [5, 2] table 0..9. */
export const table = () =>
  Tensor.from(
    Float32Array.from({ length: 10 }, (_, i) => i),
    [5, 2],
  );
/** Heads [1, 1, 2, 8] of zeros. */
export const heads = () => Tensor.from(new Float32Array(16), [1, 1, 2, 8]);
