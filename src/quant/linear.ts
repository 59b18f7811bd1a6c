// A linear layer by module path over a weight map: quantizedMatmul for packed layers, else matmul.
import { add, matmul, transpose } from "../ops/core.ts";
import { quantizedMatmul } from "../ops/quant.ts";
import type { Tensor } from "../tensor.ts";
import { type QuantConfig, quantizationFor } from "./config.ts";
import { packedTriple, type WeightMap } from "./weights.ts";

/** y = x W^T (+ b) for the layer at `module` ("model.layers.0.self_attn.q_proj"). */
export function linear(x: Tensor, weights: WeightMap, module: string, quantization: QuantConfig | null): Tensor {
  const bias = weights.get(`${module}.bias`);
  let y: Tensor;
  if (weights.has(`${module}.scales`)) {
    const p = quantizationFor(quantization, module);
    if (!p) throw new Error(`linear: '${module}' is packed but the quantization config leaves it dense`);
    y = quantizedMatmul(x, packedTriple(weights, module, p), { ...p, transpose: true });
  } else {
    const w = weights.get(`${module}.weight`);
    if (!w) throw new Error(`linear: no weight '${module}.weight'`);
    using wt = transpose(w);
    y = matmul(x, wt);
  }
  if (!bias) return y;
  using unbiased = y;
  return add(unbiased, bias);
}
