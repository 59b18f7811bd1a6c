// Preallocated per-layer K/V buffers [B, heads, maxLength, headDim], the number of positions
// written (offset), and an optional key mask [B, maxLength] for padded batches.
import { CpuTensor } from "./backend/cpu.ts";
import type { Value } from "./graph/run.ts";
import { zeros } from "./ops/core.ts";
import { type DType, Tensor } from "./tensor.ts";

export interface CacheShape {
  layers: number;
  batch: number;
  heads: number;
  headDim: number;
  maxLength: number;
  dtype?: DType;
  /** Buffers on the host (CPU reference backend) instead of MLX. */
  host?: boolean;
}

type Buffer = Tensor | CpuTensor;
const free = (t: Buffer) => (t instanceof Tensor ? t.dispose() : undefined);

export class KVCache {
  readonly shape: CacheShape;
  #layers: [Buffer, Buffer][];
  offset = 0;
  /** 1 where a key may be attended, 0 for padding; null when every position is real. */
  keyMask: Tensor | null = null;
  /** Left padding per example (positions count from the first real token). */
  padding: number[];

  constructor(shape: CacheShape) {
    this.shape = shape;
    this.padding = new Array(shape.batch).fill(0);
    const { layers, batch, heads, maxLength, headDim, dtype = "float32" } = shape;
    const dims = [batch, heads, maxLength, headDim];
    const count = batch * heads * maxLength * headDim;
    const buffer = (): Buffer => (shape.host ? new CpuTensor(new Float32Array(count), dims) : zeros(dims, dtype));
    this.#layers = Array.from({ length: layers }, () => [buffer(), buffer()]);
  }

  /** The graph's `cache` feed. */
  feed(): Value {
    return this.#layers;
  }

  /** Takes the graph's updated cache after `length` new positions were written. */
  advance(updated: Value, length: number): void {
    if (!Array.isArray(updated) || updated.length !== this.#layers.length) throw new Error("KVCache.advance: updated cache has the wrong layout");
    const next = updated as [Buffer, Buffer][];
    for (const [i, [k, v]] of this.#layers.entries()) {
      if (next[i]![0] !== k) free(k);
      if (next[i]![1] !== v) free(v);
    }
    this.#layers = next;
    this.offset += length;
  }

  /** Marks the first `padding[b]` positions of example b as padding (left-padded prompts). */
  setLeftPadding(padding: readonly number[]): void {
    const { batch, maxLength } = this.shape;
    if (padding.length !== batch) throw new Error(`KVCache.setLeftPadding: ${padding.length} entries for batch ${batch}`);
    const host = new Int32Array(batch * maxLength).fill(1);
    for (let b = 0; b < batch; b++) host.fill(0, b * maxLength, b * maxLength + padding[b]!);
    this.keyMask?.dispose();
    this.keyMask = Tensor.from(host, [batch, maxLength]);
    this.padding = [...padding];
  }

  /** The MLX tensors, for one eval per step (none on the host backend). */
  tensors(): Tensor[] {
    return this.#layers.flat().filter((t): t is Tensor => t instanceof Tensor);
  }

  dispose(): void {
    for (const [k, v] of this.#layers) {
      free(k);
      free(v);
    }
    this.keyMask?.dispose();
  }
}
