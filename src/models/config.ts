// HF / mlx-lm config.json -> the fields the graph builders use, with errors naming the key.
import type { RopeScaling } from "../graph/rotary.ts";

export interface ModelConfig {
  modelType: string;
  hiddenSize: number;
  layers: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  intermediateSize: number;
  vocabSize: number;
  normEps: number;
  ropeTheta: number;
  /** Rotated dims per head (Phi's partial rotary), headDim otherwise. */
  ropeDims: number;
  ropeScaling: RopeScaling;
  tieEmbeddings: boolean;
  attentionBias: boolean;
  eosTokenIds: number[];
  /** The positions the model was trained for (max_position_embeddings / n_positions), if given. */
  maxPositions: number | undefined;
  /** Attention sees only the latest this many positions: `sliding_window` of a Mistral config (as
   * Hugging Face applies it), or of any config whose `layer_types` are all "sliding_attention" (as
   * mlx-lm does); undefined otherwise. */
  slidingWindow: number | undefined;
}

/** The first of `keys` present (HF names differ by family: hidden_size / n_embd, ...). */
function first(raw: Record<string, unknown>, keys: string[], fallback?: number): number {
  const key = keys.find((k) => raw[k] !== undefined && raw[k] !== null);
  if (key === undefined) {
    if (fallback !== undefined) return fallback;
    throw new Error(`config.json: none of ${keys.map((k) => `'${k}'`).join(", ")} is set`);
  }
  return required(raw, key);
}

function required(raw: Record<string, unknown>, key: string): number {
  const v = raw[key];
  if (typeof v !== "number" || !Number.isFinite(v))
    throw new Error(`config.json: '${key}' must be a number, got ${JSON.stringify(v)}`);
  return v;
}

function optional(raw: Record<string, unknown>, key: string, fallback: number): number {
  return raw[key] === undefined || raw[key] === null ? fallback : required(raw, key);
}

function ropeScaling(raw: Record<string, unknown>): RopeScaling {
  const block = raw["rope_scaling"] as Record<string, unknown> | null | undefined;
  if (!block) return { type: "none", factor: 1 };
  const type = String(block["rope_type"] ?? block["type"] ?? "default");
  const factor = typeof block["factor"] === "number" ? block["factor"] : 1;
  if (type === "default") return { type: "none", factor: 1 };
  if (type === "linear" || type === "dynamic") return { type, factor };
  if (type === "llama3") {
    return {
      type,
      factor,
      lowFreqFactor: required(block, "low_freq_factor"),
      highFreqFactor: required(block, "high_freq_factor"),
      originalMaxPositions: required(block, "original_max_position_embeddings"),
    };
  }
  throw new Error(`config.json: rope_scaling type '${type}' is not supported (none, linear, llama3, dynamic)`);
}

function slidingWindow(raw: Record<string, unknown>, modelType: string): number | undefined {
  const types = raw["layer_types"];
  if (types !== undefined && types !== null) {
    if (!Array.isArray(types) || !types.every((t) => t === "full_attention" || t === "sliding_attention")) {
      throw new Error(
        `config.json: 'layer_types' must list "full_attention" / "sliding_attention", got ${JSON.stringify(types)}`,
      );
    }
    const sliding = types.filter((t) => t === "sliding_attention").length;
    if (sliding > 0 && sliding < types.length)
      throw new Error("config.json: 'layer_types' mixes full and sliding attention layers, which is not supported");
    if (sliding === 0) return undefined;
  } else if (modelType !== "mistral") {
    return undefined;
  }
  return raw["sliding_window"] == null ? undefined : required(raw, "sliding_window");
}

export function parseModelConfig(raw: Record<string, unknown>): ModelConfig {
  const modelType = String(raw["model_type"] ?? "");
  if (!modelType) throw new Error("config.json: 'model_type' missing");
  const hiddenSize = first(raw, ["hidden_size", "n_embd"]);
  const heads = first(raw, ["num_attention_heads", "n_head"]);
  const headDim = optional(raw, "head_dim", hiddenSize / heads);
  const eos = raw["eos_token_id"];
  const config: ModelConfig = {
    modelType,
    hiddenSize,
    layers: first(raw, ["num_hidden_layers", "n_layer"]),
    heads,
    kvHeads: optional(raw, "num_key_value_heads", heads),
    headDim,
    intermediateSize: first(raw, ["intermediate_size", "n_inner"], 4 * hiddenSize),
    vocabSize: required(raw, "vocab_size"),
    normEps: first(raw, ["rms_norm_eps", "layer_norm_eps", "layer_norm_epsilon"], 1e-5),
    ropeTheta: optional(raw, "rope_theta", 10000),
    ropeDims: Math.round(headDim * optional(raw, "partial_rotary_factor", 1)),
    ropeScaling: ropeScaling(raw),
    tieEmbeddings: Boolean(raw["tie_word_embeddings"] ?? false),
    attentionBias: Boolean(raw["attention_bias"] ?? false),
    eosTokenIds: Array.isArray(eos) ? (eos as number[]) : typeof eos === "number" ? [eos] : [],
    maxPositions: ["max_position_embeddings", "n_positions", "n_ctx"].some((k) => raw[k] != null)
      ? first(raw, ["max_position_embeddings", "n_positions", "n_ctx"])
      : undefined,
    slidingWindow: slidingWindow(raw, modelType),
  };
  return checkedConfig(config, raw["head_dim"] != null);
}

/** Sizes must be positive integers that fit together; an Error names the key (as config.json spells it). */
function checkedConfig(c: ModelConfig, explicitHeadDim: boolean): ModelConfig {
  const sizes: [string, number | undefined][] = [
    ["hidden_size", c.hiddenSize],
    ["num_hidden_layers", c.layers],
    ["num_attention_heads", c.heads],
    ["num_key_value_heads", c.kvHeads],
    ["head_dim", c.headDim],
    ["intermediate_size", c.intermediateSize],
    ["vocab_size", c.vocabSize],
    ["max_position_embeddings", c.maxPositions],
    ["sliding_window", c.slidingWindow],
  ];
  for (const [key, value] of sizes) {
    if (value !== undefined && (!Number.isSafeInteger(value) || value <= 0 || value > 2 ** 31 - 1)) {
      throw new Error(`config.json: '${key}' must be a positive integer, got ${value}`);
    }
  }
  if (c.heads % c.kvHeads !== 0)
    throw new Error(
      `config.json: num_attention_heads (${c.heads}) must be a multiple of num_key_value_heads (${c.kvHeads})`,
    );
  if (!explicitHeadDim && c.hiddenSize % c.heads !== 0)
    throw new Error(
      `config.json: hidden_size (${c.hiddenSize}) must be a multiple of num_attention_heads (${c.heads})`,
    );
  if (!(c.normEps > 0) || !Number.isFinite(c.normEps))
    throw new Error(`config.json: the norm epsilon must be a positive number, got ${c.normEps}`);
  if (!(c.ropeTheta > 0) || !Number.isFinite(c.ropeTheta))
    throw new Error(`config.json: 'rope_theta' must be a positive number, got ${c.ropeTheta}`);
  if (c.ropeDims <= 0 || c.ropeDims > c.headDim || c.ropeDims % 2 !== 0)
    throw new Error(
      `config.json: rotary dims ${c.ropeDims} (head_dim x partial_rotary_factor) must be even and in (0, head_dim]`,
    );
  for (const id of c.eosTokenIds)
    if (!Number.isSafeInteger(id) || id < 0)
      throw new Error(`config.json: 'eos_token_id' holds ${JSON.stringify(id)}, not a token id`);
  return c;
}
