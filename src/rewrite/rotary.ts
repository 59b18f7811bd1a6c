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
