// rewrite(graph, { only }): swaps matched subgraphs for fused MLX ops without changing results
// (test/rewrite.test.ts proves it per architecture and per rewriter).
import type { Graph } from "../graph/graph.ts";
import { attnWeights, nativeAttention, sdpa } from "./attention.ts";
import { Rewriting } from "./match.ts";
import { layerNorm, rmsNorm } from "./norms.ts";
import { qkNormRope, rotaryEmbedding } from "./rotary.ts";
import {
  denseResidual,
  denseResidualNorm,
  dropout,
  fusedProjections,
  fusedSwiglu,
  projectionShapes,
  qkNormProjection,
  singlePositionHeads,
  swiglu,
} from "./structure.ts";

/** In application order. */
export const REWRITERS = {
  dropout,
  rms_norm: rmsNorm,
  layer_norm: layerNorm,
  rotary_embedding: rotaryEmbedding,
  qk_norm_rope: qkNormRope,
  swiglu,
  fused_projections: fusedProjections,
  fused_swiglu: fusedSwiglu,
  dense_residual: denseResidual,
  dense_residual_norm: denseResidualNorm,
  native_attention: nativeAttention,
  sdpa,
  attn_weights: attnWeights,
} as const;

export type RewriterName = keyof typeof REWRITERS;

/** Every rewriter (none changes what the KV cache holds: it always holds kv heads). */
export const DEFAULT_REWRITERS: RewriterName[] = Object.keys(REWRITERS) as RewriterName[];

export function rewrite(graph: Graph, options: { only?: string[] } = {}): Graph {
  const only = options.only ?? DEFAULT_REWRITERS;
  const unknown = only.filter((k) => !(k in REWRITERS));
  if (unknown.length > 0) {
    throw new Error(`rewrite: unknown rewriter(s) ${unknown.join(", ")} (valid: ${Object.keys(REWRITERS).join(", ")})`);
  }
  const enabled = new Set(only);
  const g = new Rewriting(graph);
  for (const [name, apply] of Object.entries(REWRITERS)) if (enabled.has(name)) apply(g);
  return g.finish();
}

/** A rewritten graph for steps of one position (decode): head splits and merges as single reshapes
 * (singlePositionHeads), those of fused projections made by the projection itself
 * (projectionShapes), and a fused q/k/v projection's q and k normed and rotated by it
 * (qkNormProjection). Equal to `graph` for T = 1 only; DecodeTape records its one-token steps with
 * it and checks the first replay against `graph` run normally. */
export function singlePositionGraph(graph: Graph): Graph {
  const heads = new Rewriting(graph);
  singlePositionHeads(heads);
  // Pruned first: the reshapes singlePositionHeads replaced still count as uses until then.
  const projections = new Rewriting(heads.finish());
  projectionShapes(projections);
  // Pruned first: the gets projectionShapes bypassed still count as uses until then.
  const normed = new Rewriting(projections.finish());
  qkNormProjection(normed);
  return normed.finish();
}
