// Gemma: Llama's layout with embeddings scaled by sqrt(hidden), rms_norm weights shifted by +1,
// a GELU-gated MLP, and the head tied to the embeddings.
import type { ModelConfig } from "./config.ts";
import type { DecoderSpec } from "./decoder.ts";
import { llamaSpec } from "./llama.ts";

export function gemmaSpec(config: ModelConfig): DecoderSpec {
  return {
    ...llamaSpec(true),
    norm: { kind: "rms", shift: 1 },
    mlp: { kind: "gated", activation: "gelu", gate: "mlp.gate_proj", up: "mlp.up_proj", down: "mlp.down_proj" },
    embeddingScale: Math.sqrt(config.hiddenSize),
  };
}
