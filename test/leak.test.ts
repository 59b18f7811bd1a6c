// Native memory: every handle is freed; RSS stays bounded over many create/free cycles.
import { expect, test } from "bun:test";
import { liveTensorCount, memory, ops, Tensor } from "../src/index.ts";

function rssMiB(): number {
  return process.memoryUsage().rss / 2 ** 20;
}

test("100k create/free cycles keep RSS and MLX active memory bounded", () => {
  // 1 KiB per tensor: a leak of one handle per cycle would add ~200 MiB (input + result).
  const data = new Float32Array(256).fill(0.5);
  const cycle = () => {
    using a = Tensor.from(data, [16, 16]);
    using b = ops.add(a, 1);
    b.eval();
  };
  for (let i = 0; i < 10_000; i++) cycle();
  Bun.gc(true);
  const liveBefore = liveTensorCount();
  const activeBefore = memory.active();
  // Two windows of 100k cycles: a leak grows RSS in both; the rest of the process (the suite's other
  // files run in it: their garbage, a heap that grows once) can move one of them.
  const growth = [0, 1].map(() => {
    const rssBefore = rssMiB();
    for (let i = 0; i < 100_000; i++) cycle();
    Bun.gc(true);
    return rssMiB() - rssBefore;
  });
  expect(liveTensorCount()).toBe(liveBefore);
  expect(memory.active()).toBeLessThanOrEqual(activeBefore);
  expect(Math.min(...growth)).toBeLessThan(32);
});

test("tensors nobody disposed are freed by the FinalizationRegistry net", async () => {
  const before = liveTensorCount();
  (() => {
    for (let i = 0; i < 1000; i++) Tensor.from([1, 2, 3]);
  })();
  expect(liveTensorCount()).toBe(before + 1000);
  const activeWith = memory.active();
  for (let i = 0; i < 10 && liveTensorCount() > before; i++) {
    Bun.gc(true);
    await Bun.sleep(10);
  }
  expect(liveTensorCount()).toBeLessThan(before + 1000);
  expect(memory.active()).toBeLessThan(activeWith);
});
