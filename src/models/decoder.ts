// The decoder-only transformer every causal architecture here is an instance of, built in the plain
// form the rewriter matches: rms_norm / layer_norm nodes, rotate-half RoPE (apply_rotary_embedding),
// attention_weights -> dropout -> attention_output, SwiGLU as multiply(container(up, silu(gate))),
// GQA by repeat_interleave before the cache update, and the KV cache through if_present /
// update_attention_cache / put_block_cache. Architecture files describe their differences as a spec.
import { type Graph, GraphBuilder } from "../graph/graph.ts";
import type { ModelConfig } from "./config.ts";

export interface DecoderSpec {
  /** Module paths: `layer(i)` prefixes the per-layer names below. */
  embedding: string;
  layer: (i: number) => string;
  attentionNorm: string;
  /** Omitted for parallel blocks (Phi), which feed one normed input to attention and MLP. */
  mlpNorm?: string;
  /** Separate projections, or one fused projection split in three (GPT-2's c_attn). */
  qkv: { q: string; k: string; v: string } | { fused: string };
  output: string;
  finalNorm: string;
  /** lm_head path; null ties the head to the embedding. */
  head: string | null;
  norm: { kind: "rms"; shift: number } | { kind: "layer" };
  mlp:
    | { kind: "gated"; activation: "silu" | "gelu"; gate: string; up: string; down: string }
    | { kind: "plain"; activation: "gelu_approx"; up: string; down: string };
  /** Position information: rotary embeddings on q and k, or a learned table added to the embeddings. */
  positions: { kind: "rope" } | { kind: "learned"; table: string };
  /** Qwen3: rms_norm on each head of q and k before RoPE, at these paths under the layer. */
  qkNorm?: { q: string; k: string };
  /** Gemma: embeddings scaled by sqrt(hidden). */
  embeddingScale?: number;
}

export interface DecoderOptions {
  /** Logits for the last position only (decode) or every position. */
  logits?: "last" | "all";
}

/** Feeds: ids [B,T] int32, positions [B,T] int32, cache (per-layer [k, v] buffers, or null),
 * offset (number of cached positions), keyMask ([B,S] 1 = attend, or null).
 * Weights: the checkpoint's, plus `rotary.inverse_frequencies` for rotary specs. Outputs: logits, cache. */
export function buildDecoder(config: ModelConfig, spec: DecoderSpec, options: DecoderOptions = {}): Graph {
  const b = new GraphBuilder();
  const { heads, kvHeads, headDim, normEps: eps } = config;
  const ids = b.input("ids");
  const positions = b.input("positions");
  const cache = b.input("cache");
  const offset = b.input("offset");
  const keyMask = b.input("keyMask");
  const norm = (x: number, path: string) =>
    spec.norm.kind === "rms"
      ? b.op("rms_norm", [x, b.param(`${path}.weight`)], { eps, shift: spec.norm.shift }, path)
      : b.op("layer_norm", [x, b.param(`${path}.weight`), b.param(`${path}.bias`)], { eps, axis: -1 }, path);
  const dense = (x: number, path: string) => b.op("dense", [x], {}, path);
  const splitHeads = (x: number, n: number) => b.op("transpose", [b.op("reshape", [x], { shape: [0, 0, n, headDim] })], { axes: [0, 2, 1, 3] });

  let x = b.op("embedding", [ids], {}, spec.embedding);
  if (spec.embeddingScale !== undefined) x = b.op("scale", [x], { factor: spec.embeddingScale });
  if (spec.positions.kind === "learned") x = b.op("add", [x, b.op("embedding", [positions], {}, spec.positions.table)]);
  const frequencies = spec.positions.kind === "rope" ? b.param("rotary.inverse_frequencies") : -1;

  let cacheOut = cache;
  for (let l = 0; l < config.layers; l++) {
    const p = spec.layer(l);
    const h = norm(x, `${p}.${spec.attentionNorm}`);
    let q: number;
    let k: number;
    let v: number;
    if ("fused" in spec.qkv) {
      const parts = b.op("split", [dense(h, `${p}.${spec.qkv.fused}`)], { parts: 3, axis: -1 });
      [q, k, v] = [0, 1, 2].map((index) => splitHeads(b.op("get", [parts], { index }), index === 0 ? heads : kvHeads)) as [number, number, number];
    } else {
      q = splitHeads(dense(h, `${p}.${spec.qkv.q}`), heads);
      k = splitHeads(dense(h, `${p}.${spec.qkv.k}`), kvHeads);
      v = splitHeads(dense(h, `${p}.${spec.qkv.v}`), kvHeads);
    }
    if (spec.qkNorm) {
      q = b.op("rms_norm", [q, b.param(`${p}.${spec.qkNorm.q}.weight`)], { eps, shift: 0 }, `${p}.${spec.qkNorm.q}`);
      k = b.op("rms_norm", [k, b.param(`${p}.${spec.qkNorm.k}.weight`)], { eps, shift: 0 }, `${p}.${spec.qkNorm.k}`);
    }
    if (spec.positions.kind === "rope") {
      const rotated = b.op("apply_rotary_embedding", [q, k, positions, frequencies], { dims: config.ropeDims, base: config.ropeTheta, scaling: config.ropeScaling }, `${p}.rotary`);
      q = b.op("get", [rotated], { index: 0 });
      k = b.op("get", [rotated], { index: 1 });
    }
    k = b.op("repeat_interleave", [k], { repeats: heads / kvHeads, axis: 1 });
    v = b.op("repeat_interleave", [v], { repeats: heads / kvHeads, axis: 1 });
    const layerCache = b.op("get", [cache], { index: l });
    const updated = b.op("if_present", [
      layerCache,
      b.op("update_attention_cache", [k, v, layerCache, offset], {}, `${p}.cache`),
      b.op("container", [k, v]),
    ]);
    const keys = b.op("get", [updated], { index: 0 });
    const values = b.op("get", [updated], { index: 1 });
    const weights = b.op("attention_weights", [q, keys, keyMask, offset], { scale: headDim ** -0.5, causal: true }, `${p}.attention`);
    const dropped = b.op("dropout", [weights], { rate: 0 });
    const attended = b.op("attention_output", [dropped, values], {}, `${p}.attention`);
    const merged = b.op("reshape", [b.op("transpose", [attended], { axes: [0, 2, 1, 3] })], { shape: [0, 0, heads * headDim] });
    const attention = dense(merged, `${p}.${spec.output}`);
    cacheOut = b.op("put_block_cache", [cacheOut, updated], { index: l });

    const residual = spec.mlpNorm ? b.op("add", [x, attention]) : x;
    const h2 = spec.mlpNorm ? norm(residual, `${p}.${spec.mlpNorm}`) : h;
    const m = spec.mlp;
    let hidden: number;
    if (m.kind === "gated") {
      const gate = dense(h2, `${p}.${m.gate}`);
      const activated = m.activation === "silu" ? b.op("silu", [gate]) : b.op("gelu", [gate], { approximate: false });
      hidden = b.op("multiply", [b.op("container", [dense(h2, `${p}.${m.up}`), activated])], {}, `${p}.mlp`);
    } else {
      hidden = b.op("gelu", [dense(h2, `${p}.${m.up}`)], { approximate: true });
    }
    const mlp = dense(hidden, `${p}.${m.down}`);
    x = spec.mlpNorm ? b.op("add", [residual, mlp]) : b.op("add", [b.op("add", [attention, mlp]), x]);
  }
  x = norm(x, spec.finalNorm);
  if (options.logits !== "all") x = b.op("last_position", [x]);
  const logits = dense(x, spec.head ?? spec.embedding);
  return b.build({ logits, cache: cacheOut });
}
