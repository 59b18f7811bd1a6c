// A linear layer by module path over a weight map: quantizedMatmul for packed layers, else matmul.
import { onGpu } from "../native/device.ts";
import { add, matmul, transpose } from "../ops/core.ts";
import { dequantize, quantizedMatmul } from "../ops/quant.ts";
import type { Tensor } from "../tensor.ts";
import { type QuantConfig, quantizationFor } from "./config.ts";
import { packedTriple, type WeightMap } from "./weights.ts";

/** MLX's CPU quantized matmul is a plain loop: at 512 rows x 4096 x 4096 it takes 8.4 s where
 * dequantizing and a BLAS matmul take ~0.1 s (bench/quant.ts). So on the CPU, inputs of at least
 * this many rows (prefill) dequantize the weight for the call; decode keeps quantizedMatmul. */
export const CPU_DEQUANTIZE_ROWS = 4;

/** y = x W^T (+ b) for the layer at `module` ("model.layers.0.self_attn.q_proj"). */
export function linear(x: Tensor, weights: WeightMap, module: string, quantization: QuantConfig | null): Tensor {
  const bias = weights.get(`${module}.bias`);
  let y: Tensor;
  if (weights.has(`${module}.scales`)) {
    const p = quantizationFor(quantization, module);
    if (!p) throw new Error(`linear: '${module}' is packed but the quantization config leaves it dense`);
    const triple = packedTriple(weights, module, p);
    const rows = x.size / x.shape[x.ndim - 1]!;
    if (rows >= CPU_DEQUANTIZE_ROWS && !onGpu()) {
      using dense = dequantize(triple, p);
      using denseT = transpose(dense);
      y = matmul(x, denseT);
    } else {
      y = quantizedMatmul(x, triple, { ...p, transpose: true });
    }
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
