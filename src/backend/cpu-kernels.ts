// The graph kernels on the CPU reference backend: the same ops as graph/kernels.ts over CpuTensor.
// Weights stay MLX tensors in the model's map; each is read to the host (dequantized when packed) once
// and cached by identity. Token ids and positions arrive as MLX int32 tensors or CpuTensors.
import type { Node } from "../graph/graph.ts";
import type { HostTensor } from "../io/host.ts";
import { type Kernel, lastPositionBounds, list, num, reshapeTarget, splitBounds, structuralKernels } from "../graph/kernels.ts";
import type { RunContext, Value } from "../graph/run.ts";
import { quantizationFor } from "../quant/config.ts";
import { packedTriple } from "../quant/weights.ts";
import { Tensor } from "../tensor.ts";
import * as cpu from "./cpu.ts";
import { CpuTensor } from "./cpu.ts";

const hostWeights = new WeakMap<Tensor | HostTensor, CpuTensor>();

/** A weight (an MLX tensor, or a HostTensor loaded without the shim) as float32 on the host, once per tensor. */
export function toCpu(t: Tensor | HostTensor): CpuTensor {
  let host = hostWeights.get(t);
  if (!host) {
    host = new CpuTensor(t.toFloat32Array(), [...t.shape]);
    hostWeights.set(t, host);
  }
  return host;
}

/** The dense weight of `module` on the host (dequantized once when packed). */
function denseWeight(context: RunContext, module: string): CpuTensor {
  const { weights, quantization } = context;
  if (!weights.has(`${module}.scales`)) {
    const w = weights.get(`${module}.weight`);
    if (!w) throw new Error(`missing weight '${module}.weight'`);
    return toCpu(w);
  }
  const p = quantizationFor(quantization, module);
  if (!p || p.mode !== "affine") throw new Error(`'${module}': the CPU backend dequantizes affine weights only`);
  const triple = packedTriple(weights, module, p);
  let host = hostWeights.get(triple.weight);
  if (!host) {
    const rows = triple.weight.shape[0]!;
    const packed = new Uint32Array(triple.weight.toBytes().slice().buffer); // own, aligned copy
    host = cpu.dequantizeAffine(packed, toCpu(triple.scales), toCpu(triple.biases!), rows, p.groupSize, p.bits);
    hostWeights.set(triple.weight, host);
  }
  return host;
}

function t(v: Value, what: string): CpuTensor {
  if (v instanceof CpuTensor) return v;
  if (v instanceof Tensor) return new CpuTensor(v.toFloat32Array(), [...v.shape]);
  throw new Error(`${what} is not a tensor`);
}

function ints(v: Value, what: string): { data: Int32Array; shape: number[] } {
  if (v instanceof Tensor) return { data: v.toInt32Array(), shape: [...v.shape] };
  const c = t(v, what);
  return { data: Int32Array.from(c.data), shape: [...c.shape] };
}


function linear(x: CpuTensor, context: RunContext, module: string): CpuTensor {
  const w = denseWeight(context, module);
  const y = cpu.matmul(x, cpu.transpose(w));
  const bias = context.weights.get(`${module}.bias`);
  return bias ? cpu.add(y, toCpu(bias)) : y;
}

const attentionOptions = (keyMask: Value, offset: Value, node: Node): cpu.AttentionOptions => ({
  scale: node.attrs.scale as number,
  causal: Boolean(node.attrs.causal),
  offset: num(offset, "offset"),
  keyMask: keyMask === null ? null : ints(keyMask, "keyMask").data,
});

const norm = ([x, weight]: Value[], node: Node) => {
  const w = t(weight!, "weight");
  const shift = (node.attrs.shift as number) ?? 0;
  return cpu.rmsNorm(t(x!, "x"), shift === 0 ? w : cpu.add(w, shift), node.attrs.eps as number);
};

function rotary(q: Value, k: Value, positions: Value, dims: number, inverse: Float32Array): Value {
  const p = ints(positions, "positions").data;
  return [cpu.rope(t(q, "q"), dims, p, inverse), cpu.rope(t(k, "k"), dims, p, inverse)];
}

/** Inverse frequencies of a fast_rope node: from its periods input, else base and scale. */
function fastRopeFrequencies(node: Node, periods: Value | undefined): Float32Array {
  if (periods) return t(periods, "periods").data.map((p) => 1 / p);
  const dims = node.attrs.dims as number;
  const scale = node.attrs.scale as number;
  return Float32Array.from({ length: dims / 2 }, (_, i) => scale / (node.attrs.base as number) ** ((2 * i) / dims));
}

export const cpuKernels: Record<string, Kernel> = {
  ...structuralKernels,
  param: (_, node, { weights }) => {
    const w = weights.get(node.name!);
    if (!w) throw new Error(`missing weight '${node.name}'`);
    return toCpu(w);
  },
  constant: (_, node) => {
    const v = (node.attrs.value as Value) ?? null;
    return v instanceof Tensor ? toCpu(v) : v;
  },
  add: ([a, b]) => cpu.add(t(a!, "a"), t(b!, "b")),
  subtract: ([a, b]) => cpu.subtract(t(a!, "a"), t(b!, "b")),
  multiply: (inputs) => {
    const [a, b] = inputs.length === 1 ? list(inputs[0]!, "multiply input") : inputs;
    return cpu.multiply(t(a!, "a"), t(b!, "b"));
  },
  scale: ([x], node) => cpu.multiply(t(x!, "x"), node.attrs.factor as number),
  matmul: ([a, b]) => cpu.matmul(t(a!, "a"), t(b!, "b")),
  reshape: ([x], node) => {
    const c = t(x!, "x");
    return cpu.reshape(c, reshapeTarget(c.shape, node.attrs.shape as number[]));
  },
  transpose: ([x], node) => cpu.transpose(t(x!, "x"), node.attrs.axes as number[]),
  softmax: ([x]) => cpu.softmax(t(x!, "x")),
  silu: ([x]) => cpu.silu(t(x!, "x")),
  gelu: ([x], node) => cpu.gelu(t(x!, "x"), Boolean(node.attrs.approximate)),
  last_position: ([x]) => {
    const c = t(x!, "x");
    return cpu.slice(c, ...lastPositionBounds(c.shape));
  },
  split: ([x], node) => {
    const c = t(x!, "x");
    return splitBounds(c.shape, node.attrs.parts as number, node.attrs.axis as number).map(([start, stop]) => cpu.slice(c, start, stop));
  },
  dense: ([x], node, context) => linear(t(x!, "x"), context, node.name!),
  embedding: ([ids], node, context) => {
    const { data, shape } = ints(ids!, "ids");
    return cpu.take(denseWeight(context, node.name!), data, shape);
  },
  rms_norm: norm,
  fast_rms_norm: norm,
  layer_norm: ([x, weight, bias], node) =>
    cpu.layerNorm(t(x!, "x"), weight ? t(weight, "weight") : null, bias ? t(bias, "bias") : null, node.attrs.eps as number),
  fast_layer_norm: ([x, weight, bias], node) =>
    cpu.layerNorm(t(x!, "x"), weight ? t(weight, "weight") : null, bias ? t(bias, "bias") : null, node.attrs.eps as number),
  apply_rotary_embedding: ([q, k, positions, frequencies], node) => rotary(q!, k!, positions!, node.attrs.dims as number, t(frequencies!, "frequencies").data),
  fast_rope: ([q, k, positions, periods], node) => rotary(q!, k!, positions!, node.attrs.dims as number, fastRopeFrequencies(node, periods)),
  attention_weights: ([q, k, keyMask, offset], node) => cpu.attentionWeights(t(q!, "q"), t(k!, "k"), attentionOptions(keyMask!, offset!, node)),
  attention_output: ([weights, v]) => cpu.matmul(t(weights!, "weights"), t(v!, "v")),
  fast_sdpa: ([q, k, v, keyMask, offset], node) => cpu.attention(t(q!, "q"), t(k!, "k"), t(v!, "v"), attentionOptions(keyMask!, offset!, node)),
  fast_swiglu: ([gate, up]) => cpu.swiglu(t(gate!, "gate"), t(up!, "up")),
  native_attention: ([q, k, v, layerCache, keyMask, offset], node) => {
    const pair = list(layerCache!, "layer cache");
    const at = num(offset!, "offset");
    const key = t(k!, "k");
    const end = at + key.shape[2]!;
    pair[0] = cpu.sliceUpdate(t(pair[0]!, "key cache"), key, [0, 0, at, 0]);
    pair[1] = cpu.sliceUpdate(t(pair[1]!, "value cache"), t(v!, "v"), [0, 0, at, 0]);
    const upto = (c: CpuTensor) => cpu.slice(c, [0, 0, 0, 0], [c.shape[0]!, c.shape[1]!, end, c.shape[3]!]);
    const mask = keyMask === null ? null : ints(keyMask, "keyMask");
    const visible = mask && Int32Array.from({ length: mask.shape[0]! * end }, (_, i) => mask.data[Math.floor(i / end) * mask.shape[1]! + (i % end)]!);
    const options = { scale: node.attrs.scale as number, causal: true, offset: at, keyMask: visible };
    return [cpu.attention(t(q!, "q"), upto(pair[0] as CpuTensor), upto(pair[1] as CpuTensor), options), pair];
  },
  repeat_interleave: ([x], node) => cpu.repeatHeads(t(x!, "x"), node.attrs.repeats as number),
  update_attention_cache: ([k, v, layerCache, offset]) => {
    const [keyBuffer, valueBuffer] = list(layerCache!, "layer cache");
    const at = num(offset!, "offset");
    return [cpu.sliceUpdate(t(keyBuffer!, "key cache"), t(k!, "k"), [0, 0, at, 0]), cpu.sliceUpdate(t(valueBuffer!, "value cache"), t(v!, "v"), [0, 0, at, 0])];
  },
};
