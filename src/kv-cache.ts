// The KV cache, one meaning everywhere (mlx-lm's): per layer, preallocated key and value buffers
// [B, kvHeads, maxLength, headDim]; attention hands each layer's new keys and values to
// updateAndFetch, which writes them at the offset and returns every key and value so far (exact
// length, so attention needs no mask at decode). The offset advances after each forward; left
// padding of a batch is a key mask. KVCache holds MLX buffers, HostKVCache the CPU reference's.
import type { DType, TensorData } from "./dtype.ts";
import type { AttentionCache } from "./graph/ops.ts";
import * as core from "./ops/core.ts";
import * as cpu from "./ops/cpu.ts";
import { CpuTensor } from "./ops/cpu.ts";
import * as fast from "./ops/fast.ts";
import { Tensor } from "./tensor.ts";

export interface CacheShape {
  layers: number;
  batch: number;
  /** Key/value heads per layer (the model's kvHeads). */
  heads: number;
  headDim: number;
  maxLength: number;
  dtype?: DType;
}

/** Offset, padding and bounds shared by both kinds of cache. */
abstract class CacheBase<T extends TensorData> implements AttentionCache<T> {
  readonly shape: Required<CacheShape>;
  /** Positions written (by earlier forwards). */
  offset = 0;
  /** Left padding per example (positions count from the first real token). */
  padding: number[];
  protected layers: [T, T][];

  constructor(shape: CacheShape, buffer: (dims: number[], dtype: DType) => T) {
    const { layers, batch, heads, headDim, maxLength, dtype = "float32" } = shape;
    for (const [key, value] of Object.entries({ layers, batch, heads, headDim, maxLength })) {
      if (!Number.isSafeInteger(value) || value <= 0) throw new Error(`KV cache: ${key} must be a positive integer, got ${value}`);
    }
    this.shape = { layers, batch, heads, headDim, maxLength, dtype };
    this.padding = new Array(batch).fill(0);
    const dims = [batch, heads, maxLength, headDim];
    this.layers = Array.from({ length: layers }, () => [buffer(dims, dtype), buffer(dims, dtype)]);
  }

  protected abstract write(buffer: T, update: T, at: number): T;
  protected abstract upTo(buffer: T, end: number): T;
  protected abstract free(buffer: T): void;

  /** The end position after writing `length` more, checked against the buffers. */
  protected endAfter(layer: number, length: number): number {
    if (!Number.isInteger(layer) || layer < 0 || layer >= this.layers.length) throw new Error(`KV cache: no layer ${layer} (cache has ${this.layers.length})`);
    const end = this.offset + length;
    if (end > this.shape.maxLength) throw new Error(`KV cache of length ${this.shape.maxLength} cannot hold ${end} positions`);
    return end;
  }

  updateAndFetch(layer: number, keys: T, values: T): [T, T] {
    const end = this.endAfter(layer, keys.shape[2]!);
    const pair = this.layers[layer]!;
    for (const [i, update] of [keys, values].entries()) {
      const old = pair[i]!;
      pair[i] = this.write(old, update, this.offset);
      this.free(old);
    }
    return [this.upTo(pair[0], end), this.upTo(pair[1], end)];
  }

  /** Called by forward after the graph ran over `length` new positions. */
  advance(length: number): void {
    this.offset += length;
  }

  /** Marks the first `padding[b]` positions of example b as padding (left-padded prompts). */
  setLeftPadding(padding: readonly number[]): void {
    const { batch, maxLength } = this.shape;
    if (padding.length !== batch) throw new Error(`KVCache.setLeftPadding: ${padding.length} entries for batch ${batch}`);
    for (const p of padding) if (!Number.isInteger(p) || p < 0 || p >= maxLength) throw new Error(`KVCache.setLeftPadding: padding ${p} out of range [0, ${maxLength})`);
    this.padding = [...padding];
  }

  /** The key mask [B, length] (1 = attend) for attention over `length` keys, or null when nothing is padded. */
  keyMaskHost(length: number): Int32Array | null {
    if (this.padding.every((p) => p === 0)) return null;
    const mask = new Int32Array(this.shape.batch * length).fill(1);
    for (const [b, p] of this.padding.entries()) mask.fill(0, b * length, b * length + Math.min(p, length));
    return mask;
  }

  dispose(): void {
    for (const [k, v] of this.layers) {
      this.free(k);
      this.free(v);
    }
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}

/** MLX buffers, made on the device. */
export class KVCache extends CacheBase<Tensor> {
  readonly backend = "mlx";

  constructor(shape: CacheShape) {
    super(shape, (dims, dtype) => core.zeros(dims, dtype));
  }

  protected write(buffer: Tensor, update: Tensor, at: number): Tensor {
    const [b, h, length, d] = update.shape as [number, number, number, number];
    return core.sliceUpdate(buffer, update, [0, 0, at, 0], [b, h, at + length, d]);
  }

  protected upTo(buffer: Tensor, end: number): Tensor {
    const { batch, heads, headDim } = this.shape;
    return core.slice(buffer, [0, 0, 0, 0], [batch, heads, end, headDim]);
  }

  protected free(buffer: Tensor): void {
    buffer.dispose();
  }

  /** Update and causal attention in one shim call (the native_attention op). */
  attend(layer: number, q: Tensor, keys: Tensor, values: Tensor, options: { scale: number; keyMask: Tensor | null }): Tensor {
    this.endAfter(layer, keys.shape[2]!);
    const pair = this.layers[layer]!;
    const result = fast.kvCacheAttention(q, keys, values, { keys: pair[0], values: pair[1] }, { offset: this.offset, scale: options.scale, keyMask: options.keyMask });
    pair[0].dispose();
    pair[1].dispose();
    this.layers[layer] = [result.keys, result.values];
    return result.output;
  }

  /** The key mask as an MLX tensor [B, length], or null. */
  keyMask(length: number): Tensor | null {
    const host = this.keyMaskHost(length);
    return host && Tensor.from(host, [this.shape.batch, length]);
  }

  /** The buffers, for one eval per step. */
  tensors(): Tensor[] {
    return this.layers.flat();
  }
}

/** Host buffers for the CPU reference backend. */
export class HostKVCache extends CacheBase<CpuTensor> {
  readonly backend = "cpu";

  constructor(shape: CacheShape) {
    super(shape, (dims) => new CpuTensor(new Float32Array(dims.reduce((a, b) => a * b, 1)), dims));
  }

  protected write(buffer: CpuTensor, update: CpuTensor, at: number): CpuTensor {
    return cpu.sliceUpdate(buffer, update, [0, 0, at, 0]);
  }

  protected upTo(buffer: CpuTensor, end: number): CpuTensor {
    const { batch, heads, headDim } = this.shape;
    return cpu.slice(buffer, [0, 0, 0, 0], [batch, heads, end, headDim]);
  }

  protected free(): void {}

  keyMask(length: number): CpuTensor | null {
    const host = this.keyMaskHost(length);
    return host && new CpuTensor(Float32Array.from(host), [this.shape.batch, length]);
  }

  tensors(): Tensor[] {
    return [];
  }
}
