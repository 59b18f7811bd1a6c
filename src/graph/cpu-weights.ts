// Weights as the CPU reference kernels read them: float32 host copies made once per tensor (packed
// affine layers dequantized once), whatever kind of tensor the model's map holds.
import type { TensorData } from "../dtype.ts";
import * as cpu from "../ops/cpu.ts";
import { CpuTensor } from "../ops/cpu.ts";
import { type QuantConfig, quantizationFor } from "../quant/config.ts";
import { packedTriple } from "../quant/weights.ts";

const hostCopies = new WeakMap<TensorData, CpuTensor>();

/** A weight as float32 on the host, read once per tensor. */
export function toCpu(t: TensorData): CpuTensor {
  if (t instanceof CpuTensor) return t;
  let copy = hostCopies.get(t);
  if (!copy) {
    copy = new CpuTensor(t.toFloat32Array(), [...t.shape]);
    hostCopies.set(t, copy);
  }
  return copy;
}

/** The dense weight of `module` on the host (dequantized once when packed). */
export function denseWeight(
  weights: ReadonlyMap<string, TensorData>,
  module: string,
  quantization: QuantConfig | null,
): CpuTensor {
  if (!weights.has(`${module}.scales`)) {
    const w = weights.get(`${module}.weight`);
    if (!w) throw new Error(`missing weight '${module}.weight'`);
    return toCpu(w);
  }
  const p = quantizationFor(quantization, module);
  if (p?.mode !== "affine") throw new Error(`'${module}': the CPU backend dequantizes affine weights only`);
  const triple = packedTriple(weights, module, p);
  let dense = hostCopies.get(triple.weight);
  if (!dense) {
    const rows = triple.weight.shape[0]!;
    const packed = new Uint32Array(triple.weight.toBytes().slice().buffer); // own, aligned copy
    dense = cpu.dequantizeAffine(packed, toCpu(triple.scales), toCpu(triple.biases!), rows, p.groupSize, p.bits);
    hostCopies.set(triple.weight, dense);
  }
  return dense;
}

/** y = x W^T (+ b) for the layer at `module`. */
export function cpuLinear(
  x: CpuTensor,
  weights: ReadonlyMap<string, TensorData>,
  module: string,
  quantization: QuantConfig | null,
): CpuTensor {
  const y = cpu.matmul(x, cpu.transpose(denseWeight(weights, module, quantization)));
  const bias = weights.get(`${module}.bias`);
  return bias ? cpu.add(y, toCpu(bias)) : y;
}
