// Rewrites of structure: dropout and SwiGLU's container (not needed for inference), and dense layers
// sharing an input fused into one op.
import type { NodeOf } from "../graph/graph.ts";
import { fusedName } from "../quant/linear.ts";
import type { Rewriting } from "./match.ts";

/** dropout -> identity (inference only). */
export function dropout(g: Rewriting): void {
  for (const n of g.withOp("dropout")) g.bypass(n.id, n.inputs[0]!);
}

/** multiply(container(up, silu(gate))) -> fast swiglu(gate, up); other multiplies stay as they are. */
export function swiglu(g: Rewriting): void {
  for (const n of g.withOp("multiply")) {
    if (n.inputs.length !== 1) continue;
    const pair = g.input(n, 0);
    if (pair.op !== "container" || pair.inputs.length !== 2) continue;
    const activation = g.input(pair, 1);
    if (activation.op !== "silu") continue;
    g.replace(n.id, "fast_swiglu", [activation.inputs[0]!, pair.inputs[0]!], {});
  }
}

/** Dense layers reading the same input (q, k, v; gate and up) -> one dense_fused whose outputs the
 * layers' consumers get: one matmul on MLX where the loader fused the weights (fuseLinears). */
export function fusedProjections(g: Rewriting): void {
  const byInput = new Map<number, NodeOf<"dense">[]>();
  for (const n of g.withOp("dense")) {
    const input = n.inputs[0]!;
    if (!byInput.has(input)) byInput.set(input, []);
    byInput.get(input)!.push(n);
  }
  for (const [input, layers] of byInput) {
    if (layers.length < 2) continue;
    const fused = g.append(
      "dense_fused",
      [input],
      { modules: layers.map((n) => n.attrs.module) },
      fusedName(layers.map((n) => n.attrs.module)),
    );
    for (const [index, n] of layers.entries()) g.replace(n.id, "get", [fused], { index });
  }
}

/** get(dense_fused, i) whose only use is a reshape (no -1 in its shape) -> the dense_fused makes
 * output i in that shape (its `shapes`): on MLX, for one row (decode), the fused product, its split
 * and the reshapes are one node (quantizedMatmulSplit). Run on the single-position graph, after
 * singlePositionHeads has made the heads' reshapes. */
export function projectionShapes(g: Rewriting): void {
  const uses = g.useCounts();
  const reshapeOf = new Map<number, NodeOf<"reshape">>(); // by the node it reshapes
  for (const n of g.withOp("reshape")) reshapeOf.set(n.inputs[0]!, n);
  for (const get of g.withOp("get")) {
    const fused = g.input(get, 0);
    const reshape = reshapeOf.get(get.id);
    if (fused.op !== "dense_fused" || uses[get.id] !== 1 || !reshape || reshape.attrs.shape.some((d) => d < 0))
      continue;
    const shapes = fused.attrs.modules.map((_, i) => fused.attrs.shapes?.[i] ?? null);
    shapes[get.attrs.index] = reshape.attrs.shape;
    g.replace(fused.id, "dense_fused", fused.inputs, { ...fused.attrs, shapes });
    g.bypass(reshape.id, get.id);
  }
}

/** fast_qk_norm_rope(get(F, 0), get(F, 1), ...) where F = dense_fused(x) of an attention's q, k and v
 * layers in their heads' shapes (projectionShapes) and each get has no other use ->
 * dense_fused_qk_norm_rope(x, ...), whose outputs are q and k normed and rotated, and v: on a CUDA
 * GPU, for a decode step, the matvec writes q and k normed and rotated, a kernel and an MLX node
 * fewer. Single-position graphs, after projectionShapes. */
export function qkNormProjection(g: Rewriting): void {
  const uses = g.useCounts();
  const values = new Map<number, NodeOf<"get">>(); // the get of output 2 (v), by the node it reads
  for (const n of g.withOp("get")) if (n.attrs.index === 2) values.set(n.inputs[0]!, n);
  for (const n of g.withOp("fast_qk_norm_rope")) {
    const [q, k] = [g.input(n, 0), g.input(n, 1)];
    if (q.op !== "get" || k.op !== "get" || q.attrs.index !== 0 || k.attrs.index !== 1) continue;
    if (q.inputs[0] !== k.inputs[0] || uses[q.id] !== 1 || uses[k.id] !== 1) continue;
    const fused = g.input(q, 0);
    const v = values.get(fused.id);
    if (fused.op !== "dense_fused" || fused.attrs.modules.length !== 3 || uses[fused.id] !== 3 || !v) continue;
    const [qShape, kShape, vShape] = fused.attrs.shapes ?? [];
    if (!qShape || !kShape || !vShape) continue;
    const [qm, km, vm] = fused.attrs.modules as [string, string, string];
    const [, , qWeight, kWeight, offsets] = n.inputs as [number, number, number, number, number];
    const made = g.append("dense_fused_qk_norm_rope", [fused.inputs[0]!, qWeight, kWeight, offsets], {
      ...n.attrs,
      modules: [qm, km, vm],
      shapes: [qShape, kShape, vShape],
    });
    g.bypass(n.id, made);
    g.replace(v.id, "get", [made], { index: 2 });
  }
}

/** add(r, dense(x)) where that add is the dense's only use -> dense_add(x, r): on MLX one op for a
 * packed layer (the decode-time matvec kernels add the residual as they write the product, rounded as
 * the separate add rounds it). Either operand order (float addition commutes). */
export function denseResidual(g: Rewriting): void {
  const uses = g.useCounts();
  for (const n of g.withOp("add")) {
    for (const side of [1, 0]) {
      const layer = g.input(n, side);
      if (layer.op !== "dense" || uses[layer.id] !== 1) continue;
      g.replace(n.id, "dense_add", [layer.inputs[0]!, n.inputs[1 - side]!], { module: layer.attrs.module });
      break;
    }
  }
}

/** fast_rms_norm(dense_add(x, r), w) -> get(dense_add_norm(x, r, w), 1), and the dense_add's other
 * uses get(.., 0) (a residual sum and the next layer's norm of it): on a CUDA GPU, for a decode step,
 * the matvec's last warp writes the norm, a kernel and an MLX node fewer. Run after dense_residual
 * and rms_norm. */
export function denseResidualNorm(g: Rewriting): void {
  for (const n of g.withOp("fast_rms_norm")) {
    // A second norm of one sum finds it a get already (replaced below): only the first joins it.
    const sum = g.input(n, 0);
    if (sum.op !== "dense_add") continue;
    const fused = g.append("dense_add_norm", [...sum.inputs, n.inputs[1]!], {
      module: sum.attrs.module,
      eps: n.attrs.eps,
    });
    g.replace(sum.id, "get", [fused], { index: 0 });
    g.replace(n.id, "get", [fused], { index: 1 });
  }
}

/** fast_swiglu(get(F, 0), get(F, 1)) where F = dense_fused(x) of an MLP's gate and up layers (in that
 * order, unshaped) used by nothing else -> dense_fused_swiglu(x): on a CUDA GPU, for a decode step,
 * the matvec sums a gate row with its up row and writes their swiglu, a kernel and an MLX node fewer.
 * Run after swiglu and fused_projections. */
export function fusedSwiglu(g: Rewriting): void {
  const uses = g.useCounts(true);
  for (const n of g.withOp("fast_swiglu")) {
    const [a, b] = [g.input(n, 0), g.input(n, 1)];
    if (a.op !== "get" || b.op !== "get" || a.attrs.index !== 0 || b.attrs.index !== 1) continue;
    if (a.inputs[0] !== b.inputs[0] || uses[a.id] !== 1 || uses[b.id] !== 1) continue;
    const fused = g.input(a, 0);
    if (fused.op !== "dense_fused" || fused.attrs.modules.length !== 2 || fused.attrs.shapes || uses[fused.id] !== 2)
      continue;
    const [gate, up] = fused.attrs.modules;
    g.replace(n.id, "dense_fused_swiglu", [fused.inputs[0]!], { gate: gate!, up: up! });
  }
}

const SWAP_12 = [0, 2, 1, 3];
const isSwap12 = (axes: readonly number[]) => axes.length === 4 && axes.every((a, i) => a === SWAP_12[i]);

/** For graphs run one position at a time only (T = 1, decode steps): splitting heads (reshape
 * [B, T, n*d] -> [B, T, n, d], then swap axes 1 and 2) and merging them back (the swap, then reshape
 * to [B, T, n*d]) only move an axis of size 1, so each pair is one reshape: [B, n, 1, d] and
 * [B, 1, n*d]. Wrong for T > 1 (the reshape then fails on its element count). */
export function singlePositionHeads(g: Rewriting): void {
  for (const n of g.withOp("transpose")) {
    const source = g.input(n, 0);
    if (!isSwap12(n.attrs.axes) || source.op !== "reshape") continue;
    const [b, t, heads, dim] = source.attrs.shape;
    if (source.attrs.shape.length !== 4 || b !== 0 || t !== 0) continue;
    g.replace(n.id, "reshape", [source.inputs[0]!], { shape: [0, heads!, 1, dim!] });
  }
  for (const n of g.withOp("reshape")) {
    const source = g.input(n, 0);
    const [b, t, width] = n.attrs.shape;
    if (source.op !== "transpose" || !isSwap12(source.attrs.axes) || n.attrs.shape.length !== 3 || b !== 0 || t !== 0)
      continue;
    g.replace(n.id, "reshape", [source.inputs[0]!], { shape: [0, 1, width!] });
  }
}
