// Bad input gives a clear Error naming what is at fault, and the process carries on.
import { describe, expect, test } from "bun:test";
import { fast, ops, Tensor } from "../src/index.ts";

const matrix = () => Tensor.from(new Float32Array(6).fill(1), [2, 3]);

describe("errors", () => {
  test("shape mismatch carries MLX's message and the op name", () => {
    using a = matrix();
    using b = Tensor.from([1, 2], [2]);
    expect(() => ops.add(a, b)).toThrow(/^add: .*broadcast.*\(2,3\).*\(2\)/);
    expect(() => ops.matmul(a, a)).toThrow(/^matmul: /);
    using w = Tensor.from(new Float32Array(5));
    expect(() => fast.rmsNorm(a, w, 1e-5)).toThrow(/^rmsNorm: .*weight/i);
  });

  test("a disposed tensor is rejected by name before reaching MLX", () => {
    const a = matrix();
    a.name = "layers.0.weight";
    a.dispose();
    a.dispose(); // idempotent
    using b = matrix();
    expect(() => ops.add(a, b)).toThrow("add: argument 'a' (layers.0.weight) was used after dispose()");
    expect(() => a.shape).toThrow("Tensor 'layers.0.weight' used after dispose()");
  });

  test("wrong dtype is an Error", () => {
    using table = matrix();
    using floatIds = Tensor.from([0.5, 1.5]);
    expect(() => ops.take(table, floatIds, 0).eval()).toThrow(/^take: .*(integer|dtype)/i);
    expect(() => ops.astype(table, "float128" as never)).toThrow("unknown dtype 'float128'");
  });

  test("host data that does not fill the shape is rejected", () => {
    expect(() => Tensor.from([1, 2, 3], [2, 2])).toThrow("Tensor.from: shape [2, 2] holds 4 elements but data has 3");
    expect(() => Tensor.fromBytes(new Uint8Array(7), [2], "float32")).toThrow(/data has 7 bytes but shape needs 8/);
    expect(() => ops.slice(matrix(), [0], [1])).toThrow("slice: start/stop/strides need 2 entries");
  });

  test("kv-cache attention past the end of the cache is an Error", () => {
    using q = Tensor.from(new Float32Array(2 * 4), [1, 2, 1, 4]);
    using cache = Tensor.from(new Float32Array(2 * 3 * 4), [1, 2, 3, 4]);
    expect(() => fast.kvCacheAttention(q, q, q, { keys: cache, values: cache }, { offset: 3, scale: 0.5 })).toThrow(
      "kvCacheAttention: KV cache of length 3 cannot hold 4 positions",
    );
  });

  test("the process survives and keeps computing after errors", () => {
    using a = matrix();
    for (let i = 0; i < 100; i++) {
      expect(() => ops.reshape(a, [4, 4])).toThrow(/^reshape\(tensor\[2,3\] float32 -> \[4,4\]\): /);
    }
    using s = ops.sum(a);
    expect(s.item()).toBe(6);
  });
});

describe("tidy", () => {
  test("disposes what the callback made except what it returns; nested scopes hand results out", async () => {
    const { tidy, liveTensorCount } = await import("../src/index.ts");
    Tensor.collectForgotten(); // what earlier tests left to the collector goes now, not mid-count
    const before = liveTensorCount();
    const kept = tidy(() => {
      const a = Tensor.from([1, 2, 3]);
      const b = ops.multiply(a, 2);
      const inner = tidy(() => {
        const c = ops.add(b, 1);
        ops.add(c, 1); // dropped
        return { c };
      });
      return [inner.c, ops.add(inner.c, a)];
    });
    expect(liveTensorCount()).toBe(before + 2);
    expect(Array.from(kept[0]!.toFloat32Array())).toEqual([3, 5, 7]);
    expect(Array.from(kept[1]!.toFloat32Array())).toEqual([4, 7, 10]);
    for (const t of kept) t.dispose();
    expect(liveTensorCount()).toBe(before);
    expect(() =>
      tidy(() => {
        Tensor.from([1]);
        throw new Error("boom");
      }),
    ).toThrow("boom");
    expect(liveTensorCount()).toBe(before);
  });
});
