// Host cost of MLX's GPU evaluation per node: a chain of N adds over small arrays (one node each),
// built, then timed around asyncEval (encoding and launch) and the wait for the result. Median of 20.
import { ops, Tensor } from "../../src/index.ts";
import { asyncEval } from "../../src/ops/core.ts";

for (const n of [50, 100, 200, 400]) {
  const launch: number[] = [];
  const total: number[] = [];
  for (let rep = 0; rep < 25; rep++) {
    const x = Tensor.from(new Float32Array(1024).fill(1), [1024]);
    let y = x;
    const made: Tensor[] = [];
    for (let i = 0; i < n; i++) {
      y = ops.add(y, x);
      made.push(y);
    }
    const t0 = performance.now();
    asyncEval([y]);
    const t1 = performance.now();
    y.eval();
    const t2 = performance.now();
    if (rep >= 5) {
      launch.push(t1 - t0);
      total.push(t2 - t0);
    }
    for (const t of made) t.dispose();
    x.dispose();
  }
  const med = (a: number[]) => a.sort((p, q) => p - q)[a.length >> 1]!;
  console.log(
    `${n} nodes: asyncEval ${(med(launch) * 1000).toFixed(0)} µs (${((med(launch) * 1000) / n).toFixed(2)} µs/node), to result ${(med(total) * 1000).toFixed(0)} µs`,
  );
}
