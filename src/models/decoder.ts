// The decoder-only transformer every causal architecture here is an instance of, built in the plain
// form the rewriter matches: rms_norm / layer_norm nodes, rotate-half RoPE (apply_rotary_embedding),
// attention_weights -> dropout -> attention_output, SwiGLU as multiply(container(up, silu(gate))),
// the KV cache through cache_update (the cache holds kv heads; GQA repeats what it returns).
// Architecture files describe their differences as a spec.
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
  /** Tensor-parallel: the attention output and MLP down projections read a rank's share of their
   * input features, so their outputs are summed over the process group (all_sum). */
  sharded?: boolean;
}

/** Feeds: ids [B,T] int32, positions [B,T] int32, offset (number of cached positions), keyMask
 * ([B, offset + T] 1 = attend, or null); the KV cache (or none) comes with the run's context.
 * Weights: the checkpoint's, plus `rotary.inverse_frequencies` for rotary specs. Output: logits. */
export function buildDecoder(config: ModelConfig, spec: DecoderSpec, options: DecoderOptions = {}): Graph {
  const b = new GraphBuilder();
  const o = b.ops;
  const { heads, kvHeads, headDim, normEps: eps } = config;
  const ids = b.input("ids");
  const positions = b.input("positions");
  const offset = b.input("offset");
  const keyMask = b.input("keyMask");
  const norm = (x: number, path: string) =>
    spec.norm.kind === "rms"
      ? o.rms_norm([x, b.param(`${path}.weight`)], { eps, shift: spec.norm.shift }, path)
      : o.layer_norm([x, b.param(`${path}.weight`), b.param(`${path}.bias`)], { eps, axis: -1 }, path);
  const dense = (x: number, module: string) => o.dense([x], { module }, module);
  const splitHeads = (x: number, n: number) =>
    o.transpose([o.reshape([x], { shape: [0, 0, n, headDim] })], { axes: [0, 2, 1, 3] });

  let x = o.embedding([ids], { module: spec.embedding }, spec.embedding);
  if (spec.embeddingScale !== undefined) x = o.scale([x], { factor: spec.embeddingScale });
  if (spec.positions.kind === "learned")
    x = o.add([x, o.embedding([positions], { module: spec.positions.table }, spec.positions.table)]);
  const frequencies = spec.positions.kind === "rope" ? b.param("rotary.inverse_frequencies") : -1;

  for (let l = 0; l < config.layers; l++) {
    const p = spec.layer(l);
    const h = norm(x, `${p}.${spec.attentionNorm}`);
    let q: number;
    let k: number;
    let v: number;
    if ("fused" in spec.qkv) {
      const parts = o.split([dense(h, `${p}.${spec.qkv.fused}`)], { parts: 3, axis: -1 });
      [q, k, v] = [0, 1, 2].map((index) => splitHeads(o.get([parts], { index }), index === 0 ? heads : kvHeads)) as [
        number,
        number,
        number,
      ];
    } else {
      q = splitHeads(dense(h, `${p}.${spec.qkv.q}`), heads);
      k = splitHeads(dense(h, `${p}.${spec.qkv.k}`), kvHeads);
      v = splitHeads(dense(h, `${p}.${spec.qkv.v}`), kvHeads);
    }
    if (spec.qkNorm) {
      q = o.rms_norm([q, b.param(`${p}.${spec.qkNorm.q}.weight`)], { eps, shift: 0 }, `${p}.${spec.qkNorm.q}`);
      k = o.rms_norm([k, b.param(`${p}.${spec.qkNorm.k}.weight`)], { eps, shift: 0 }, `${p}.${spec.qkNorm.k}`);
    }
    if (spec.positions.kind === "rope") {
      const rotated = o.apply_rotary_embedding(
        [q, k, positions, frequencies],
        { dims: config.ropeDims, base: config.ropeTheta, scaling: config.ropeScaling },
        `${p}.rotary`,
      );
      q = o.get([rotated], { index: 0 });
      k = o.get([rotated], { index: 1 });
    }
    const cached = o.cache_update([k, v], { layer: l }, `${p}.cache`);
    const keys = o.repeat_interleave([o.get([cached], { index: 0 })], { repeats: heads / kvHeads, axis: 1 });
    const values = o.repeat_interleave([o.get([cached], { index: 1 })], { repeats: heads / kvHeads, axis: 1 });
    const weights = o.attention_weights(
      [q, keys, keyMask, offset],
      { scale: headDim ** -0.5, causal: true },
      `${p}.attention`,
    );
    const dropped = o.dropout([weights], { rate: 0 });
    const attended = o.attention_output([dropped, values], {}, `${p}.attention`);
    const merged = o.reshape([o.transpose([attended], { axes: [0, 2, 1, 3] })], { shape: [0, 0, heads * headDim] });
    const projected = dense(merged, `${p}.${spec.output}`);
    const attention = options.sharded ? o.all_sum([projected], {}, `${p}.${spec.output}.sum`) : projected;

    const residual = spec.mlpNorm ? o.add([x, attention]) : x;
    const h2 = spec.mlpNorm ? norm(residual, `${p}.${spec.mlpNorm}`) : h;
    const m = spec.mlp;
    let hidden: number;
    if (m.kind === "gated") {
      const gate = dense(h2, `${p}.${m.gate}`);
      const activated = m.activation === "silu" ? o.silu([gate]) : o.gelu([gate], { approximate: false });
      hidden = o.multiply([o.container([dense(h2, `${p}.${m.up}`), activated])], {}, `${p}.mlp`);
    } else {
      hidden = o.gelu([dense(h2, `${p}.${m.up}`)], { approximate: true });
    }
    const down = dense(hidden, `${p}.${m.down}`);
    const mlp = options.sharded ? o.all_sum([down], {}, `${p}.${m.down}.sum`) : down;
    x = spec.mlpNorm ? o.add([residual, mlp]) : o.add([o.add([attention, mlp]), x]);
  }
  x = norm(x, spec.finalNorm);
  if (options.logits !== "all") x = o.last_position([x]);
  const head = spec.head ?? spec.embedding;
  return b.build({ logits: dense(x, head) });
}
