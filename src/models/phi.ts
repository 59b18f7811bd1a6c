// Phi (phi-2): parallel attention and MLP on one layer-normed input, partial rotary embeddings,
// biases everywhere, a GELU (tanh) MLP.
import type { DecoderSpec } from "./decoder.ts";

export function phiSpec(): DecoderSpec {
  return {
    embedding: "model.embed_tokens",
    layer: (i) => `model.layers.${i}`,
    attentionNorm: "input_layernorm",
    qkv: { q: "self_attn.q_proj", k: "self_attn.k_proj", v: "self_attn.v_proj" },
    output: "self_attn.dense",
    finalNorm: "model.final_layernorm",
    head: "lm_head",
    norm: { kind: "layer" },
    mlp: { kind: "plain", activation: "gelu_approx", up: "mlp.fc1", down: "mlp.fc2" },
    positions: { kind: "rope" },
  };
}
