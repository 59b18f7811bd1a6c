// A linear layer by module path over a weight map: quantizedMatmul for packed layers, else matmul.
import { onGpu } from "../native/device.ts";
import { add, matmul, transpose } from "../ops/core.ts";
import { dequantize, type QuantParams, quantizedMatmul } from "../ops/quant.ts";
import type { Tensor } from "../tensor.ts";
import { type QuantConfig, quantizationFor } from "./config.ts";
import { packedTriple } from "./weights.ts";

/** MLX's CPU quantized matmul is a plain loop: at 512 rows x 4096 x 4096 it takes 8.4 s where
 * dequantizing and a BLAS matmul take ~0.1 s (bench/quant.ts). So on the CPU, inputs of at least
 * this many rows (prefill) dequantize the weight for the call; decode keeps quantizedMatmul. */
export const CPU_DEQUANTIZE_ROWS = 4;

/** A layer's tensors and quantization, resolved and checked once per weight map. */
interface Layer {
  weight: Tensor;
  scales: Tensor | undefined;
  bias: Tensor | undefined;
  quantization: QuantConfig | null;
  packed: { triple: { weight: Tensor; scales: Tensor; biases: Tensor | null }; params: QuantParams & { transpose: true } } | null;
}

const layers = new WeakMap<ReadonlyMap<string, Tensor>, Map<string, Layer>>();

/** The layer at `module`, from the cache while the map still holds the same tensors. */
function layerOf(weights: ReadonlyMap<string, Tensor>, module: string, quantization: QuantConfig | null): Layer {
  let known = layers.get(weights);
  if (!known) layers.set(weights, (known = new Map()));
  const weight = weights.get(`${module}.weight`);
  const scales = weights.get(`${module}.scales`);
  const bias = weights.get(`${module}.bias`);
  const hit = known.get(module);
  if (hit && hit.weight === weight && hit.scales === scales && hit.bias === bias && hit.quantization === quantization) return hit;
  if (!weight) throw new Error(`linear: no weight '${module}.weight'`);
  let packed: Layer["packed"] = null;
  if (scales) {
    const params = quantizationFor(quantization, module);
    if (!params) throw new Error(`linear: '${module}' is packed but the quantization config leaves it dense`);
    packed = { triple: packedTriple(weights, module, params), params: { ...params, transpose: true } };
  }
  const layer = { weight, scales, bias, quantization, packed };
  known.set(module, layer);
  return layer;
}

/** y = x W^T (+ b) for the layer at `module` ("model.layers.0.self_attn.q_proj"). */
export function linear(x: Tensor, weights: ReadonlyMap<string, Tensor>, module: string, quantization: QuantConfig | null): Tensor {
  const { weight, bias, packed } = layerOf(weights, module, quantization);
  let y: Tensor;
  if (packed) {
    if (!onGpu() && x.size / x.shape[x.ndim - 1]! >= CPU_DEQUANTIZE_ROWS) {
      using dense = dequantize(packed.triple, packed.params);
      using denseT = transpose(dense);
      y = matmul(x, denseT);
    } else {
      y = quantizedMatmul(x, packed.triple, packed.params);
    }
  } else {
    using wt = transpose(weight);
    y = matmul(x, wt);
  }
  if (!bias) return y;
  using unbiased = y;
  return add(unbiased, bias);
}
