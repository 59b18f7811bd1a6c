// A running batch's KV cache gains and loses rows between decode steps (mlx-lm's BatchKVCache
// extend / filter): the rows kept from each source cache are right-aligned at one offset, each row's
// real positions ending there and the left padding growing where a row is shorter, and the padding
// every row shares is cut off. The target cache object stays the same (decode steps recorded against
// it stay valid); its buffers are rebuilt with `room` positions past the new offset.
import type { HostKVCache, KVCache } from "../kv-cache.ts";
import { concatenate, slice, take, zeros } from "../ops/core.ts";
import { CpuTensor } from "../ops/cpu.ts";
import { Tensor, tidy } from "../tensor.ts";

/** Rows of a source cache, in the order they take in the target. */
export interface CachePart<C> {
  cache: C;
  rows: readonly number[];
}

interface Layout {
  /** The target's offset, and per part where its kept positions start (trim) and land (at). */
  offset: number;
  parts: { trim: number; at: number; length: number }[];
  padding: number[];
}

function layout(parts: readonly CachePart<KVCache | HostKVCache>[]): Layout {
  const placed = parts.map(({ cache, rows }) => {
    const trim = Math.min(...rows.map((r) => cache.padding[r]!));
    return { trim, length: cache.offset - trim };
  });
  const offset = Math.max(...placed.map((p) => p.length));
  const padding = parts.flatMap(({ cache, rows }, i) =>
    rows.map((r) => cache.padding[r]! - placed[i]!.trim + offset - placed[i]!.length),
  );
  return { offset, parts: placed.map((p) => ({ ...p, at: offset - p.length })), padding };
}

/** Rebuilds `target` from the parts' rows (the target may be one of the sources). */
export function regroup(target: KVCache, parts: readonly CachePart<KVCache>[], room: number): void;
export function regroup(target: HostKVCache, parts: readonly CachePart<HostKVCache>[], room: number): void;
/** (A cache of either kind: its parts must be of the same kind.) */
export function regroup(
  target: KVCache | HostKVCache,
  parts: readonly CachePart<KVCache | HostKVCache>[],
  room: number,
): void;
export function regroup(
  target: KVCache | HostKVCache,
  parts: readonly CachePart<KVCache | HostKVCache>[],
  room: number,
): void {
  if (parts.length === 0 || parts.some((p) => p.rows.length === 0)) throw new Error("regroup: every part needs rows");
  if (!Number.isSafeInteger(room) || room < 0) throw new Error(`regroup: room must be an integer >= 0, got ${room}`);
  const plan = layout(parts);
  const capacity = plan.offset + room;
  if (target.backend === "mlx") regroupMlx(target, parts as readonly CachePart<KVCache>[], plan, capacity);
  else regroupHost(target, parts as readonly CachePart<HostKVCache>[], plan, capacity);
}

function regroupMlx(target: KVCache, parts: readonly CachePart<KVCache>[], plan: Layout, capacity: number): void {
  const sources = parts.map((p) => p.cache.buffers());
  try {
    const [single] = parts;
    const whole =
      parts.length === 1 && single!.rows.every((r, i) => r === i) && single!.rows.length === single!.cache.shape.batch;
    if (whole && plan.parts[0]!.trim === 0 && capacity === single!.cache.shape.maxLength) {
      // The rows as they stand: the buffers are taken over, nothing is copied.
      target.setBuffers(sources[0]!, plan.offset, plan.padding);
      return;
    }
    const { heads, headDim, layers } = target.shape;
    const buffers = tidy(() =>
      Array.from({ length: 2 * layers }, (_, j) => {
        const pieces = parts.map(({ cache, rows }, i) => {
          const { trim, at, length } = plan.parts[i]!;
          let x = sources[i]![j]!;
          const dtype = x.dtype;
          const R = rows.length;
          if (!(rows.length === cache.shape.batch && rows.every((r, k) => r === k)))
            x = take(x, Tensor.from(Int32Array.from(rows), [R]), 0);
          x = slice(x, [0, 0, trim, 0], [R, heads, trim + length, headDim]);
          const around = [
            at > 0 ? zeros([R, heads, at, headDim], dtype) : null,
            x,
            capacity > plan.offset ? zeros([R, heads, capacity - plan.offset, headDim], dtype) : null,
          ];
          const present = around.filter((t): t is Tensor => t !== null);
          return present.length === 1 ? present[0]! : concatenate(present, 2);
        });
        return pieces.length === 1 ? pieces[0]! : concatenate(pieces, 0);
      }),
    );
    try {
      target.setBuffers(buffers, plan.offset, plan.padding);
    } finally {
      for (const b of buffers) b.dispose();
    }
  } finally {
    for (const list of sources) for (const t of list) t.dispose();
  }
}

function regroupHost(
  target: HostKVCache,
  parts: readonly CachePart<HostKVCache>[],
  plan: Layout,
  capacity: number,
): void {
  const { heads, headDim, layers } = target.shape;
  const rows = parts.reduce((n, p) => n + p.rows.length, 0);
  const sources = parts.map((p) => p.cache.buffers());
  const buffers = Array.from({ length: 2 * layers }, (_, j) => {
    const out = new Float32Array(rows * heads * capacity * headDim);
    let row = 0;
    for (const [i, { cache, rows: kept }] of parts.entries()) {
      const { trim, at, length } = plan.parts[i]!;
      const source = sources[i]![j]!;
      const S = cache.shape.maxLength;
      for (const r of kept) {
        for (let h = 0; h < heads; h++) {
          const from = ((r * heads + h) * S + trim) * headDim;
          out.set(source.data.subarray(from, from + length * headDim), ((row * heads + h) * capacity + at) * headDim);
        }
        row++;
      }
    }
    return new CpuTensor(out, [rows, heads, capacity, headDim]);
  });
  target.setBuffers(buffers, plan.offset, plan.padding);
}

/** The cache lets its buffers go: it takes those of `tiny` (a one-row, one-position cache), which
 * is disposed. */
export function emptyBuffers(cache: KVCache, tiny: KVCache): void {
  try {
    regroup(cache, [{ cache: tiny, rows: [0] }], tiny.shape.maxLength - tiny.offset);
  } finally {
    tiny.dispose();
  }
}
