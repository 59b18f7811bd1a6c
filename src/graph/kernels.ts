// What each graph op computes, in plain (decomposed) form over the MLX ops. Layer nodes
// (rms_norm, apply_rotary_embedding, attention_weights, ...) are written out of plain ops here so
// that the rewriter's fused replacements can be proven equal to them.
import * as core from "../ops/core.ts";
import * as fast from "../ops/fast.ts";
import { dequantize } from "../ops/quant.ts";
import { quantizationFor } from "../quant/config.ts";
import { linear } from "../quant/linear.ts";
import { packedTriple } from "../quant/weights.ts";
import { Tensor } from "../tensor.ts";
import type { Node } from "./graph.ts";
import type { RunContext, Value } from "./run.ts";

export type Kernel = (inputs: Value[], node: Node, context: RunContext) => Value;

function tensor(v: Value, what: string): Tensor {
  if (!(v instanceof Tensor)) throw new Error(`${what} is not a tensor`);
  return v;
}

export function num(v: Value, what: string): number {
  if (typeof v !== "number") throw new Error(`${what} is not a number`);
  return v;
}

export function list(v: Value, what: string): Value[] {
  if (!Array.isArray(v)) throw new Error(`${what} is not a container`);
  return v;
}

/** [start, stop] of each of `parts` equal slices of `shape` along `axis` (split). */
export function splitBounds(shape: readonly number[], parts: number, axis: number): [number[], number[]][] {
  const a = (axis + shape.length) % shape.length;
  const size = shape[a]! / parts;
  return Array.from({ length: parts }, (_, i) => [
    shape.map((_, d) => (d === a ? i * size : 0)),
    shape.map((n, d) => (d === a ? (i + 1) * size : n)),
  ]);
}

/** [start, stop] of the last position of [B, T, D]. */
export function lastPositionBounds(shape: readonly number[]): [number[], number[]] {
  const [b, length, d] = shape as [number, number, number];
  return [[0, length - 1, 0], [b, length, d]];
}

/** Reshape target where 0 copies the input's dimension at that axis (as ONNX's Reshape). */
export function reshapeTarget(input: readonly number[], shape: number[]): number[] {
  return shape.map((d, i) => (d === 0 ? input[i]! : d));
}

function rotateHalf(x: Tensor): Tensor {
  const half = x.shape[x.ndim - 1]! / 2;
  const start = x.shape.map(() => 0);
  const stop = [...x.shape];
  using x1 = core.slice(x, start, [...stop.slice(0, -1), half]);
  using x2 = core.slice(x, [...start.slice(0, -1), half], stop);
  using negated = core.negative(x2);
  return core.concatenate([negated, x1], -1);
}

/** cos and sin of positions x inverse frequencies, duplicated to `dims` (rotate-half layout), [B, 1, T, dims]. */
function rotaryTables(positions: Tensor, inverseFrequencies: Tensor): [Tensor, Tensor] {
  using p = core.astype(positions, "float32");
  const [batch, length] = p.shape as [number, number];
  using p3 = core.reshape(p, [batch, length, 1]);
  using angles = core.multiply(p3, inverseFrequencies);
  using both = core.concatenate([angles, angles], -1);
  using table = core.reshape(both, [batch, 1, length, both.shape[2]!]);
  return [core.cos(table), core.sin(table)];
}

function applyRotary(x: Tensor, cos: Tensor, sin: Tensor, dims: number): Tensor {
  const width = x.shape[x.ndim - 1]!;
  const start = x.shape.map(() => 0);
  using rotated = dims === width ? null : core.slice(x, start, [...x.shape.slice(0, -1), dims]);
  const part = rotated ?? x;
  using a = core.multiply(part, cos);
  using half = rotateHalf(part);
  using b = core.multiply(half, sin);
  const out = core.add(a, b);
  if (dims === width) return out;
  using kept = out;
  using pass = core.slice(x, [...start.slice(0, -1), dims], [...x.shape]);
  return core.concatenate([kept, pass], -1);
}

/** Additive mask [B or 1, 1, T, S] (exported for the fused attention kernel): key j is visible to query i (absolute offset + i) when
 * j <= offset + i (if causal) and keyMask[b, j] is set. */
export function attentionMask(batch: number, queries: number, keys: number, offset: number, causal: boolean, keyMask: Tensor | null): Tensor | null {
  let mask: Tensor | null = null;
  if (causal) {
    const host = new Float32Array(queries * keys);
    for (let i = 0; i < queries; i++) for (let j = offset + i + 1; j < keys; j++) host[i * keys + j] = Number.NEGATIVE_INFINITY;
    mask = Tensor.from(host, [1, 1, queries, keys]);
  }
  if (keyMask) {
    using visible = core.astype(keyMask, "float32");
    using flat = core.reshape(visible, [batch, 1, 1, keys]);
    using gap = core.subtract(flat, 1); // 0 where visible, -1 where masked
    const padding = core.multiply(gap, 1e30);
    if (!mask) return padding;
    using causalPart = mask;
    using paddingPart = padding;
    mask = core.add(causalPart, paddingPart);
  }
  return mask;
}

/** Kernels that only move values around: the same on every backend. */
export const structuralKernels: Record<string, Kernel> = {
  input: (_, node, { feeds }) => {
    const value = feeds[node.name!];
    if (value === undefined) throw new Error(`no feed named '${node.name}'`);
    return value;
  },
  container: (inputs) => inputs,
  /** Element `index` of a container; null passes through (no cache). */
  get: (inputs, node) => (inputs[0] === null ? null : (list(inputs[0]!, "get input")[node.attrs.index as number] ?? null)),
  /** Inference: identity. */
  dropout: ([x]) => x!,
  /** The whole cache with layer `index` replaced (null stays null: no cache). */
  put_block_cache: ([cache, layerCache], node) => {
    if (cache === null) return null;
    const next = [...list(cache!, "cache")];
    next[node.attrs.index as number] = layerCache!;
    return next;
  },
};

export const kernels: Record<string, Kernel> = {
  ...structuralKernels,
  param: (_, node, { weights }) => {
    const w = weights.get(node.name!);
    if (!w) throw new Error(`missing weight '${node.name}'`);
    return w;
  },
  constant: (_, node) => (node.attrs.value as Value) ?? null,

  add: ([a, b]) => core.add(tensor(a!, "a"), tensor(b!, "b")),
  subtract: ([a, b]) => core.subtract(tensor(a!, "a"), tensor(b!, "b")),
  /** Two inputs, or one container of two (Axon's multiply layer). */
  multiply: (inputs) => {
    const [a, b] = inputs.length === 1 ? list(inputs[0]!, "multiply input") : inputs;
    return core.multiply(tensor(a!, "a"), tensor(b!, "b"));
  },
  /** Equal parts along an axis (GPT-2's fused q/k/v): a container. */
  split: ([x], node) => {
    const t = tensor(x!, "x");
    return splitBounds(t.shape, node.attrs.parts as number, node.attrs.axis as number).map(([start, stop]) => core.slice(t, start, stop));
  },
  scale: ([x], node) => core.multiply(tensor(x!, "x"), node.attrs.factor as number),
  matmul: ([a, b]) => core.matmul(tensor(a!, "a"), tensor(b!, "b")),
  reshape: ([x], node) => {
    const t = tensor(x!, "x");
    const target = node.attrs.shape as number[];
    // A 0 keeps the input's dimension: only then is the input's shape needed.
    return core.reshape(t, target.includes(0) ? reshapeTarget(t.shape, target) : target);
  },
  transpose: ([x], node) => core.transpose(tensor(x!, "x"), node.attrs.axes as number[]),
  softmax: ([x], node) => core.softmax(tensor(x!, "x"), (node.attrs.axis as number) ?? -1, true),
  silu: ([x]) => core.silu(tensor(x!, "x")),
  gelu: ([x], node) => core.gelu(tensor(x!, "x"), Boolean(node.attrs.approximate)),
  /** Last position only: [B, T, D] -> [B, 1, D]. */
  last_position: ([x]) => {
    const t = tensor(x!, "x");
    return core.slice(t, ...lastPositionBounds(t.shape));
  },

  /** x W^T + b, packed layers through quantizedMatmul. */
  dense: ([x], node, { weights, quantization }) => linear(tensor(x!, "x"), weights, node.name!, quantization),
  /** Rows of the embedding table (packed tables: gather, then dequantize the rows). */
  embedding: ([ids], node, { weights, quantization }) => {
    const module = node.name!;
    const indices = tensor(ids!, "ids");
    if (!weights.has(`${module}.scales`)) return core.take(weights.get(`${module}.weight`)!, indices, 0);
    const p = quantizationFor(quantization, module);
    if (!p) throw new Error(`'${module}' is packed but the quantization config leaves it dense`);
    const triple = packedTriple(weights, module, p);
    using w = core.take(triple.weight, indices, 0);
    using s = core.take(triple.scales, indices, 0);
    using b = triple.biases ? core.take(triple.biases, indices, 0) : null;
    return dequantize({ weight: w, scales: s, biases: b }, p);
  },

  rms_norm: ([x, weight], node) => {
    const t = tensor(x!, "x");
    const eps = node.attrs.eps as number;
    const shift = (node.attrs.shift as number) ?? 0;
    using squared = core.square(t);
    using meanSquare = core.mean(squared, -1, true);
    using shifted = core.add(meanSquare, eps);
    using inverse = core.rsqrt(shifted);
    using normed = core.multiply(t, inverse);
    if (shift === 0) return core.multiply(normed, tensor(weight!, "weight"));
    using w = core.add(tensor(weight!, "weight"), shift);
    return core.multiply(normed, w);
  },
  layer_norm: ([x, weight, bias], node) => {
    const t = tensor(x!, "x");
    const eps = node.attrs.eps as number;
    using mu = core.mean(t, -1, true);
    using centered = core.subtract(t, mu);
    using squared = core.square(centered);
    using variance = core.mean(squared, -1, true);
    using shifted = core.add(variance, eps);
    using inverse = core.rsqrt(shifted);
    const normed = core.multiply(centered, inverse);
    if (!weight && !bias) return normed;
    using n = normed;
    if (!bias) return core.multiply(n, tensor(weight!, "weight"));
    using scaled = weight ? core.multiply(n, tensor(weight, "weight")) : null;
    return core.add(scaled ?? n, tensor(bias, "bias"));
  },

  /** Rotate-half RoPE on q and k: inputs q [B,H,T,D], k, positions [B,T], inverse frequencies. */
  apply_rotary_embedding: ([q, k, positions, frequencies], node) => {
    const dims = node.attrs.dims as number;
    const [cos, sin] = rotaryTables(tensor(positions!, "positions"), tensor(frequencies!, "frequencies"));
    using c = cos;
    using s = sin;
    return [applyRotary(tensor(q!, "q"), c, s, dims), applyRotary(tensor(k!, "k"), c, s, dims)];
  },

  /** softmax(q k^T * scale + mask) in float32; inputs q, k, keyMask | null, offset. */
  attention_weights: ([q, k, keyMask, offset], node) => {
    const query = tensor(q!, "q");
    const key = tensor(k!, "k");
    const [batch, , queries] = query.shape as [number, number, number, number];
    const keys = key.shape[2]!;
    using kt = core.transpose(key, [0, 1, 3, 2]);
    using raw = core.matmul(query, kt);
    using scores = core.multiply(raw, node.attrs.scale as number);
    using mask = attentionMask(batch, queries, keys, num(offset!, "offset"), Boolean(node.attrs.causal), keyMask === null ? null : tensor(keyMask!, "keyMask"));
    using masked = mask ? core.add(scores, mask) : null;
    return core.softmax(masked ?? scores, -1, true);
  },
  attention_output: ([weights, v]) => core.matmul(tensor(weights!, "weights"), tensor(v!, "v")),
  repeat_interleave: ([x], node) => {
    const repeats = node.attrs.repeats as number;
    return repeats === 1 ? x! : core.repeat(tensor(x!, "x"), repeats, node.attrs.axis as number);
  },

  // ---- fused replacements made by the rewriter (src/rewrite/) ----
  fast_rms_norm: ([x, weight], node) => fast.rmsNorm(tensor(x!, "x"), tensor(weight!, "weight"), node.attrs.eps as number),
  fast_layer_norm: ([x, weight, bias], node) =>
    fast.layerNorm(tensor(x!, "x"), weight ? tensor(weight, "weight") : null, bias ? tensor(bias, "bias") : null, node.attrs.eps as number),
  /** MLX rope on q and k; each example's offset is taken from its last position, which is real even
   * in a left-padded prompt (padding slots carry clamped positions), so positions are assumed
   * sequential over the real tokens. */
  fast_rope: ([q, k, positions, periods], node) => {
    const p = tensor(positions!, "positions");
    const [batch, length] = p.shape as [number, number];
    using last = core.slice(p, [0, length - 1], [batch, length]);
    using flat = core.reshape(last, [batch]);
    using offset = core.subtract(flat, length - 1);
    const options = {
      dims: node.attrs.dims as number,
      base: node.attrs.base as number,
      scale: node.attrs.scale as number,
      offset,
      freqs: periods ? tensor(periods, "periods") : null,
    };
    return [fast.rope(tensor(q!, "q"), options), fast.rope(tensor(k!, "k"), options)];
  },
  /** MLX sdpa; inputs q, k, v, keyMask | null, offset. Pure "causal" when the keys are exactly the
   * positions written so far and nothing is padded; otherwise the combined additive mask. */
  fast_sdpa: ([q, k, v, keyMask, offset], node) => {
    const query = tensor(q!, "q");
    const key = tensor(k!, "k");
    const [batch, , queries] = query.shape as [number, number, number, number];
    const keys = key.shape[2]!;
    const at = num(offset!, "offset");
    const causal = Boolean(node.attrs.causal);
    const scale = node.attrs.scale as number;
    if (keyMask === null && (!causal || keys === at + queries)) {
      return fast.scaledDotProductAttention(query, key, tensor(v!, "v"), { scale, mask: causal && queries > 1 ? "causal" : null });
    }
    using mask = attentionMask(batch, queries, keys, at, causal, keyMask === null ? null : tensor(keyMask!, "keyMask"));
    return fast.scaledDotProductAttention(query, key, tensor(v!, "v"), { scale, mask });
  },
  fast_swiglu: ([gate, up]) => fast.swiglu(tensor(gate!, "gate"), tensor(up!, "up")),
  /** Cache update + causal attention in one shim call: [output, layer cache]. The KV cache owns its
   * buffers, so the layer's container is updated in place and the buffers it held are freed here;
   * put_block_cache then has nothing left to do (nullify_block_cache). */
  native_attention: ([q, k, v, layerCache, keyMask, offset], node) => {
    const pair = list(layerCache!, "layer cache");
    const [keys, values] = [tensor(pair[0]!, "key cache"), tensor(pair[1]!, "value cache")];
    const result = fast.kvCacheAttention(tensor(q!, "q"), tensor(k!, "k"), tensor(v!, "v"), { keys, values }, {
      offset: num(offset!, "offset"),
      scale: node.attrs.scale as number,
      keyMask: keyMask === null ? null : tensor(keyMask!, "keyMask"),
    });
    keys.dispose();
    values.dispose();
    pair[0] = result.keys;
    pair[1] = result.values;
    return [result.output, pair];
  },

  /** Writes k, v [B,H,T,D] at `offset` into the layer's preallocated buffers: [keys, values]. */
  update_attention_cache: ([k, v, layerCache, offset]) => {
    const [keyBuffer, valueBuffer] = list(layerCache!, "layer cache");
    const at = num(offset!, "offset");
    const write = (buffer: Tensor, update: Tensor) => {
      const [b, h, length, d] = update.shape as [number, number, number, number];
      if (at + length > buffer.shape[2]!) throw new Error(`cache of length ${buffer.shape[2]} cannot hold ${at + length} positions`);
      return core.sliceUpdate(buffer, update, [0, 0, at, 0], [b, h, at + length, d]);
    };
    return [write(tensor(keyBuffer!, "key cache"), tensor(k!, "k")), write(tensor(valueBuffer!, "value cache"), tensor(v!, "v"))];
  },
};
