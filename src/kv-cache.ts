// The KV cache, one meaning everywhere (mlx-lm's): per layer, preallocated key and value buffers
// [B, kvHeads, maxLength, headDim]; attention hands each layer's new keys and values to
// updateAndFetch, which writes them at the offset and returns every key and value so far (exact
// length, so attention needs no mask at decode). The offset advances after each forward; left
// padding of a batch is a key mask. KVCache's MLX buffers live in the shim (so a recorded decode step
// can replay against them); HostKVCache holds the CPU reference's.
import type { Pointer } from "bun:ffi";
import { type DType, dtypeCode, type TensorData } from "./dtype.ts";
import type { AttentionCache } from "./graph/ops.ts";
import { check, native, pointerFromWord } from "./native/ffi.ts";
import { call, handleOf, optionalHandleOf } from "./ops/call.ts";
import * as cpu from "./ops/cpu.ts";
import { CpuTensor } from "./ops/cpu.ts";
import { Tensor } from "./tensor.ts";

export interface CacheShape {
  layers: number;
  batch: number;
  /** Key/value heads per layer (the model's kvHeads). */
  heads: number;
  headDim: number;
  maxLength: number;
  dtype?: DType;
  /** Rotating (mlx-lm's RotatingKVCache): once maxLength positions are written, each new position
   * (one at a time) overwrites the oldest slot after the first `keep`; attention then sees the first
   * `keep` positions and the latest maxLength - keep. Bounded memory for long generations, and a
   * sliding window (keep 0). */
  keep?: number | undefined;
  /** Quantized (mlx-lm's QuantizedKVCache, MLX only): keys and values stored at 4 or 8 bits in groups
   * of kvGroupSize (default 64) along head_dim, attended as stored. */
  kvBits?: number | undefined;
  kvGroupSize?: number | undefined;
}

/** Shape, offset and padding, shared by both kinds of cache. */
abstract class CacheBase<T extends TensorData> implements AttentionCache<T> {
  /** batch and maxLength change when a decode engine regroups the cache's rows (setBuffers). */
  shape: Required<Omit<CacheShape, "keep" | "kvBits" | "kvGroupSize">>;
  /** Set for a rotating cache (see CacheShape.keep). */
  readonly keep: number | undefined;
  /** Positions written (by earlier forwards). */
  offset = 0;
  /** Left padding per example (positions count from the first real token). */
  padding: number[];

  constructor(shape: CacheShape) {
    const { layers, batch, heads, headDim, maxLength, dtype = "float32" } = shape;
    for (const [key, value] of Object.entries({ layers, batch, heads, headDim, maxLength })) {
      if (!Number.isSafeInteger(value) || value <= 0)
        throw new Error(`KV cache: ${key} must be a positive integer, got ${value}`);
    }
    this.shape = { layers, batch, heads, headDim, maxLength, dtype };
    this.padding = new Array(batch).fill(0);
    const { keep } = shape;
    if (keep !== undefined && (!Number.isSafeInteger(keep) || keep < 0 || keep >= maxLength))
      throw new Error(`KV cache: keep must be an integer in [0, ${maxLength}), got ${keep}`);
    this.keep = keep;
  }

  abstract updateAndFetch(layer: number, keys: T, values: T): [T, T];
  /** Each layer's key and value buffers [B, H, maxLength, D], in that order (MLX: new tensors the
   * caller disposes; host: the buffers themselves). */
  abstract buffers(): T[];
  /** Replaces the buffers (as buffers() lists them, each [B, H, S, D] of one B and S) and sets the
   * offset and left padding: the cache then holds B rows of S positions. Not for rotating or
   * quantized caches. The caller reads nothing of the old buffers past the offset afterwards. */
  abstract setBuffers(buffers: readonly T[], offset: number, padding: readonly number[]): void;

  /** Checks setBuffers' arguments and takes the new batch, length, offset and padding. */
  protected replaced(shape: readonly number[], count: number, offset: number, padding: readonly number[]): void {
    const { layers, heads, headDim } = this.shape;
    if (this.keep !== undefined) throw new Error("KV cache: a rotating cache keeps its buffers");
    if (count !== 2 * layers) throw new Error(`KV cache: setBuffers takes ${2 * layers} buffers, got ${count}`);
    const [batch, h, maxLength, d] = shape as [number, number, number, number];
    if (shape.length !== 4 || h !== heads || d !== headDim)
      throw new Error(`KV cache: buffers must be [B, ${heads}, S, ${headDim}], got [${shape.join(", ")}]`);
    if (!Number.isInteger(offset) || offset < 0 || offset > maxLength)
      throw new Error(`KV cache: offset ${offset} out of range [0, ${maxLength}]`);
    this.shape = { ...this.shape, batch, maxLength };
    this.offset = offset;
    this.padding = [...padding];
    if (padding.length !== batch || padding.some((p) => !Number.isInteger(p) || p < 0 || p > offset))
      throw new Error(`KV cache: padding [${padding.join(", ")}] does not fit ${batch} rows at offset ${offset}`);
  }
  abstract dispose(): void;

  /** The end position after writing `length` more, checked against the buffers. */
  protected endAfter(layer: number, length: number): number {
    if (!Number.isInteger(layer) || layer < 0 || layer >= this.shape.layers)
      throw new Error(`KV cache: no layer ${layer} (cache has ${this.shape.layers})`);
    const end = this.offset + length;
    if (end <= this.shape.maxLength) return end;
    if (this.keep === undefined)
      throw new Error(`KV cache of length ${this.shape.maxLength} cannot hold ${end} positions`);
    if (length !== 1)
      throw new Error(
        `a rotating KV cache of ${this.shape.maxLength} positions at offset ${this.offset} takes one position at a time once full, got ${length}`,
      );
    return end;
  }

  /** Called by forward after the graph ran over `length` new positions. */
  advance(length: number): void {
    this.endAfter(0, length);
    this.offset += length;
  }

  /** Moves the offset back to `offset` (<= the current one): later writes overwrite from there. */
  seek(offset: number): void {
    if (!Number.isInteger(offset) || offset < 0 || offset > this.offset)
      throw new Error(`KV cache seek: offset ${offset} out of range [0, ${this.offset}]`);
    if (this.keep !== undefined && this.offset > this.shape.maxLength && offset < this.offset)
      throw new Error("KV cache seek: a rotating cache that has rotated cannot go back");
    this.offset = offset;
  }

  /** Marks the first `padding[b]` positions of example b as padding (left-padded prompts). */
  setLeftPadding(padding: readonly number[]): void {
    const { batch, maxLength } = this.shape;
    if (padding.length !== batch)
      throw new Error(`KVCache.setLeftPadding: ${padding.length} entries for batch ${batch}`);
    for (const p of padding)
      if (!Number.isInteger(p) || p < 0 || p >= maxLength)
        throw new Error(`KVCache.setLeftPadding: padding ${p} out of range [0, ${maxLength})`);
    if (this.keep !== undefined && padding.some((p) => p > 0))
      throw new Error("KVCache.setLeftPadding: a rotating cache takes no padding");
    this.padding = [...padding];
  }

  /** The key mask [B, length] (1 = attend) for attention over `length` keys, or null when nothing is padded. */
  keyMaskHost(length: number): Int32Array | null {
    if (this.padding.every((p) => p === 0)) return null;
    const mask = new Int32Array(this.shape.batch * length).fill(1);
    for (const [b, p] of this.padding.entries()) mask.fill(0, b * length, b * length + Math.min(p, length));
    return mask;
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}

/** MLX buffers, held by the shim (mlx_kv_cache): recorded decode steps replay against it. */
export class KVCache extends CacheBase<Tensor> {
  readonly backend = "mlx";
  /** Whether keys and values are stored quantized (CacheShape.kvBits). */
  readonly quantized: boolean;
  #handle: Pointer | null;

  constructor(shape: CacheShape) {
    super(shape);
    const { layers, batch, heads, maxLength, headDim, dtype } = this.shape;
    const out = new BigUint64Array(1);
    check(native().mlx_kv_cache_new(out, layers, batch, heads, maxLength, headDim, dtypeCode(dtype)), "KVCache");
    this.#handle = pointerFromWord(out[0]!);
    if (this.keep !== undefined) check(native().mlx_kv_cache_rotate(this.#handle, this.keep), "KVCache: rotate");
    if (shape.kvBits !== undefined) {
      const { kvBits, kvGroupSize = 64 } = shape;
      if (kvBits !== 4 && kvBits !== 8) throw new Error(`KV cache: kvBits must be 4 or 8, got ${kvBits}`);
      if (!Number.isSafeInteger(kvGroupSize) || kvGroupSize <= 0 || headDim % kvGroupSize !== 0)
        throw new Error(`KV cache: kvGroupSize must divide head_dim ${headDim}, got ${kvGroupSize}`);
      check(native().mlx_kv_cache_quantize(this.#handle, kvBits, kvGroupSize), "KVCache: quantize");
    }
    this.quantized = shape.kvBits !== undefined;
  }

  /** The shim's cache; throws after dispose. */
  get handle(): Pointer {
    if (this.#handle === null) throw new Error("KVCache used after dispose()");
    return this.#handle;
  }

  updateAndFetch(layer: number, keys: Tensor, values: Tensor): [Tensor, Tensor] {
    this.endAfter(layer, keys.shape[2]!);
    const out = new BigUint64Array(2);
    const status = native().mlx_kv_cache_update_fetch(
      out.subarray(0, 1),
      out.subarray(1, 2),
      this.handle,
      layer,
      handleOf(keys, "updateAndFetch", "keys"),
      handleOf(values, "updateAndFetch", "values"),
    );
    check(status, "KVCache.updateAndFetch");
    return [new Tensor(pointerFromWord(out[0]!)), new Tensor(pointerFromWord(out[1]!))];
  }

  /** Update and causal attention in one shim call (the native_attention op). */
  attend(
    layer: number,
    q: Tensor,
    keys: Tensor,
    values: Tensor,
    options: { scale: number; keyMask: Tensor | null },
  ): Tensor {
    this.endAfter(layer, keys.shape[2]!);
    const [hq, hk, hv] = [
      handleOf(q, "attend", "q"),
      handleOf(keys, "attend", "keys"),
      handleOf(values, "attend", "values"),
    ];
    const mask = optionalHandleOf(options.keyMask, "attend", "keyMask");
    return call("KVCache.attend", (lib, out) =>
      lib.mlx_kv_cache_attention(out, this.handle, layer, hq, hk, hv, options.scale, mask),
    );
  }

  override advance(length: number): void {
    super.advance(length);
    check(native().mlx_kv_cache_advance(this.handle, length), "KVCache.advance");
  }

  override seek(offset: number): void {
    super.seek(offset);
    check(native().mlx_kv_cache_seek(this.handle, offset), "KVCache.seek");
  }

  /** The key mask as an MLX tensor [B, length], or null. */
  keyMask(length: number): Tensor | null {
    const host = this.keyMaskHost(length);
    return host && Tensor.from(host, [this.shape.batch, length]);
  }

  buffers(): Tensor[] {
    return this.tensors();
  }

  setBuffers(buffers: readonly Tensor[], offset: number, padding: readonly number[]): void {
    if (this.quantized) throw new Error("KV cache: a quantized cache keeps its buffers");
    const first = buffers[0];
    if (!first) throw new Error("KV cache: setBuffers needs the buffers");
    for (const b of buffers)
      if (b.shape.join() !== first.shape.join()) throw new Error("KV cache: setBuffers' buffers must share one shape");
    this.replaced(first.shape, buffers.length, offset, padding);
    const keys = BigUint64Array.from(
      buffers.filter((_, i) => i % 2 === 0),
      (t) => BigInt(handleOf(t, "setBuffers", "keys")),
    );
    const values = BigUint64Array.from(
      buffers.filter((_, i) => i % 2 === 1),
      (t) => BigInt(handleOf(t, "setBuffers", "values")),
    );
    check(native().mlx_kv_cache_set(this.handle, keys, values, keys.length, offset), "KVCache.setBuffers");
  }

  /** Each layer's key and value buffers (new tensors the caller disposes). */
  tensors(): Tensor[] {
    const all: Tensor[] = [];
    for (let l = 0; l < this.shape.layers; l++) {
      const out = new BigUint64Array(2);
      check(native().mlx_kv_cache_layer(out.subarray(0, 1), out.subarray(1, 2), this.handle, l), "KVCache.tensors");
      all.push(new Tensor(pointerFromWord(out[0]!)), new Tensor(pointerFromWord(out[1]!)));
    }
    return all;
  }

  dispose(): void {
    if (this.#handle === null) return;
    native().mlx_kv_cache_free(this.#handle);
    this.#handle = null;
  }
}

/** Host buffers for the CPU reference backend. */
export class HostKVCache extends CacheBase<CpuTensor> {
  readonly backend = "cpu";
  #layers: [CpuTensor, CpuTensor][];

  constructor(shape: CacheShape) {
    super(shape);
    if (shape.kvBits !== undefined) throw new Error("KV cache: a quantized KV cache needs the MLX backend");
    const { layers, batch, heads, maxLength, headDim } = this.shape;
    const dims = [batch, heads, maxLength, headDim];
    const buffer = () => new CpuTensor(new Float32Array(batch * heads * maxLength * headDim), dims);
    this.#layers = Array.from({ length: layers }, () => [buffer(), buffer()]);
  }

  updateAndFetch(layer: number, keys: CpuTensor, values: CpuTensor): [CpuTensor, CpuTensor] {
    const end = this.endAfter(layer, keys.shape[2]!);
    const pair = this.#layers[layer]!;
    const { batch, heads, headDim, maxLength } = this.shape;
    // A full rotating cache: the position's slot, and every slot is returned (as the shim's).
    const full = end > maxLength;
    const slot = full ? this.keep! + ((this.offset - maxLength) % (maxLength - this.keep!)) : this.offset;
    pair[0] = cpu.sliceUpdate(pair[0], keys, [0, 0, slot, 0]);
    pair[1] = cpu.sliceUpdate(pair[1], values, [0, 0, slot, 0]);
    const upto = full ? maxLength : end;
    return [
      cpu.slice(pair[0], [0, 0, 0, 0], [batch, heads, upto, headDim]),
      cpu.slice(pair[1], [0, 0, 0, 0], [batch, heads, upto, headDim]),
    ];
  }

  keyMask(length: number): CpuTensor | null {
    const host = this.keyMaskHost(length);
    return host && new CpuTensor(Float32Array.from(host), [this.shape.batch, length]);
  }

  tensors(): Tensor[] {
    return [];
  }

  buffers(): CpuTensor[] {
    return this.#layers.flat();
  }

  setBuffers(buffers: readonly CpuTensor[], offset: number, padding: readonly number[]): void {
    const first = buffers[0];
    if (!first) throw new Error("KV cache: setBuffers needs the buffers");
    for (const b of buffers)
      if (b.shape.join() !== first.shape.join()) throw new Error("KV cache: setBuffers' buffers must share one shape");
    this.replaced(first.shape, buffers.length, offset, padding);
    this.#layers = Array.from({ length: this.shape.layers }, (_, l) => [buffers[2 * l]!, buffers[2 * l + 1]!]);
  }

  dispose(): void {}
}
