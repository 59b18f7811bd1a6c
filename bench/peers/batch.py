"""Peer for bench/batch.ts: mlx-lm's batch_generate on the same prompts (token ids), greedy, end of
sequence ignored (the tokenizer's eos ids cleared). argv: model dir, JSON file {prompts, max_tokens,
sizes}. Prints {N: [generated tokens/s per rep]}."""
import json
import sys
import time

import mlx.core as mx
from mlx_lm import load
from mlx_lm.generate import batch_generate

model, tokenizer = load(sys.argv[1])
tokenizer.eos_token_ids = []
spec = json.load(open(sys.argv[2]))
out = {}
for n in spec["sizes"]:
    prompts = spec["prompts"][:n]
    batch_generate(model, tokenizer, prompts, max_tokens=4, completion_batch_size=n, prefill_batch_size=n)
    rates = []
    for _ in range(spec["reps"]):
        start = time.perf_counter()
        response = batch_generate(model, tokenizer, prompts, max_tokens=spec["max_tokens"], completion_batch_size=n, prefill_batch_size=n, return_token_ids=True)
        seconds = time.perf_counter() - start
        tokens = sum(len(t) for t in response.token_ids) if getattr(response, "token_ids", None) else n * spec["max_tokens"]
        rates.append(tokens / seconds)
    out[str(n)] = rates
print(json.dumps(out))
