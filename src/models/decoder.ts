// The decoder-only transformer shared by the Llama family, built in the plain form the rewriter
// matches: rms_norm nodes, rotate-half RoPE, attention_weights -> dropout -> attention_output,
// SwiGLU as multiply(container(up, silu(gate))), GQA by repeat_interleave before the cache update,
// and the KV cache through if_present / update_attention_cache / put_block_cache.
import { type Graph, GraphBuilder } from "../graph/graph.ts";
import type { ModelConfig } from "./config.ts";

export interface DecoderOptions {
  /** Qwen3: rms_norm on each head of q and k before RoPE. */
  qkNorm?: boolean;
  /** Logits for the last position only (decode) or every position. */
  logits?: "last" | "all";
}

/** Feeds: ids [B,T] int32, positions [B,T] int32, cache (per-layer [k, v] buffers, or null),
 * offset (number of cached positions), keyMask ([B,S] 1 = attend, or null).
 * Weights: the checkpoint's, plus `rotary.inverse_frequencies`. Outputs: logits, cache. */
export function buildDecoder(config: ModelConfig, options: DecoderOptions = {}): Graph {
  const b = new GraphBuilder();
  const { heads, kvHeads, headDim, normEps: eps } = config;
  const ids = b.input("ids");
  const positions = b.input("positions");
  const cache = b.input("cache");
  const offset = b.input("offset");
  const keyMask = b.input("keyMask");
  const frequencies = b.param("rotary.inverse_frequencies");
  const norm = (x: number, path: string) => b.op("rms_norm", [x, b.param(`${path}.weight`)], { eps, shift: 0 }, path);
  const dense = (x: number, path: string) => b.op("dense", [x], {}, path);
  const splitHeads = (x: number, n: number) => b.op("transpose", [b.op("reshape", [x], { shape: [0, 0, n, headDim] })], { axes: [0, 2, 1, 3] });

  let x = b.op("embedding", [ids], {}, "model.embed_tokens");
  let cacheOut = cache;
  for (let l = 0; l < config.layers; l++) {
    const p = `model.layers.${l}`;
    const h = norm(x, `${p}.input_layernorm`);
    let q = splitHeads(dense(h, `${p}.self_attn.q_proj`), heads);
    let k = splitHeads(dense(h, `${p}.self_attn.k_proj`), kvHeads);
    let v = splitHeads(dense(h, `${p}.self_attn.v_proj`), kvHeads);
    if (options.qkNorm) {
      q = norm(q, `${p}.self_attn.q_norm`);
      k = norm(k, `${p}.self_attn.k_norm`);
    }
    const rotated = b.op("apply_rotary_embedding", [q, k, positions, frequencies], { dims: config.ropeDims }, `${p}.self_attn.rotary`);
    q = b.op("get", [rotated], { index: 0 });
    k = b.op("get", [rotated], { index: 1 });
    k = b.op("repeat_interleave", [k], { repeats: heads / kvHeads, axis: 1 });
    v = b.op("repeat_interleave", [v], { repeats: heads / kvHeads, axis: 1 });
    const layerCache = b.op("get", [cache], { index: l });
    const updated = b.op("if_present", [
      layerCache,
      b.op("update_attention_cache", [k, v, layerCache, offset], {}, `${p}.self_attn.cache`),
      b.op("container", [k, v]),
    ]);
    const keys = b.op("get", [updated], { index: 0 });
    const values = b.op("get", [updated], { index: 1 });
    const weights = b.op("attention_weights", [q, keys, keyMask, offset], { scale: headDim ** -0.5, causal: true }, `${p}.self_attn`);
    const dropped = b.op("dropout", [weights], { rate: 0 });
    const attended = b.op("attention_output", [dropped, values], {}, `${p}.self_attn`);
    const merged = b.op("reshape", [b.op("transpose", [attended], { axes: [0, 2, 1, 3] })], { shape: [0, 0, heads * headDim] });
    x = b.op("add", [x, dense(merged, `${p}.self_attn.o_proj`)]);
    cacheOut = b.op("put_block_cache", [cacheOut, updated], { index: l });

    const h2 = norm(x, `${p}.post_attention_layernorm`);
    const gate = dense(h2, `${p}.mlp.gate_proj`);
    const up = dense(h2, `${p}.mlp.up_proj`);
    const activated = b.op("multiply", [b.op("container", [up, b.op("silu", [gate])])], {}, `${p}.mlp.swiglu`);
    x = b.op("add", [x, dense(activated, `${p}.mlp.down_proj`)]);
  }
  x = norm(x, "model.norm");
  if (options.logits !== "all") x = b.op("last_position", [x]);
  const logits = dense(x, config.tieEmbeddings ? "model.embed_tokens" : "lm_head");
  return b.build({ logits, cache: cacheOut });
}
