// rms_norm and layer_norm layer nodes -> MLX's fused kernels.
import type { Rewriting } from "./match.ts";

/** rms_norm with shift 0 -> fast rms_norm (Gemma's +1 shift is left alone). */
export function rmsNorm(g: Rewriting): void {
  for (const n of g.withOp("rms_norm")) {
    if (n.attrs.shift !== 0) continue;
    g.replace(n.id, "fast_rms_norm", n.inputs, { eps: n.attrs.eps });
  }
}

/** layer_norm over the last axis -> fast layer_norm, with or without weight/bias. */
export function layerNorm(g: Rewriting): void {
  for (const n of g.withOp("layer_norm")) {
    if (n.attrs.axis !== -1) continue;
    g.replace(n.id, "fast_layer_norm", n.inputs, { eps: n.attrs.eps });
  }
}

/** fast_rms_norm whose only use is a dense_fused's input -> that dense_fused normalizing its input
 * (norm_weight, normEps): on a GPU the decode-time matvec normalizes x as it reads it, one node
 * fewer per norm (q/k/v and gate/up read a norm's output alone). */
export function normDense(g: Rewriting): void {
  const uses = g.useCounts();
  for (const n of g.withOp("dense_fused")) {
    if (n.inputs.length !== 1) continue;
    const norm = g.input(n, 0);
    if (norm.op !== "fast_rms_norm" || uses[norm.id] !== 1) continue;
    g.replace(n.id, "dense_fused", [norm.inputs[0]!, norm.inputs[1]!], { ...n.attrs, normEps: norm.attrs.eps });
  }
}
