"""Python MLX side of bench/overhead.ts: ns per call of a trivial op and of building a 30-op graph,
same libmlx, no evaluation. Prints JSON."""
import json
import sys
import time

import mlx.core as mx

reps, warmup = 15, 3


def time_ns(fn, inner):
    runs = []
    for r in range(reps + warmup):
        start = time.perf_counter_ns()
        for _ in range(inner):
            fn()
        if r >= warmup:
            runs.append((time.perf_counter_ns() - start) / inner)
    runs.sort()
    median = runs[len(runs) // 2]
    return {"median": median, "spread": (runs[int(0.9 * len(runs))] - runs[int(0.1 * len(runs))]) / median}


a = mx.ones((16, 16))
b = mx.ones((16, 16))
mx.eval(a, b)


def graph30():
    x = a
    for _ in range(10):
        x = mx.exp(mx.multiply(mx.add(x, b), b))


print(json.dumps({
    "add": time_ns(lambda: mx.add(a, b), int(sys.argv[1]) if len(sys.argv) > 1 else 20000),
    "graph30": time_ns(graph30, 2000),
}))
