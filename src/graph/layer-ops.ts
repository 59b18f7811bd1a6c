// The op table's layer ops: normalization, rotary embedding and attention written out of plain ops,
// and the fused replacements the rewriter (src/rewrite/) proves equal to them (fast_*,
// native_attention). Part of OPS (ops.ts).
import * as core from "../ops/core.ts";
import * as cpu from "../ops/cpu.ts";
import { CpuTensor } from "../ops/cpu.ts";
import * as fast from "../ops/fast.ts";
import { Tensor } from "../tensor.ts";
import { host, hostInts, mlx, num, op, type OpDefinition, optional, type Value } from "./op-kit.ts";
import { applyRotary, attentionMask, rotaryTables } from "./plain.ts";
import type { RopeScaling } from "./rotary.ts";

/** Inverse frequencies of a fast_rope node: from its periods, else base and scale. */
function ropeFrequencies(attrs: FastRopeAttrs): Float32Array {
  if (attrs.periods) return attrs.periods.map((p) => 1 / p);
  return Float32Array.from({ length: attrs.dims / 2 }, (_, i) => attrs.scale / attrs.base ** ((2 * i) / attrs.dims));
}

const mlxPeriods = new WeakMap<Float32Array, Tensor>();

/** llama3 rope periods as an MLX array, made once per attribute value (lives as long as the graph). */
function periodsTensor(periods: Float32Array): Tensor {
  let t = mlxPeriods.get(periods);
  if (!t) mlxPeriods.set(periods, (t = Tensor.from(periods, [periods.length])));
  return t;
}

/** The key mask as the CPU attention reads it: [B, S] ints, 0 hides a key. */
function hostKeyMask(v: Value<CpuTensor> | undefined): Int32Array | null {
  const mask = optional(v, host, "keyMask");
  return mask ? Int32Array.from(mask.data) : null;
}

export interface FastRopeAttrs {
  dims: number;
  base: number;
  scale: number;
  /** llama3-scaled periods (1 / inverse frequency), else null: base and scale. */
  periods: Float32Array | null;
}

/** MLX rope's options for a fast_rope node: its attributes and each example's offset. */
export function ropeOptions(offset: Tensor, attrs: FastRopeAttrs) {
  return {
    dims: attrs.dims,
    base: attrs.base,
    scale: attrs.scale,
    offset,
    freqs: attrs.periods ? periodsTensor(attrs.periods) : null,
  };
}

/** fast_rope on the CPU: q and k [B, H, T, D] rotated from each example's offset [B]. */
export function cpuRope(
  query: CpuTensor,
  key: CpuTensor,
  offsets: CpuTensor,
  attrs: FastRopeAttrs,
): [CpuTensor, CpuTensor] {
  const [batch, , length] = query.shape as [number, number, number];
  const first = offsets.data;
  const p = Int32Array.from({ length: batch * length }, (_, i) => first[Math.floor(i / length)]! + (i % length));
  const inverse = ropeFrequencies(attrs);
  return [cpu.rope(query, attrs.dims, p, inverse), cpu.rope(key, attrs.dims, p, inverse)];
}

interface AttentionAttrs {
  scale: number;
  causal: boolean;
  /** Sliding window (not applied by any kernel: rewriters leave such attention alone). */
  window?: number;
}

function cpuAttentionOptions(
  keyMask: Value<CpuTensor> | undefined,
  offset: Value<CpuTensor> | undefined,
  attrs: { scale: number; causal: boolean },
): cpu.AttentionOptions {
  return { scale: attrs.scale, causal: attrs.causal, offset: num(offset, "offset"), keyMask: hostKeyMask(keyMask) };
}

function rmsNormPlain(x: Tensor, weight: Tensor, eps: number, shift: number): Tensor {
  using squared = core.square(x);
  using meanSquare = core.mean(squared, -1, true);
  using shifted = core.add(meanSquare, eps);
  using inverse = core.rsqrt(shifted);
  using normed = core.multiply(x, inverse);
  if (shift === 0) return core.multiply(normed, weight);
  using w = core.add(weight, shift);
  return core.multiply(normed, w);
}

function layerNormPlain(x: Tensor, weight: Tensor | null, bias: Tensor | null, eps: number): Tensor {
  using mu = core.mean(x, -1, true);
  using centered = core.subtract(x, mu);
  using squared = core.square(centered);
  using variance = core.mean(squared, -1, true);
  using shifted = core.add(variance, eps);
  using inverse = core.rsqrt(shifted);
  const normed = core.multiply(centered, inverse);
  if (!weight && !bias) return normed;
  using n = normed;
  if (!bias) return core.multiply(n, weight!);
  using scaled = weight ? core.multiply(n, weight) : null;
  return core.add(scaled ?? n, bias);
}

export const LAYER_OPS = {
  // ---- layers, in plain form ----
  /** x * rsqrt(mean(x^2) + eps) * (weight + shift) over the last axis (Gemma: shift 1). */
  rms_norm: op<{ eps: number; shift: number }>()({
    inputs: ["x", "weight"],
    mlx: ([x, weight], { eps, shift }) => rmsNormPlain(mlx(x, "x"), mlx(weight, "weight"), eps, shift),
    cpu: ([x, weight], { eps, shift }) => {
      const w = host(weight, "weight");
      return cpu.rmsNorm(host(x, "x"), shift === 0 ? w : cpu.add(w, shift), eps);
    },
  }),
  layer_norm: op<{ eps: number; axis: number }>()({
    inputs: ["x", "weight?", "bias?"],
    mlx: ([x, weight, bias], { eps }) =>
      layerNormPlain(mlx(x, "x"), optional(weight, mlx, "weight"), optional(bias, mlx, "bias"), eps),
    cpu: ([x, weight, bias], { eps }) =>
      cpu.layerNorm(host(x, "x"), optional(weight, host, "weight"), optional(bias, host, "bias"), eps),
  }),
  /** Rotate-half RoPE on q and k [B, H, T, D] at positions [B, T]: a container [q, k]. */
  apply_rotary_embedding: op<{ dims: number; base: number; scaling: RopeScaling }>()({
    inputs: ["q", "k", "positions", "frequencies"],
    mlx: ([q, k, positions, frequencies], { dims }) => {
      const query = mlx(q, "q");
      const [cos, sin] = rotaryTables(mlx(positions, "positions"), mlx(frequencies, "frequencies"), query.dtype);
      using c = cos;
      using s = sin;
      return [applyRotary(query, c, s, dims), applyRotary(mlx(k, "k"), c, s, dims)];
    },
    cpu: ([q, k, positions, frequencies], { dims }) => {
      const p = hostInts(positions, "positions");
      const inverse = host(frequencies, "frequencies").data;
      return [cpu.rope(host(q, "q"), dims, p, inverse), cpu.rope(host(k, "k"), dims, p, inverse)];
    },
  }),
  /** The layer's keys and values so far: [keys, values]. Writes k, v [B, kvHeads, T, D] into the
   * KV cache at its offset when there is one; without a cache, k and v themselves. */
  /** The sum of x over the model's process group: after a projection whose input features are split
   * across the ranks (tensor parallelism, mlx-lm's sharded-to-all). */
  all_sum: op()({
    inputs: ["x"],
    mlx: ([x], _, { group }) => {
      if (!group) throw new Error("all_sum: this graph is tensor-parallel; run it with its model's process group");
      return group.allSum(mlx(x, "x"));
    },
    cpu: () => {
      throw new Error("all_sum: tensor-parallel models run on the MLX backend");
    },
  }),
  cache_update: op<{ layer: number }>()({
    inputs: ["k", "v"],
    mlx: ([k, v], { layer }, { cache }) => {
      const [key, value] = [mlx(k, "k"), mlx(v, "v")];
      return cache ? cache.updateAndFetch(layer, key, value) : [key, value];
    },
    cpu: ([k, v], { layer }, { cache }) => {
      const [key, value] = [host(k, "k"), host(v, "v")];
      return cache ? cache.updateAndFetch(layer, key, value) : [key, value];
    },
  }),
  /** softmax(q k^T * scale + mask), q [B, H, T, D], k [B, H, S, D]; the mask hides keys after each
   * query's position (causal, queries start at `offset`) and keys the key mask [B, S] zeroes. */
  attention_weights: op<AttentionAttrs>()({
    inputs: ["q", "k", "keyMask", "offset"],
    mlx: ([q, k, keyMask, offset], { scale, causal }) => {
      const query = mlx(q, "q");
      const key = mlx(k, "k");
      const [batch, , queries] = query.shape as [number, number, number, number];
      using kt = core.transpose(key, [0, 1, 3, 2]);
      using raw = core.matmul(query, kt);
      using scores = core.multiply(raw, scale);
      const mask = attentionMask(
        batch,
        queries,
        key.shape[2]!,
        num(offset, "offset"),
        causal,
        optional(keyMask, mlx, "keyMask"),
        query.dtype,
      );
      using masked = mask ? core.add(scores, mask) : null;
      mask?.dispose();
      return core.softmax(masked ?? scores, -1, true);
    },
    cpu: ([q, k, keyMask, offset], attrs) =>
      cpu.attentionWeights(host(q, "q"), host(k, "k"), cpuAttentionOptions(keyMask, offset, attrs)),
  }),
  attention_output: op()({
    inputs: ["weights", "v"],
    mlx: ([weights, v]) => core.matmul(mlx(weights, "weights"), mlx(v, "v")),
    cpu: ([weights, v]) => cpu.matmul(host(weights, "weights"), host(v, "v")),
  }),

  // ---- fused replacements made by the rewriter (src/rewrite/) ----
  fast_rms_norm: op<{ eps: number }>()({
    inputs: ["x", "weight"],
    mlx: ([x, weight], { eps }) => fast.rmsNorm(mlx(x, "x"), mlx(weight, "weight"), eps),
    cpu: ([x, weight], { eps }) => cpu.rmsNorm(host(x, "x"), host(weight, "weight"), eps),
  }),
  fast_layer_norm: op<{ eps: number }>()({
    inputs: ["x", "weight?", "bias?"],
    mlx: ([x, weight, bias], { eps }) =>
      fast.layerNorm(mlx(x, "x"), optional(weight, mlx, "weight"), optional(bias, mlx, "bias"), eps),
    cpu: ([x, weight, bias], { eps }) =>
      cpu.layerNorm(host(x, "x"), optional(weight, host, "weight"), optional(bias, host, "bias"), eps),
  }),
  /** Each example's first position [B] from positions [B, T]: its last position - (T - 1). The last
   * position is real even in a left-padded prompt (padding slots carry clamped positions), so
   * positions are assumed sequential over the real tokens. One per graph, shared by every fast_rope. */
  rope_offset: op()({
    inputs: ["positions"],
    mlx: ([positions]) => {
      const p = mlx(positions, "positions");
      const [batch, length] = p.shape as [number, number];
      using last = core.slice(p, [0, length - 1], [batch, length]);
      using flat = core.reshape(last, [batch]);
      return core.subtract(flat, length - 1);
    },
    cpu: ([positions]) => {
      const p = host(positions, "positions");
      const [batch, length] = p.shape as [number, number];
      return new CpuTensor(
        Float32Array.from({ length: batch }, (_, b) => p.data[b * length + length - 1]! - (length - 1)),
        [batch],
      );
    },
  }),
  /** MLX rope on q and k [B, H, T, D] from each example's offset [B] (rope_offset): a container [q, k]. */
  fast_rope: op<FastRopeAttrs>()({
    inputs: ["q", "k", "offsets"],
    mlx: ([q, k, offsets], attrs) => {
      const options = ropeOptions(mlx(offsets, "offsets"), attrs);
      return [fast.rope(mlx(q, "q"), options), fast.rope(mlx(k, "k"), options)];
    },
    cpu: ([q, k, offsets], attrs) => cpuRope(host(q, "q"), host(k, "k"), host(offsets, "offsets"), attrs),
  }),
  /** fast_rms_norm of q and of k (each with its weight), then fast_rope of both (Qwen3's q/k norms):
   * one kernel on a CUDA GPU, MLX's four ops elsewhere. A container [q, k]. */
  fast_qk_norm_rope: op<FastRopeAttrs & { eps: number }>()({
    inputs: ["q", "k", "q_weight", "k_weight", "offsets"],
    mlx: ([q, k, qWeight, kWeight, offsets], attrs) =>
      fast.qkNormRope(
        mlx(q, "q"),
        mlx(k, "k"),
        mlx(qWeight, "q_weight"),
        mlx(kWeight, "k_weight"),
        attrs.eps,
        ropeOptions(mlx(offsets, "offsets"), attrs),
      ),
    cpu: ([q, k, qWeight, kWeight, offsets], attrs) => {
      const normed = (x: CpuTensor, weight: CpuTensor) => cpu.rmsNorm(x, weight, attrs.eps);
      return cpuRope(
        normed(host(q, "q"), host(qWeight, "q_weight")),
        normed(host(k, "k"), host(kWeight, "k_weight")),
        host(offsets, "offsets"),
        attrs,
      );
    },
  }),
  /** MLX sdpa over q [B, H, T, D] and k, v [B, Hkv, S, D] (GQA native). Pure "causal" (or no mask
   * for one query) when the keys end at the last query's position and nothing is padded: the fast
   * path; otherwise the combined additive mask. */
  fast_sdpa: op<{ scale: number; causal: boolean }>()({
    inputs: ["q", "k", "v", "keyMask", "offset"],
    mlx: ([q, k, v, keyMask, offset], { scale, causal }) => {
      const query = mlx(q, "q");
      const key = mlx(k, "k");
      const [batch, , queries] = query.shape as [number, number, number, number];
      const keys = key.shape[2]!;
      const at = num(offset, "offset");
      const padding = optional(keyMask, mlx, "keyMask");
      // Keys end at the query's position (a single query sees every key the cache returns, a
      // rotating cache's slots included): no mask needed, MLX's fast path.
      if (padding === null && (!causal || keys === at + queries || queries === 1)) {
        return fast.scaledDotProductAttention(query, key, mlx(v, "v"), {
          scale,
          mask: causal && queries > 1 ? "causal" : null,
        });
      }
      using mask = attentionMask(batch, queries, keys, at, causal, padding, query.dtype);
      return fast.scaledDotProductAttention(query, key, mlx(v, "v"), { scale, mask });
    },
    cpu: ([q, k, v, keyMask, offset], attrs) =>
      cpu.attention(host(q, "q"), host(k, "k"), host(v, "v"), cpuAttentionOptions(keyMask, offset, attrs)),
  }),
  fast_swiglu: op()({
    inputs: ["gate", "up"],
    mlx: ([gate, up]) => fast.swiglu(mlx(gate, "gate"), mlx(up, "up")),
    cpu: ([gate, up]) => cpu.swiglu(host(gate, "gate"), host(up, "up")),
  }),
  /** cache_update + causal attention of q over the result: one shim call where the cache offers it
   * (MLX), else the same two steps. Without a cache: causal attention over k, v from position 0. */
  native_attention: op<{ layer: number; scale: number }>()({
    inputs: ["q", "k", "v", "keyMask", "offset"],
    mlx: ([q, k, v, keyMask, offset], { layer, scale }, { cache }) => {
      const [query, key, value] = [mlx(q, "q"), mlx(k, "k"), mlx(v, "v")];
      const padding = optional(keyMask, mlx, "keyMask");
      if (cache?.attend) return cache.attend(layer, query, key, value, { scale, keyMask: padding });
      const [keys, values] = cache ? cache.updateAndFetch(layer, key, value) : [key, value];
      const at = num(offset, "offset");
      const queries = query.shape[2]!;
      if (padding === null)
        return fast.scaledDotProductAttention(query, keys, values, { scale, mask: queries > 1 ? "causal" : null });
      using mask = attentionMask(query.shape[0]!, queries, keys.shape[2]!, at, true, padding, query.dtype);
      return fast.scaledDotProductAttention(query, keys, values, { scale, mask });
    },
    cpu: ([q, k, v, keyMask, offset], { layer, scale }, { cache }) => {
      const [key, value] = [host(k, "k"), host(v, "v")];
      const [keys, values] = cache ? cache.updateAndFetch(layer, key, value) : [key, value];
      return cpu.attention(host(q, "q"), keys, values, cpuAttentionOptions(keyMask, offset, { scale, causal: true }));
    },
  }),
} satisfies Record<string, OpDefinition<never>>;
