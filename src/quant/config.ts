// mlx-lm's `quantization` block of config.json: global group_size / bits / mode side by side with
// per-layer keys whose value is `false` (keep that layer dense) or an object overriding the globals.
import { type Activations, type QuantMode, type QuantParams, quantParams } from "../ops/quant.ts";

export interface QuantConfig {
  /** Global parameters; null when the block sets none (only per-layer entries). */
  global: QuantParams | null;
  /** Per-layer entries by module path ("model.layers.0.mlp.gate_proj"): false = skip. */
  layers: Map<string, QuantParams | false>;
  /** What the model's quantized products do with their input on the CPU (loadModel's
   * cpuActivations; absent: "float"). Not part of the checkpoint's config. */
  activations?: Activations | undefined;
}

const GLOBAL_KEYS = new Set(["group_size", "bits", "mode"]);

function params(raw: Record<string, unknown>, where: string, fallback: QuantParams | null): QuantParams {
  const num = (key: string): number | undefined => {
    const v = raw[key];
    if (v === undefined) return undefined;
    if (typeof v !== "number" || !Number.isInteger(v) || v <= 0)
      throw new Error(`${where}.${key} must be a positive integer, got ${JSON.stringify(v)}`);
    return v;
  };
  const mode = raw["mode"];
  if (mode !== undefined && typeof mode !== "string")
    throw new Error(`${where}.mode must be a string, got ${JSON.stringify(mode)}`);
  try {
    return quantParams({
      groupSize: num("group_size") ?? fallback?.groupSize,
      bits: num("bits") ?? fallback?.bits,
      mode: (mode as QuantMode | undefined) ?? fallback?.mode,
    });
  } catch (e) {
    throw new Error(`${where}: ${(e as Error).message}`);
  }
}

/** Parses the block from a whole config.json object (`quantization`, else `quantization_config`).
 * Returns null when the checkpoint is not quantized. Unknown scalar keys (quant_method, ...) are ignored. */
export function parseQuantConfig(config: Record<string, unknown>): QuantConfig | null {
  const key = config["quantization"] !== undefined ? "quantization" : "quantization_config";
  const block = config[key];
  if (block === undefined || block === null) return null;
  if (typeof block !== "object" || Array.isArray(block)) throw new Error(`config.json: '${key}' must be an object`);
  const raw = block as Record<string, unknown>;
  const hasGlobal = [...GLOBAL_KEYS].some((k) => raw[k] !== undefined);
  const global = hasGlobal ? params(raw, key, null) : null;
  const layers = new Map<string, QuantParams | false>();
  for (const [path, value] of Object.entries(raw)) {
    if (GLOBAL_KEYS.has(path)) continue;
    if (value === false) layers.set(path, false);
    else if (value !== null && typeof value === "object" && !Array.isArray(value)) {
      layers.set(path, params(value as Record<string, unknown>, `${key}.${path}`, global));
    }
    // Other values (quant_method: "mlx", true, numbers) carry no per-layer meaning here.
  }
  return { global, layers };
}

/** The quantization of the module at `path` (a trailing .weight/.scales/.biases is ignored):
 * its per-layer override, else the global parameters, else null (dense). */
export function quantizationFor(config: QuantConfig | null, path: string): QuantParams | null {
  if (!config) return null;
  const module = path.replace(/\.(weight|scales|biases)$/, "");
  const layer = config.layers.get(module);
  if (layer === false) return null;
  return layer ?? config.global;
}

/** The block in mlx-lm's config.json form (for writing a checkpoint back). */
export function toConfigBlock(config: QuantConfig): Record<string, unknown> {
  const block: Record<string, unknown> = {};
  if (config.global)
    Object.assign(block, { group_size: config.global.groupSize, bits: config.global.bits, mode: config.global.mode });
  for (const [path, p] of config.layers) {
    block[path] = p === false ? false : { group_size: p.groupSize, bits: p.bits, mode: p.mode };
  }
  return block;
}
