"""mlx-lm's decode step, timed as bench/decode.ts times mlx-bun's: the loop of
mlx_lm.generate.generate_step (model call, last-position logits, logprobs, greedy pick, async_eval,
then reading the previous token), split into host build, the async_eval call, and the wait for the
token (means; the build's median too); plus the primitives one step runs, by kind (from mx.export_to_dot).
Usage: step.py DIR PROMPT_IDS_JSON STEPS"""
import collections
import io
import json
import re
import sys
import time

import mlx.core as mx
from mlx_lm import load
from mlx_lm.models.cache import make_prompt_cache

path, prompt, steps = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
model, _ = load(path)


def step(y, cache):
    logits = model(y[None], cache=cache)[:, -1, :]
    logprobs = logits - mx.logsumexp(logits, keepdims=True)
    return mx.argmax(logprobs, axis=-1)


def primitive_kinds(y):
    dot = io.StringIO()
    mx.export_to_dot(dot, y)
    return collections.Counter(re.findall(r'\[label ="([^"]*)"', dot.getvalue()))


cache = make_prompt_cache(model)
y = step(mx.array(prompt), cache)
mx.eval(y)
kinds = primitive_kinds(step(y, cache))
cache = make_prompt_cache(model)
y = step(mx.array(prompt), cache)
mx.async_eval(y)
build = evalcall = wait = 0.0
builds = []
warmup = 4
for i in range(steps):
    t0 = time.perf_counter()
    nxt = step(y, cache)
    t1 = time.perf_counter()
    mx.async_eval(nxt)
    t2 = time.perf_counter()
    y.item()
    t3 = time.perf_counter()
    if i >= warmup:
        build, evalcall, wait = build + t1 - t0, evalcall + t2 - t1, wait + t3 - t2
        builds.append(t1 - t0)
    y = nxt
n = steps - warmup
builds.sort()
median = (builds[(n - 1) // 2] + builds[n // 2]) / 2
print(json.dumps({"buildMs": 1e3 * build / n, "buildMedianMs": 1e3 * median, "evalCallMs": 1e3 * evalcall / n, "waitMs": 1e3 * wait / n, "primitives": sum(kinds.values()), "kinds": kinds}))
