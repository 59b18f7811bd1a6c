// Loading oracle fixtures (written by scripts/fixtures/*.py) and comparing tensors.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { type DType, Tensor } from "../src/index.ts";

export interface EncodedArray {
  shape: number[];
  dtype: DType;
  data: string;
}

/** The oracle venv's Python (scripts/setup.sh), or MLXB_PYTHON where the oracle lives elsewhere
 * (the lent GPU machine: scripts/gpu/device.sh). */
export const ORACLE_PYTHON = process.env.MLXB_PYTHON ?? join(import.meta.dir, "..", ".cache", "venv", "bin", "python");

export function fixture<T>(name: string): T {
  const path = join(import.meta.dir, "fixtures", "data", name);
  return JSON.parse(readFileSync(path, "utf8")) as T;
}

export function decode(a: EncodedArray): Tensor {
  const bytes = Buffer.from(a.data, "base64");
  return Tensor.fromBytes(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength), a.shape, a.dtype);
}

/** An encoded integer array's values (the decoded tensor disposed). */
export function decodeIds(a: EncodedArray): number[] {
  using t = decode(a);
  return Array.from(t.toInt32Array());
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} != ${b.length}`);
  let worst = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i]! - b[i]!);
    if (!(d <= worst)) worst = Number.isNaN(d) ? Number.POSITIVE_INFINITY : d;
  }
  return worst;
}

/** A case of sampling.json (scripts/fixtures/sampling.py): mlx-lm's processors and filters applied
 * to fixed logits with the given options and context. */
export interface SamplingCase {
  options: Record<string, unknown>;
  logits: number[];
  context: number[];
  logprobs: number[];
  probabilities: number[];
}

export function samplingCases(): SamplingCase[] {
  return fixture<{ vocab: number; cases: SamplingCase[] }>("sampling.json").cases;
}
