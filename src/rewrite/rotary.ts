// apply_rotary_embedding (rotate-half on q and k) -> MLX's rope, traditional = false.
// Assumes positions are sequential within each example (offset = the first position), which holds
// for prefill and decode through the KV cache, left padding included. Scaling: none and linear map
// exactly; llama3 uses its frequencies, computed once here and cached per (dims, base, scaling);
// dynamic NTK and others run at base frequencies, as the decomposed graph does.
import { Tensor } from "../tensor.ts";
import { inverseFrequencies, type RopeScaling } from "../models/config.ts";
import type { Rewriting } from "./match.ts";

const periodsCache = new Map<string, Tensor>();

function llama3Periods(dims: number, base: number, scaling: RopeScaling): Tensor {
  const key = JSON.stringify([dims, base, scaling]);
  let t = periodsCache.get(key);
  if (!t) {
    t = Tensor.from(inverseFrequencies(dims, base, scaling).map((f) => 1 / f), [dims / 2]);
    periodsCache.set(key, t);
  }
  return t;
}

export function rotaryEmbedding(g: Rewriting): void {
  for (const n of g.withOp("apply_rotary_embedding")) {
    const dims = n.attrs.dims as number;
    const base = n.attrs.base as number | undefined;
    const scaling = (n.attrs.scaling as RopeScaling | undefined) ?? { type: "none", factor: 1 };
    if (base === undefined) continue; // built without its base: nothing to fuse to
    const [q, k, positions] = n.inputs as [number, number, number];
    if (scaling.type === "llama3") {
      const periods = g.append("constant", [], { value: llama3Periods(dims, base, scaling) }, "rotary.llama3_periods");
      g.replace(n.id, "fast_rope", [q, k, positions, periods], { dims, base, scale: 1 });
    } else {
      const scale = scaling.type === "linear" ? 1 / scaling.factor : 1;
      g.replace(n.id, "fast_rope", [q, k, positions], { dims, base, scale });
    }
  }
}
