// Rewrites that remove structure inference does not need: dropout, SwiGLU's container.
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
