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
    const fused = g.append("dense_fused", [input], { modules: layers.map((n) => n.attrs.module) }, fusedName(layers.map((n) => n.attrs.module)));
    layers.forEach((n, index) => g.replace(n.id, "get", [fused], { index }));
  }
}
