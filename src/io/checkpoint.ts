// MLX-format checkpoints: config.json + model*.safetensors (+ model.safetensors.index.json); a
// path ending in .gguf is a GGUF file (gguf.ts).
// Quantized layers stay packed (`.weight` uint32 + `.scales` [+ `.biases`]).
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { parseQuantConfig, type QuantConfig, quantizationFor } from "../quant/config.ts";
import type { TensorData } from "../dtype.ts";
import { packedTriple } from "../quant/weights.ts";
import type { Tensor } from "../tensor.ts";
import { type HostTensor, loadSafetensorsHost } from "./host.ts";
import { loadGguf } from "./gguf.ts";
import { loadSafetensors } from "./safetensors.ts";

/** W: MLX tensors (mapped from the files), or host tensors (read without the native library). */
export interface Checkpoint<W extends TensorData = Tensor> {
  dir: string;
  /** config.json as parsed. */
  config: Record<string, unknown>;
  quantization: QuantConfig | null;
  weights: Map<string, W>;
  /** Frees every weight. */
  dispose(): void;
}

function readJson(path: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (e) {
    throw new Error(`${path}: cannot read (${(e as Error).message})`);
  }
  try {
    const value = JSON.parse(text);
    if (value === null || typeof value !== "object" || Array.isArray(value)) throw new Error("not a JSON object");
    return value;
  } catch (e) {
    throw new Error(`${path}: invalid JSON (${(e as Error).message})`);
  }
}

/** The weight files of a checkpoint directory, from the index when there is one. */
function weightFiles(dir: string): { files: string[]; expected: Map<string, string> | null } {
  const indexPath = join(dir, "model.safetensors.index.json");
  if (existsSync(indexPath)) {
    const map = readJson(indexPath)["weight_map"];
    if (map === null || typeof map !== "object") throw new Error(`${indexPath}: 'weight_map' missing`);
    const expected = new Map(Object.entries(map as Record<string, string>));
    return { files: [...new Set(expected.values())].sort(), expected };
  }
  const files = readdirSync(dir)
    .filter((f) => /^model.*\.safetensors$/.test(f))
    .sort();
  if (files.length === 0) throw new Error(`${dir}: no model*.safetensors files`);
  return { files, expected: null };
}

/** Bytes of the weight files (for choosing a backend before loading). */
export function checkpointBytes(dir: string): number {
  if (isGguf(dir)) return statSync(dir).size;
  return weightFiles(dir).files.reduce((n, f) => n + statSync(join(dir, f)).size, 0);
}

/** Whether a path names a checkpoint: a directory with config.json, or a .gguf file. */
export function isModelPath(path: string): boolean {
  return isGguf(path) ? existsSync(path) && statSync(path).isFile() : existsSync(join(path, "config.json"));
}

/** Whether a checkpoint path is a GGUF file (gguf.ts) rather than a directory. */
export function isGguf(path: string): boolean {
  return path.toLowerCase().endsWith(".gguf");
}

/** Loads a checkpoint directory. Weight data is mapped into MLX arrays without a copy; with `host`,
 * read into host memory instead (the CPU reference backend, no native library needed). */
export function loadCheckpoint(
  dir: string,
  onProgress?: (loaded: number, total: number) => void,
  host?: false,
): Checkpoint<Tensor>;
export function loadCheckpoint(
  dir: string,
  onProgress: ((loaded: number, total: number) => void) | undefined,
  host: true,
): Checkpoint<HostTensor>;
export function loadCheckpoint(
  dir: string,
  onProgress?: (loaded: number, total: number) => void,
  host = false,
): Checkpoint<Tensor | HostTensor> {
  if (isGguf(dir)) {
    if (host)
      throw new Error(
        `${dir}: GGUF files load on the MLX backend (backend: "mlx"); the CPU reference backend reads MLX-format checkpoints`,
      );
    const checkpoint = { dir, ...loadGguf(dir) };
    onProgress?.(1, 1);
    return checkpoint;
  }
  const config = readJson(join(dir, "config.json"));
  const quantization = parseQuantConfig(config);
  const { files, expected } = weightFiles(dir);
  const weights = new Map<string, Tensor | HostTensor>();
  const dispose = () => {
    for (const t of weights.values()) t.dispose();
    weights.clear();
  };
  try {
    for (const [i, file] of files.entries()) {
      const { tensors } = host ? loadSafetensorsHost(join(dir, file)) : loadSafetensors(join(dir, file));
      for (const [name, t] of tensors) {
        if (weights.has(name)) throw new Error(`${join(dir, file)}: tensor '${name}' appears in more than one shard`);
        if (expected && expected.get(name) !== file) {
          throw new Error(
            `${join(dir, file)}: tensor '${name}' is not listed for this file in model.safetensors.index.json`,
          );
        }
        weights.set(name, t);
      }
      onProgress?.(i + 1, files.length);
    }
    for (const name of expected?.keys() ?? []) {
      if (!weights.has(name))
        throw new Error(`${dir}: tensor '${name}' listed in the index is missing from ${expected!.get(name)}`);
    }
    for (const key of weights.keys()) {
      if (!key.endsWith(".scales")) continue;
      const module = key.slice(0, -".scales".length);
      const p = quantizationFor(quantization, module);
      if (!p) throw new Error(`${dir}: '${key}' is packed but config.json's quantization leaves '${module}' dense`);
      packedTriple(weights, module, p);
    }
  } catch (e) {
    dispose();
    throw e;
  }
  return { dir, config, quantization, weights, dispose };
}
