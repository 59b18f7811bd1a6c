// Llama, and the architectures that share its graph: Mistral (sliding window unused at these lengths)
// and Qwen2 (q/k/v biases, picked up from the weights).
import type { Graph } from "../graph/graph.ts";
import type { ModelConfig } from "./config.ts";
import { buildDecoder, type DecoderOptions } from "./decoder.ts";

export function buildLlama(config: ModelConfig, options: DecoderOptions = {}): Graph {
  return buildDecoder(config, options);
}
