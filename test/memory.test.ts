// MLX allocator statistics and limits through the shim.
import { expect, test } from "bun:test";
import { memory, ops, Tensor } from "../src/index.ts";

test("active/peak/cache memory follow an allocation; limits round-trip; clearCache empties the cache", async () => {
  memory.clearCache();
  memory.resetPeak();
  const before = memory.active();
  const bytes = 4 * 1024 * 1024;
  const big = Tensor.from(new Float32Array(bytes / 4).fill(1), [bytes / 4]);
  const doubled = ops.multiply(big, 2).eval();
  expect(memory.active()).toBeGreaterThanOrEqual(before + bytes);
  expect(memory.peak()).toBeGreaterThanOrEqual(memory.active());
  doubled.dispose();
  big.dispose();
  // On a GPU, MLX returns buffers once the stream's completion callback has run, a moment later.
  for (let i = 0; i < 200 && memory.active() > before; i++) await Bun.sleep(5);
  expect(memory.active()).toBeLessThanOrEqual(before);
  expect(memory.cache()).toBeGreaterThan(0); // freed MLX buffers are kept for reuse
  memory.clearCache();
  expect(memory.cache()).toBe(0);

  const previous = memory.setLimit(1 << 30);
  expect(memory.setLimit(previous)).toBe(1 << 30);
  const previousCache = memory.setCacheLimit(1 << 20);
  expect(memory.setCacheLimit(previousCache)).toBe(1 << 20);
});

test("a synchronous loop that never disposes stays under the finalizer bound: forgotten tensors are collected in the loop", async () => {
  const { setFinalizerBound } = await import("../src/index.ts");
  const previous = setFinalizerBound(64 * 2 ** 20);
  try {
    Bun.gc(true);
    const rssBefore = process.memoryUsage().rss;
    const chunk = new Float32Array(2 ** 20).fill(1); // 4 MiB
    let peak = 0;
    for (let i = 0; i < 400; i++) {
      // 1.6 GiB of host copies and 1.6 GiB of results, none disposed, no await: finalizers get no turn.
      ops.multiply(Tensor.from(chunk), 2).eval();
      if (i % 50 === 0) peak = Math.max(peak, process.memoryUsage().rss - rssBefore);
    }
    peak = Math.max(peak, process.memoryUsage().rss - rssBefore);
    expect(peak).toBeLessThan(800 * 2 ** 20);
  } finally {
    setFinalizerBound(previous);
  }
}, 120_000);
