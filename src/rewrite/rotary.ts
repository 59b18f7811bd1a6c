// apply_rotary_embedding (rotate-half on q and k) -> MLX's rope, traditional = false.
// Assumes positions are sequential within each example (offset = the first position), which holds
// for prefill and decode through the KV cache, left padding included. Scaling: none and linear map
// exactly; llama3 passes its periods; dynamic NTK and others run at base frequencies, as the
// decomposed graph does.
import { inverseFrequencies } from "../graph/rotary.ts";
import type { Rewriting } from "./match.ts";

export function rotaryEmbedding(g: Rewriting): void {
  // One offset computation per positions input, shared by every layer's rope.
  const offsets = new Map<number, number>();
  for (const n of g.withOp("apply_rotary_embedding")) {
    const { dims, base, scaling } = n.attrs;
    const [q, k, positions] = n.inputs as [number, number, number];
    if (!offsets.has(positions)) offsets.set(positions, g.append("rope_offset", [positions], {}, "rotary.offsets"));
    const offset = offsets.get(positions)!;
    if (scaling.type === "llama3") {
      const periods = inverseFrequencies(dims, base, scaling).map((f) => 1 / f);
      g.replace(n.id, "fast_rope", [q, k, offset], { dims, base, scale: 1, periods });
    } else {
      const scale = scaling.type === "linear" ? 1 / scaling.factor : 1;
      g.replace(n.id, "fast_rope", [q, k, offset], { dims, base, scale, periods: null });
    }
  }
}

/** fast_rope whose q and k are each a fast_rms_norm used only there (Qwen3's q/k norms) -> one
 * fast_qk_norm_rope (one kernel on a CUDA GPU instead of four). */
export function qkNormRope(g: Rewriting): void {
  const uses = g.useCounts();
  for (const n of g.withOp("fast_rope")) {
    const [q, k] = [g.input(n, 0), g.input(n, 1)];
    if (
      q.op !== "fast_rms_norm" ||
      k.op !== "fast_rms_norm" ||
      q.attrs.eps !== k.attrs.eps ||
      uses[q.id] !== 1 ||
      uses[k.id] !== 1
    )
      continue;
    const [qx, qWeight, kx, kWeight] = [...q.inputs, ...k.inputs] as [number, number, number, number];
    g.replace(n.id, "fast_qk_norm_rope", [qx, kx, qWeight, kWeight, n.inputs[2]!], { ...n.attrs, eps: q.attrs.eps });
  }
}
