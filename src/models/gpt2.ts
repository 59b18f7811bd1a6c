// GPT-2: learned position embeddings, layer norms, one fused q/k/v projection, a GELU (tanh) MLP,
// the head tied to the token embeddings.
import type { DecoderSpec } from "./decoder.ts";

export function gpt2Spec(): DecoderSpec {
  return {
    embedding: "model.wte",
    layer: (i) => `model.h.${i}`,
    attentionNorm: "ln_1",
    mlpNorm: "ln_2",
    qkv: { fused: "attn.c_attn" },
    output: "attn.c_proj",
    finalNorm: "model.ln_f",
    head: null,
    norm: { kind: "layer" },
    mlp: { kind: "plain", activation: "gelu_approx", up: "mlp.c_fc", down: "mlp.c_proj" },
    positions: { kind: "learned", table: "model.wpe" },
  };
}
