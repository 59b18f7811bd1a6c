// Attention rewrites: sdpa, attention-weight outputs, GQA repeats.
import type { Attrs } from "../graph/graph.ts";
import type { Rewriting } from "./match.ts";

/** attention_output(dropout?(attention_weights(q, k, mask, offset)), v) -> fast sdpa. Skipped for a
 * window or a dropout rate > 0. repeat_interleave feeding k or v directly is stripped (native GQA). */
export function sdpa(g: Rewriting): void {
  for (const out of g.withOp("attention_output")) {
    let weights = g.input(out, 0);
    if (weights.op === "dropout") {
      if (((weights.attrs.rate as number) ?? 0) > 0) continue;
      weights = g.input(weights, 0);
    }
    if (weights.op !== "attention_weights" || weights.attrs.window_size) continue;
    const [q, k, mask, offset] = weights.inputs as [number, number, number, number];
    const unrepeated = (id: number) => (g.node(id).op === "repeat_interleave" ? g.node(id).inputs[0]! : id);
    g.replace(out.id, "fast_sdpa", [q, unrepeated(k), unrepeated(out.inputs[1]!), mask, offset], {
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

/** Moves GQA's repeat_interleave from before the cache update to after it: the cache holds kv heads
 * (allocate it with kvHeads) and the plain attention repeats what it reads; after this, sdpa strips
 * those repeats and attention runs GQA natively. Not a default: the cache layout changes. */
export function gqaCacheFix(g: Rewriting): void {
  const repeats = new Map<number, Attrs>();
  for (const n of [...g.withOp("update_attention_cache"), ...g.withOp("container")]) {
    const [k, v] = [g.input(n, 0), g.input(n, 1)];
    if (k?.op !== "repeat_interleave" || v?.op !== "repeat_interleave") continue;
    g.replace(n.id, n.op, [k.inputs[0]!, v.inputs[0]!, ...n.inputs.slice(2)], n.attrs);
    repeats.set(n.id, k.attrs);
    g.cacheHeads = "kv";
  }
  // The keys/values attention reads: get(if_present(cache, update, container)) or get(update).
  const repeatOf = (id: number): Attrs | undefined => {
    const n = g.node(id);
    if (n.op !== "get") return undefined;
    const source = g.input(n, 0);
    if (source.op === "if_present") return repeats.get(source.inputs[1]!) ?? repeats.get(source.inputs[2]!);
    return repeats.get(source.id);
  };
  const repeated = (id: number) => {
    const attrs = repeatOf(id);
    return attrs ? g.append("repeat_interleave", [id], attrs) : id;
  };
  for (const w of g.withOp("attention_weights")) g.replace(w.id, w.op, [w.inputs[0]!, repeated(w.inputs[1]!), ...w.inputs.slice(2)], w.attrs);
  for (const o of g.withOp("attention_output")) g.replace(o.id, o.op, [o.inputs[0]!, repeated(o.inputs[1]!)], o.attrs);
}

/** Causal self-attention over the cache and its update -> one native_attention call (shim
 * kv-cache attention): writes the new K/V at the offset and attends over [0, offset + t). Needs the
 * cache present (rewrite adds if_present). */
export function nativeAttention(g: Rewriting): void {
  const through = (id: number) => (g.node(id).op === "repeat_interleave" ? g.node(id).inputs[0]! : id);
  for (const out of g.withOp("attention_output")) {
    let weights = g.input(out, 0);
    if (weights.op === "dropout" && ((weights.attrs.rate as number) ?? 0) === 0) weights = g.input(weights, 0);
    if (weights.op !== "attention_weights" || !weights.attrs.causal || weights.attrs.window_size) continue;
    const keys = g.node(through(weights.inputs[1]!));
    const values = g.node(through(out.inputs[1]!));
    if (keys.op !== "get" || values.op !== "get" || keys.inputs[0] !== values.inputs[0]) continue;
    const update = g.input(keys, 0);
    if (update.op !== "update_attention_cache") continue;
    const [k, v, layerCache] = update.inputs as [number, number, number];
    const [q, , mask, offset] = weights.inputs as [number, number, number, number];
    const call = g.append("native_attention", [q, k, v, layerCache, mask, offset], { scale: weights.attrs.scale }, out.name);
    g.replace(out.id, "get", [call], { index: 0 });
    g.bypass(update.id, g.append("get", [call], { index: 1 }));
  }
}

/** put_block_cache -> identity where the layer cache comes from native_attention, which updated the
 * KV cache in place: the cache plumbing around it is pruned. Elsewhere it stays (it carries the
 * updated buffers). */
export function nullifyBlockCache(g: Rewriting): void {
  for (const n of g.withOp("put_block_cache")) {
    const layer = g.input(n, 1);
    if (layer.op === "get" && g.input(layer, 0).op === "native_attention") g.bypass(n.id, n.inputs[0]!);
  }
}
