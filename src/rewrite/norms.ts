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
