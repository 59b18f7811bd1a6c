// Quantize / dequantize whole weight maps: `<path>.weight` (+ `.scales` [+ `.biases`]).
// Tensors carried over unchanged are the same objects as in the input; inputs are never disposed.
import { checkOptionNames } from "../options.ts";
import { dequantize, type QuantParams, quantize } from "../ops/quant.ts";
import type { TensorData } from "../dtype.ts";
import type { Tensor } from "../tensor.ts";
import { type QuantConfig, quantizationFor } from "./config.ts";

/** MLX weights by path (the transforms below run on MLX). Host-loaded weights (the CPU reference
 * backend) are a Map<string, TensorData>: packedTriple checks either. */
export type WeightMap = Map<string, Tensor>;

/** Decides whether a `.weight` the config would quantize is quantized (e.g. only Linear layers). */
export type Eligible = (path: string, weight: Tensor) => boolean;

function modulePath(key: string, suffix: string): string {
  return key.slice(0, key.length - suffix.length);
}

/** Why `weight` cannot be quantized with `p`, or null when it can. */
function unquantizable(weight: Tensor, p: QuantParams): string | null {
  if (weight.ndim < 2) return `rank ${weight.ndim} < 2`;
  const last = weight.shape[weight.ndim - 1]!;
  if (last % p.groupSize !== 0) return `last axis ${last} not divisible by group size ${p.groupSize}`;
  return null;
}

/** Checks a packed triple and returns its parts; errors name the key at fault. */
export function packedTriple<W extends TensorData>(
  map: ReadonlyMap<string, W>,
  module: string,
  p: QuantParams,
): { weight: W; scales: W; biases: W | null } {
  const weight = map.get(`${module}.weight`);
  const scales = map.get(`${module}.scales`);
  const biases = map.get(`${module}.biases`) ?? null;
  if (!weight) throw new Error(`'${module}.scales' has no '${module}.weight'`);
  if (!scales) throw new Error(`'${module}.weight' is packed but '${module}.scales' is missing`);
  if (p.mode === "affine" && !biases)
    throw new Error(`'${module}.biases' is missing (affine quantization needs biases)`);
  if (p.mode !== "affine" && biases) throw new Error(`'${module}.biases' present but mode ${p.mode} has no biases`);
  if (weight.dtype !== "uint32") throw new Error(`'${module}.weight' is packed as ${weight.dtype}, expected uint32`);
  // affine: float scales and biases of one dtype; the fp4/fp8 modes: uint8 (e8m0 / e4m3) scales.
  const floating = ["float16", "bfloat16", "float32"];
  if (p.mode === "affine" ? !floating.includes(scales.dtype) : scales.dtype !== "uint8") {
    throw new Error(
      `'${module}.scales' is ${scales.dtype}, but ${p.mode} quantization stores ${p.mode === "affine" ? "float16, bfloat16 or float32" : "uint8"} scales`,
    );
  }
  if (biases && biases.dtype !== scales.dtype)
    throw new Error(`'${module}.biases' is ${biases.dtype} but '${module}.scales' is ${scales.dtype}`);
  if (weight.ndim !== scales.ndim)
    throw new Error(`'${module}.scales' has rank ${scales.ndim} but '${module}.weight' has rank ${weight.ndim}`);
  const lead = (t: TensorData) => t.shape.slice(0, -1).join(",");
  if (lead(weight) !== lead(scales)) {
    throw new Error(
      `'${module}.scales' leading dims [${lead(scales)}] differ from '${module}.weight' [${lead(weight)}]`,
    );
  }
  const inFeatures = (weight.shape[weight.ndim - 1]! * 32) / p.bits;
  const groups = scales.shape[scales.ndim - 1]!;
  if (groups * p.groupSize !== inFeatures) {
    throw new Error(
      `'${module}.scales' has ${groups} groups but '${module}.weight' unpacks to ${inFeatures} features at ${p.bits} bits, group ${p.groupSize}`,
    );
  }
  if (biases && biases.shape.join(",") !== scales.shape.join(",")) {
    throw new Error(`'${module}.biases' shape [${biases.shape}] differs from '${module}.scales' [${scales.shape}]`);
  }
  return { weight, scales, biases };
}

/** `.biases` or `.scales` keys whose triple is incomplete are errors naming the key. */
function checkOrphans(map: WeightMap): void {
  for (const key of map.keys()) {
    if (key.endsWith(".biases") && !map.has(`${modulePath(key, ".biases")}.scales`)) {
      throw new Error(`'${key}' has no '${modulePath(key, ".biases")}.scales'`);
    }
    if (key.endsWith(".scales") && !map.has(`${modulePath(key, ".scales")}.weight`)) {
      throw new Error(`'${key}' has no '${modulePath(key, ".scales")}.weight'`);
    }
  }
}

/** Quantizes every eligible `.weight` the config asks for; already-packed triples pass through. */
export function quantizeWeights(map: WeightMap, config: QuantConfig, eligible: Eligible = () => true): WeightMap {
  checkOrphans(map);
  const out: WeightMap = new Map(map);
  for (const [key, weight] of map) {
    if (!key.endsWith(".weight")) continue;
    const module = modulePath(key, ".weight");
    const p = quantizationFor(config, module);
    if (map.has(`${module}.scales`)) {
      if (!p) throw new Error(`'${module}.scales' present but the config leaves '${module}' unquantized`);
      packedTriple(map, module, p);
      continue;
    }
    if (!p || !eligible(key, weight) || unquantizable(weight, p)) continue;
    const q = quantize(weight, p);
    q.weight.name = key;
    out.set(key, q.weight);
    out.set(`${module}.scales`, q.scales);
    if (q.biases) out.set(`${module}.biases`, q.biases);
  }
  return out;
}

/** Replaces every packed triple by its dense `.weight`. */
export function dequantizeWeights(map: WeightMap, config: QuantConfig): WeightMap {
  checkOrphans(map);
  const out: WeightMap = new Map(map);
  for (const key of map.keys()) {
    if (!key.endsWith(".scales")) continue;
    const module = modulePath(key, ".scales");
    const p = quantizationFor(config, module);
    if (!p) throw new Error(`'${key}' present but the config leaves '${module}' unquantized`);
    const triple = packedTriple(map, module, p);
    const dense = dequantize(triple, p);
    dense.name = `${module}.weight`;
    out.set(`${module}.weight`, dense);
    out.delete(key);
    out.delete(`${module}.biases`);
  }
  return out;
}

export interface PostLoadOptions {
  bits?: number;
  groupSize?: number;
  /** 2-D weights with a dimension at least this large (embeddings, lm_head) stay dense. */
  skipVocabThreshold?: number;
}

/** Post-load quantization of eligible 2-D weights: both dims >= 2 * groupSize, in-features divisible
 * by groupSize, no vocab-sized dimension. Returns the new map and the config that describes it. */
export function quantizeParams(
  map: WeightMap,
  options: PostLoadOptions = {},
): { weights: WeightMap; config: QuantConfig } {
  checkOptionNames("quantizeParams", options, ["bits", "groupSize", "skipVocabThreshold"]);
  const { bits = 4, groupSize = 64, skipVocabThreshold = 100_000 } = options;
  if (![2, 3, 4, 5, 6, 8].includes(bits))
    throw new Error(`quantizeParams: bits must be one of 2, 3, 4, 5, 6, 8, got ${String(bits)}`);
  if (![32, 64, 128].includes(groupSize))
    throw new Error(`quantizeParams: groupSize must be one of 32, 64, 128, got ${String(groupSize)}`);
  if (typeof skipVocabThreshold !== "number" || !(skipVocabThreshold > 0))
    throw new Error(`quantizeParams: skipVocabThreshold must be a positive number, got ${String(skipVocabThreshold)}`);
  const config: QuantConfig = { global: { mode: "affine", bits, groupSize }, layers: new Map() };
  const eligible: Eligible = (_, w) =>
    w.ndim === 2 && w.shape.every((d) => d >= 2 * groupSize && d < skipVocabThreshold) && w.shape[1]! % groupSize === 0;
  for (const [key, w] of map) {
    if (key.endsWith(".weight") && !map.has(`${modulePath(key, ".weight")}.scales`) && !eligible(key, w)) {
      config.layers.set(modulePath(key, ".weight"), false);
    }
  }
  return { weights: quantizeWeights(map, config, eligible), config };
}
