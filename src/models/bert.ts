// BERT: an encoder (no cache, no causal mask): word + position + token-type embeddings, post-norm
// blocks of bidirectional attention and a GELU MLP. Output: the last hidden states [B, T, hidden].
import { type Graph, GraphBuilder } from "../graph/graph.ts";
import type { ModelConfig } from "./config.ts";

/** Feeds: ids [B,T] int32, positions [B,T] int32, tokenTypes [B,T] int32, keyMask ([B,T] 1 = real
 * token, or null). HF names without a `bert.` prefix. Output: hidden. */
export function buildBert(config: ModelConfig): Graph {
  const b = new GraphBuilder();
  const { heads, headDim, normEps: eps } = config;
  const ids = b.input("ids");
  const positions = b.input("positions");
  const tokenTypes = b.input("tokenTypes");
  const keyMask = b.input("keyMask");
  const offset = b.op("constant", [], { value: 0 });
  const layerNorm = (x: number, path: string) =>
    b.op("layer_norm", [x, b.param(`${path}.weight`), b.param(`${path}.bias`)], { eps, axis: -1 }, path);
  const dense = (x: number, path: string) => b.op("dense", [x], {}, path);
  const splitHeads = (x: number) => b.op("transpose", [b.op("reshape", [x], { shape: [0, 0, heads, headDim] })], { axes: [0, 2, 1, 3] });

  const words = b.op("embedding", [ids], {}, "embeddings.word_embeddings");
  const placed = b.op("add", [words, b.op("embedding", [positions], {}, "embeddings.position_embeddings")]);
  const typed = b.op("add", [placed, b.op("embedding", [tokenTypes], {}, "embeddings.token_type_embeddings")]);
  let x = layerNorm(typed, "embeddings.LayerNorm");
  for (let l = 0; l < config.layers; l++) {
    const p = `encoder.layer.${l}`;
    const q = splitHeads(dense(x, `${p}.attention.self.query`));
    const k = splitHeads(dense(x, `${p}.attention.self.key`));
    const v = splitHeads(dense(x, `${p}.attention.self.value`));
    const weights = b.op("attention_weights", [q, k, keyMask, offset], { scale: headDim ** -0.5, causal: false }, `${p}.attention`);
    const dropped = b.op("dropout", [weights], { rate: 0 });
    const attended = b.op("attention_output", [dropped, v], {}, `${p}.attention`);
    const merged = b.op("reshape", [b.op("transpose", [attended], { axes: [0, 2, 1, 3] })], { shape: [0, 0, heads * headDim] });
    x = layerNorm(b.op("add", [x, dense(merged, `${p}.attention.output.dense`)]), `${p}.attention.output.LayerNorm`);
    const hidden = b.op("gelu", [dense(x, `${p}.intermediate.dense`)], { approximate: false });
    x = layerNorm(b.op("add", [x, dense(hidden, `${p}.output.dense`)]), `${p}.output.LayerNorm`);
  }
  return b.build({ hidden: x });
}
