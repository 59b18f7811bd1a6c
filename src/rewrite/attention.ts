// Attention rewrites: sdpa, the fused cache update + attention, attention-weight outputs.
import type { Rewriting } from "./match.ts";

/** attention_output(dropout?(attention_weights(q, k, mask, offset)), v) -> fast sdpa. Skipped for a
 * window or a dropout rate > 0. GQA repeats feeding k or v are stripped (sdpa runs GQA natively). */
export function sdpa(g: Rewriting): void {
  for (const out of g.withOp("attention_output")) {
    const weights = g.weightsOf(out);
    if (!weights || weights.attrs.window !== undefined) continue;
    const [q, k, mask, offset] = weights.inputs as [number, number, number, number];
    g.replace(out.id, "fast_sdpa", [q, g.unrepeated(k), g.unrepeated(out.inputs[1]!), mask, offset], {
      scale: weights.attrs.scale,
      causal: weights.attrs.causal,
    });
  }
}

/** Graph outputs that expose attention weights become null constants, pruning what computed them. */
export function attnWeights(g: Rewriting): void {
  for (const [name, id] of Object.entries(g.outputs)) {
    let n = g.node(id);
    if (n.op === "dropout") n = g.input(n, 0);
    if (n.op === "attention_weights") g.outputs[name] = g.append("constant", [], { value: null });
  }
}

/** Causal attention over one cache_update's keys and values -> native_attention: the cache update
 * and attention in one shim call (MLX caches), the same two steps elsewhere. */
export function nativeAttention(g: Rewriting): void {
  for (const out of g.withOp("attention_output")) {
    const weights = g.weightsOf(out);
    if (!weights?.attrs.causal || weights.attrs.window !== undefined) continue;
    const keys = g.node(g.unrepeated(weights.inputs[1]!));
    const values = g.node(g.unrepeated(out.inputs[1]!));
    if (
      keys.op !== "get" ||
      values.op !== "get" ||
      keys.inputs[0] !== values.inputs[0] ||
      keys.attrs.index !== 0 ||
      values.attrs.index !== 1
    )
      continue;
    const update = g.input(keys, 0);
    if (update.op !== "cache_update") continue;
    const [k, v] = update.inputs as [number, number];
    const [q, , mask, offset] = weights.inputs as [number, number, number, number];
    g.replace(out.id, "native_attention", [q, k, v, mask, offset], {
      layer: update.attrs.layer,
      scale: weights.attrs.scale,
    });
  }
}
