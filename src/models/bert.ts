// BERT: an encoder (no cache, no causal mask): word + position + token-type embeddings, post-norm
// blocks of bidirectional attention and a GELU MLP. Output: the last hidden states [B, T, hidden].
import { type Graph, GraphBuilder } from "../graph/graph.ts";
import type { ModelConfig } from "./config.ts";

/** Feeds: ids [B,T] int32, positions [B,T] int32, tokenTypes [B,T] int32, keyMask ([B,T] 1 = real
 * token, or null). HF names without a `bert.` prefix. Output: hidden. */
export function buildBert(config: ModelConfig): Graph {
  const b = new GraphBuilder();
  const o = b.ops;
  const { heads, headDim, normEps: eps } = config;
  const ids = b.input("ids");
  const positions = b.input("positions");
  const tokenTypes = b.input("tokenTypes");
  const keyMask = b.input("keyMask");
  const offset = o.constant([], { value: 0 });
  const layerNorm = (x: number, path: string) =>
    o.layer_norm([x, b.param(`${path}.weight`), b.param(`${path}.bias`)], { eps, axis: -1 }, path);
  const dense = (x: number, module: string) => o.dense([x], { module }, module);
  const embedding = (x: number, module: string) => o.embedding([x], { module }, module);
  const splitHeads = (x: number) =>
    o.transpose([o.reshape([x], { shape: [0, 0, heads, headDim] })], { axes: [0, 2, 1, 3] });

  const words = embedding(ids, "embeddings.word_embeddings");
  const placed = o.add([words, embedding(positions, "embeddings.position_embeddings")]);
  const typed = o.add([placed, embedding(tokenTypes, "embeddings.token_type_embeddings")]);
  let x = layerNorm(typed, "embeddings.LayerNorm");
  for (let l = 0; l < config.layers; l++) {
    const p = `encoder.layer.${l}`;
    const q = splitHeads(dense(x, `${p}.attention.self.query`));
    const k = splitHeads(dense(x, `${p}.attention.self.key`));
    const v = splitHeads(dense(x, `${p}.attention.self.value`));
    const weights = o.attention_weights(
      [q, k, keyMask, offset],
      { scale: headDim ** -0.5, causal: false },
      `${p}.attention`,
    );
    const dropped = o.dropout([weights], { rate: 0 });
    const attended = o.attention_output([dropped, v], {}, `${p}.attention`);
    const merged = o.reshape([o.transpose([attended], { axes: [0, 2, 1, 3] })], { shape: [0, 0, heads * headDim] });
    x = layerNorm(o.add([x, dense(merged, `${p}.attention.output.dense`)]), `${p}.attention.output.LayerNorm`);
    const hidden = o.gelu([dense(x, `${p}.intermediate.dense`)], { approximate: false });
    x = layerNorm(o.add([x, dense(hidden, `${p}.output.dense`)]), `${p}.output.LayerNorm`);
  }
  return b.build({ hidden: x });
}
