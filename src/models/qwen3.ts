// Qwen3: the Llama graph with rms_norm on each head of q and k before RoPE.
import type { Graph } from "../graph/graph.ts";
import type { ModelConfig } from "./config.ts";
import { buildDecoder, type DecoderOptions } from "./decoder.ts";

export function buildQwen3(config: ModelConfig, options: DecoderOptions = {}): Graph {
  return buildDecoder(config, { ...options, qkNorm: true });
}
