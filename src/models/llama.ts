// Llama, and the architectures that share its graph: Mistral (its sliding window: config.slidingWindow)
// and Qwen2 (q/k/v biases, picked up from the weights). Qwen3 adds per-head q/k norms.
import type { DecoderSpec } from "./decoder.ts";

export function llamaSpec(tieEmbeddings: boolean): DecoderSpec {
  return {
    embedding: "model.embed_tokens",
    layer: (i) => `model.layers.${i}`,
    attentionNorm: "input_layernorm",
    mlpNorm: "post_attention_layernorm",
    qkv: { q: "self_attn.q_proj", k: "self_attn.k_proj", v: "self_attn.v_proj" },
    output: "self_attn.o_proj",
    finalNorm: "model.norm",
    head: tieEmbeddings ? null : "lm_head",
    norm: { kind: "rms", shift: 0 },
    mlp: { kind: "gated", activation: "silu", gate: "mlp.gate_proj", up: "mlp.up_proj", down: "mlp.down_proj" },
    positions: { kind: "rope" },
  };
}

export function qwen3Spec(tieEmbeddings: boolean): DecoderSpec {
  return { ...llamaSpec(tieEmbeddings), qkNorm: { q: "self_attn.q_norm", k: "self_attn.k_norm" } };
}
