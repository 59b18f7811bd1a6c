// MLX fast ops (mlx::core::fast) and the fused SwiGLU.
import { check, native, pointerFromWord } from "../native/ffi.ts";
import { Tensor } from "../tensor.ts";
import { checkOptionNames } from "../options.ts";
import { call, finite, handleOf, int32, optionalHandleOf } from "./call.ts";

/** x * rsqrt(mean(x^2, -1) + eps) * weight, over the last axis. */
export function rmsNorm(x: Tensor, weight: Tensor | null, eps: number): Tensor {
  const hx = handleOf(x, "rmsNorm", "x");
  const hw = optionalHandleOf(weight, "rmsNorm", "weight");
  const e = finite(eps, "rmsNorm", "eps", { min: 0 });
  return call("rmsNorm", (lib, out) => lib.mlx_fast_rms_norm(out, hx, hw, e));
}

/** Layer norm over the last axis, with optional weight and bias. */
export function layerNorm(x: Tensor, weight: Tensor | null, bias: Tensor | null, eps: number): Tensor {
  const hx = handleOf(x, "layerNorm", "x");
  const hw = optionalHandleOf(weight, "layerNorm", "weight");
  const hb = optionalHandleOf(bias, "layerNorm", "bias");
  const e = finite(eps, "layerNorm", "eps", { min: 0 });
  return call("layerNorm", (lib, out) => lib.mlx_fast_layer_norm(out, hx, hw, hb, e));
}

export interface RopeOptions {
  /** Feature dimensions rotated (the first `dims` of the last axis). */
  dims: number;
  /** false: rotate-half layout (HF weights); true: interleaved pairs. */
  traditional?: boolean;
  /** Base frequency; ignored when `freqs` is given. */
  base?: number;
  scale?: number;
  /** Position of the first token: a number, or an int32 tensor (scalar or one per batch element). */
  offset?: number | Tensor;
  /** Precomputed inverse frequencies (dims / 2 values), e.g. llama3 scaling. */
  freqs?: Tensor | null;
}

/** Rotary position embedding over x of shape [..., seq, headDim]. */
export function rope(x: Tensor, options: RopeOptions): Tensor {
  const hx = handleOf(x, "rope", "x");
  const { dims, traditional, base, scale, hf } = ropeArguments("rope", options);
  const { offset = 0 } = options;
  if (typeof offset === "number") {
    const at = int32(offset, "rope", "offset");
    if (at < 0) throw new Error(`rope: offset must be >= 0, got ${offset}`);
    return call("rope", (lib, out) => lib.mlx_fast_rope(out, hx, dims, traditional, base, scale, at, hf));
  }
  const ho = handleOf(offset, "rope", "offset");
  return call("rope", (lib, out) => lib.mlx_fast_rope_dynamic(out, hx, dims, traditional, base, scale, ho, hf));
}

/** The shim's rope arguments from the options (`op` names the caller in errors): base NaN when
 * freqs are given. */
export function ropeArguments(op: string, options: RopeOptions) {
  checkOptionNames(op, options, ["dims", "traditional", "base", "scale", "offset", "freqs"]);
  const { traditional = false } = options;
  const dims = int32(options.dims, op, "dims");
  if (dims <= 0 || dims % 2 !== 0) throw new Error(`${op}: dims must be a positive even number, got ${dims}`);
  const scale = finite(options.scale ?? 1, op, "scale");
  const hf = optionalHandleOf(options.freqs, op, "freqs");
  const base = hf ? Number.NaN : finite(options.base ?? 10000, op, "base", { above: 0 });
  return { dims, traditional: traditional ? 1 : 0, base, scale, hf };
}

/** rmsNorm(q, qWeight, eps) and rmsNorm(k, kWeight, eps), each then rotated by `rope` with the same
 * options (Qwen3's per-head norms of q and k before RoPE), in one shim call: one kernel of the shim's
 * on a CUDA GPU (float32, bfloat16 or float16, q and k [B, H, T, D]), else MLX's four ops. */
export function qkNormRope(
  q: Tensor,
  k: Tensor,
  qWeight: Tensor,
  kWeight: Tensor,
  eps: number,
  options: RopeOptions & { offset: Tensor },
): [Tensor, Tensor] {
  const op = "qkNormRope";
  const handles = [
    handleOf(q, op, "q"),
    handleOf(k, op, "k"),
    handleOf(qWeight, op, "qWeight"),
    handleOf(kWeight, op, "kWeight"),
  ] as const;
  const { dims, traditional, base, scale, hf } = ropeArguments(op, options);
  const ho = handleOf(options.offset, op, "offset");
  const e = finite(eps, op, "eps", { min: 0 });
  const out = new BigUint64Array(2);
  check(
    native().mlx_fast_qk_norm_rope(
      out.subarray(0, 1),
      out.subarray(1, 2),
      ...handles,
      e,
      dims,
      traditional,
      base,
      scale,
      ho,
      hf,
    ),
    op,
  );
  return [new Tensor(pointerFromWord(out[0]!)), new Tensor(pointerFromWord(out[1]!))];
}

export interface AttentionOptions {
  /** Usually 1 / sqrt(headDim). */
  scale: number;
  /** "causal", or an additive (float) / boolean (true = attend) mask broadcastable to the scores. */
  mask?: "causal" | Tensor | null;
}

/** softmax(q k^T * scale + mask) v, q: [B, Hq, Tq, D], k/v: [B, Hkv, Tk, D]; Hq a multiple of Hkv (GQA). */
export function scaledDotProductAttention(q: Tensor, k: Tensor, v: Tensor, options: AttentionOptions): Tensor {
  const hq = handleOf(q, "scaledDotProductAttention", "q");
  const hk = handleOf(k, "scaledDotProductAttention", "k");
  const hv = handleOf(v, "scaledDotProductAttention", "v");
  checkOptionNames("scaledDotProductAttention", options, ["scale", "mask"]);
  const { mask } = options;
  const mode = mask === "causal" ? "causal" : "";
  const hm = mask && mask !== "causal" ? handleOf(mask, "scaledDotProductAttention", "mask") : null;
  const scale = finite(options.scale, "scaledDotProductAttention", "scale", { above: 0 });
  return call("scaledDotProductAttention", (lib, out) =>
    lib.mlx_fast_scaled_dot_product_attention(out, hq, hk, hv, scale, Buffer.from(`${mode}\0`), hm),
  );
}

/** KV-cache attention in one shim call: writes k, v [B,Hkv,T,D] at `offset` into the caches, attends q
 * causally over [0, offset + T) with an optional key mask [B, S] (nonzero = attend). Returns the
 * output and the updated caches, all owned by the caller. */
export function kvCacheAttention(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  cache: { keys: Tensor; values: Tensor },
  options: { offset: number; scale: number; keyMask?: Tensor | null },
): { output: Tensor; keys: Tensor; values: Tensor } {
  const op = "kvCacheAttention";
  const args = [
    handleOf(q, op, "q"),
    handleOf(k, op, "k"),
    handleOf(v, op, "v"),
    handleOf(cache.keys, op, "cache.keys"),
    handleOf(cache.values, op, "cache.values"),
  ];
  const mask = optionalHandleOf(options.keyMask, op, "keyMask");
  const offset = int32(options.offset, op, "offset");
  const scale = finite(options.scale, op, "scale", { above: 0 });
  const out = new BigUint64Array(3);
  check(
    native().mlx_fast_kv_cache_attention(
      out.subarray(0, 1),
      out.subarray(1, 2),
      out.subarray(2, 3),
      ...args,
      offset,
      scale,
      mask,
    ),
    op,
  );
  const [output, keys, values] = Array.from(out, (h) => new Tensor(pointerFromWord(h)));
  return { output: output!, keys: keys!, values: values! };
}

/** silu(gate) * up in one call. */
export function swiglu(gate: Tensor, up: Tensor): Tensor {
  const hg = handleOf(gate, "swiglu", "gate");
  const hu = handleOf(up, "swiglu", "up");
  return call("swiglu", (lib, out) => lib.mlx_fast_swiglu(out, hg, hu));
}

/** The sampler's penalties as one primitive of the shim's (shim/ext/sample.cpp; a CUDA kernel on a
 * GPU): logits [B, V] (any float dtype), ids [B, W] int32 (each row's recent tokens, oldest first; -1:
 * an empty slot), params [B, 6] float32 (repetition penalty, its context, presence penalty, its
 * context, frequency penalty, its context; a context counts the last slots, 0: off) -> float32
 * logits with each distinct id of the repetition context divided by the penalty (multiplied when
 * negative), of the presence context lowered by its penalty, and lowered by the frequency penalty
 * once per slot of its context holding it. The rule of src/engine/sampling.ts's processLogits. */
export function penalize(logits: Tensor, ids: Tensor, params: Tensor): Tensor {
  const op = "penalize";
  const handles = [handleOf(logits, op, "logits"), handleOf(ids, op, "ids"), handleOf(params, op, "params")] as const;
  return call(op, (lib, out) => lib.mlx_penalize(out, ...handles));
}

/** The greedy pick of logits [B, V]: [each row's first argmax [B, 1] uint32, its max [B] (the logits'
 * dtype)], as argmax(logits, -1, true) and max(logits, -1) give them; one primitive of the shim's on a
 * CUDA GPU (shim/ext/sample.cpp, sample_cuda.cpp), those two ops elsewhere. */
export function greedyPick(logits: Tensor): [Tensor, Tensor] {
  const op = "greedyPick";
  const handle = handleOf(logits, op, "logits");
  const out = new BigUint64Array(2);
  check(native().mlx_greedy_pick(out.subarray(0, 1), out.subarray(1, 2), handle), op);
  return [new Tensor(pointerFromWord(out[0]!)), new Tensor(pointerFromWord(out[1]!))];
}

/** The sampler's pick as one primitive of the shim's (shim/ext/sample.cpp; a CUDA kernel on a GPU):
 * per row of logits [B, V] with params [B, 5] float32 (1/temperature or 0 for greedy, 1 - topP or -1,
 * log(minP) or -infinity, minTokensToKeep, topK or 0), seeds [B, 2] uint32 (low and high 32 bits)
 * and draws [B] uint32 (each row's draw index; its uniform is host-sampler.ts's): [tokens [B, 1]
 * uint32, each row's max [B] (NaN if the row holds one), the filters' threshold [B] (the kept tokens
 * are logits >= threshold)]. The rule is src/engine/host-sampler.ts's. */
export function samplePick(logits: Tensor, params: Tensor, seeds: Tensor, draws: Tensor): [Tensor, Tensor, Tensor] {
  const op = "samplePick";
  const handles = [
    handleOf(logits, op, "logits"),
    handleOf(params, op, "params"),
    handleOf(seeds, op, "seeds"),
    handleOf(draws, op, "draws"),
  ] as const;
  const out = new BigUint64Array(3);
  check(native().mlx_sample_pick(out.subarray(0, 1), out.subarray(1, 2), out.subarray(2, 3), ...handles), op);
  return [
    new Tensor(pointerFromWord(out[0]!)),
    new Tensor(pointerFromWord(out[1]!)),
    new Tensor(pointerFromWord(out[2]!)),
  ];
}
