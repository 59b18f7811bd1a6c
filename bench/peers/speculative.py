"""Peer for bench/speculative.ts: mlx-lm's stream_generate, plain and with a draft model, greedy,
on the same prompt ids. argv: target dir, draft dir, JSON {prompt, max_tokens, drafts, reps}.
Prints {"plain": [tokens/s], "k": {"tokens_per_second": [...], "accepted": fraction}}."""
import json
import sys
import time

from mlx_lm import load
from mlx_lm.generate import stream_generate

target, tokenizer = load(sys.argv[1])
draft, _ = load(sys.argv[2])
spec = json.load(open(sys.argv[3]))


def run(**kwargs):
    start = time.perf_counter()
    tokens = drafted = 0
    for r in stream_generate(target, tokenizer, spec["prompt"], max_tokens=spec["max_tokens"], **kwargs):
        tokens += 1
        drafted += int(r.from_draft)
    return tokens / (time.perf_counter() - start), drafted / max(1, tokens)


out = {}
run()
out["plain"] = [run()[0] for _ in range(spec["reps"])]
for k in spec["drafts"]:
    run(draft_model=draft, num_draft_tokens=k)
    results = [run(draft_model=draft, num_draft_tokens=k) for _ in range(spec["reps"])]
    out[str(k)] = {"tokens_per_second": [r[0] for r in results], "from_draft": results[-1][1]}
print(json.dumps(out))
