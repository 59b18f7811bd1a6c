// The MLX KV cache's write (shim/ext/kv.cpp, write_cache): in place as one MLX node (KVCacheWrite: the
// updated buffers and the positions written so far as views) when nothing can read what it overwrites,
// else by MLX's ops into a new buffer. The expected values are built on the host (the writes in
// order, position by position).
import { describe, expect, test } from "bun:test";
import { KVCache } from "../src/kv-cache.ts";
import { pendingPrimitiveKinds } from "../src/ops/core.ts";
import { Tensor } from "../src/tensor.ts";

const [B, H, D, S] = [2, 3, 4, 8];

/** Values [B, H, T, D] that name their write, batch, head, position and element. */
function block(write: number, length: number): Float32Array {
  return Float32Array.from({ length: B * H * length * D }, (_, i) => write * 1000 + i);
}

/** What the cache holds after `writes` (each [B, H, T, D] at the running offset): [B, H, end, D]. */
function expected(writes: Float32Array[]): Float32Array {
  const lengths = writes.map((w) => w.length / (B * H * D));
  const end = lengths.reduce((a, b) => a + b, 0);
  const out = new Float32Array(B * H * end * D);
  let at = 0;
  writes.forEach((w, n) => {
    const t = lengths[n]!;
    for (let bh = 0; bh < B * H; bh++) out.set(w.subarray(bh * t * D, (bh + 1) * t * D), (bh * end + at) * D);
    at += t;
  });
  return out;
}

/** Writes block(n, length) as the keys and values of layer 0 at the cache's offset, then advances it:
 * the fetched keys and values (the caller disposes them) and whether the write went in place (one
 * KVCacheWrite node, counted before anything is evaluated). */
function write(cache: KVCache, n: number, length: number): { keys: Tensor; values: Tensor; inPlace: boolean } {
  using k = Tensor.from(block(n, length), [B, H, length, D]);
  const [keys, values] = cache.updateAndFetch(0, k, k);
  cache.advance(length);
  return { keys, values, inPlace: Object.fromEntries(pendingPrimitiveKinds([keys]))["KVCacheWrite"] === 1 };
}

describe("KV cache write", () => {
  for (const dtype of ["float32", "bfloat16"] as const) {
    test(`${dtype}: a prompt then single positions; the fetched keys and values are exactly those written (views of [B, H, S, D] buffers)`, () => {
      using cache = new KVCache({ layers: 2, batch: B, heads: H, headDim: D, maxLength: S, dtype });
      const writes: Float32Array[] = [];
      for (const length of [3, 1, 1, 2]) {
        const keys = block(writes.length, length);
        using k = Tensor.from(keys, [B, H, length, D], dtype);
        using v = Tensor.from(
          keys.map((x) => -x),
          [B, H, length, D],
          dtype,
        );
        const [fk, fv] = cache.updateAndFetch(1, k, v);
        writes.push(keys);
        cache.advance(length);
        using ks = fk;
        using vs = fv;
        const want = expected(writes);
        // bfloat16 holds these integers exactly up to 256; compare through the same rounding.
        using rounded = Tensor.from(want, [B, H, cache.offset, D], dtype);
        expect(ks.shape).toEqual([B, H, cache.offset, D]);
        expect(ks.toFloat32Array()).toEqual(rounded.toFloat32Array());
        expect(vs.toFloat32Array()).toEqual(rounded.toFloat32Array().map((x) => -x));
      }
    });
  }

  test("one MLX node per layer's write (no slice_update or slice nodes)", () => {
    using cache = new KVCache({ layers: 1, batch: B, heads: H, headDim: D, maxLength: S });
    using k = Tensor.from(block(0, 1), [B, H, 1, D]);
    const [fk, fv] = cache.updateAndFetch(0, k, k);
    using ks = fk;
    using vs = fv;
    const kinds = Object.fromEntries(pendingPrimitiveKinds([ks, vs]));
    expect(kinds["KVCacheWrite"]).toBe(1);
    expect(kinds["SliceUpdate"]).toBeUndefined();
    expect(kinds["Slice"]).toBeUndefined();
  });

  test("buffers handed out whole are not written in place: the held tensors keep their values", () => {
    using cache = new KVCache({ layers: 1, batch: B, heads: H, headDim: D, maxLength: S });
    const first = write(cache, 1, 2);
    first.keys.dispose();
    first.values.dispose();
    const held = cache.tensors(); // the buffers after the first write
    const before = held.map((t) => t.toFloat32Array());
    const second = write(cache, 2, 1);
    using ks = second.keys;
    using _vs = second.values;
    expect(second.inPlace).toBe(false);
    expect(ks.toFloat32Array()).toEqual(expected([block(1, 2), block(2, 1)]));
    for (const [i, t] of held.entries()) expect(t.toFloat32Array()).toEqual(before[i]!);
    for (const t of held) t.dispose();
    // Later writes go on in place; the values stay right.
    const third = write(cache, 3, 1);
    using _ks3 = third.keys;
    using vs3 = third.values;
    expect(third.inPlace).toBe(true);
    expect(vs3.toFloat32Array()).toEqual(expected([block(1, 2), block(2, 1), block(3, 1)]));
  });

  test("a write after a seek back leaves the views handed out before it as they were; writes past them go on in place", () => {
    using cache = new KVCache({ layers: 1, batch: B, heads: H, headDim: D, maxLength: S });
    const first = write(cache, 1, 4);
    using hk = first.keys;
    using hv = first.values;
    const before = hk.toFloat32Array();
    cache.seek(2); // as speculative decoding's rollback
    const second = write(cache, 2, 1);
    using ks = second.keys;
    using _vs = second.values;
    // Written by MLX's ops into a new buffer (what it overwrites is viewed), not in place.
    expect(second.inPlace).toBe(false);
    const kept = block(1, 4).filter((_, i) => Math.floor(i / D) % 4 < 2); // positions 0 and 1
    expect(ks.toFloat32Array()).toEqual(expected([kept, block(2, 1)]));
    expect(hk.toFloat32Array()).toEqual(before);
    expect(hv.toFloat32Array()).toEqual(before);
    const third = write(cache, 3, 1);
    using _ks3 = third.keys;
    using vs3 = third.values;
    expect(third.inPlace).toBe(true);
    expect(vs3.toFloat32Array()).toEqual(expected([kept, block(2, 1), block(3, 1)]));
  });

  test("keys or values that do not fit the cache, or run past its end: an Error naming them", () => {
    using cache = new KVCache({ layers: 1, batch: B, heads: H, headDim: D, maxLength: S });
    using wide = Tensor.from(new Float32Array(B * H * D * 2), [B, H, 1, 2 * D]);
    using k = Tensor.from(block(0, 1), [B, H, 1, D]);
    expect(() => cache.updateAndFetch(0, k, wide)).toThrow(`v [${B}, ${H}, 1, ${2 * D}] does not fit the cache`);
    using long = Tensor.from(new Float32Array(B * H * (S + 1) * D), [B, H, S + 1, D]);
    expect(() => cache.updateAndFetch(0, long, long)).toThrow(`KV cache of length ${S} cannot hold ${S + 1} positions`);
  });
});
