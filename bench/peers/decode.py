"""mlx_lm.generate's prefill and decode tokens/s on a checkpoint, same prompt ids and token count,
and the greedy tokens of its last run. Decode counts as mlx-bun's does: the tokens after the first
over the time from the first to the last (stream_generate's generation_tps divides all n tokens,
the first included, by that time: n/(n-1) too high, 3% at 32 tokens).
Usage: decode.py DIR PROMPT_IDS_JSON MAX_TOKENS REPEATS"""
import json
import sys

import mlx.core as mx
from mlx_lm import load
from mlx_lm.generate import stream_generate

path, prompt, max_tokens, repeats = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
model, tokenizer = load(path)
tokenizer.eos_token_ids = []  # a fixed token count, as the mlx-bun side (ignoreEos)
runs, tokens = [], []
for _ in range(repeats + 1):
    tokens = []
    for last in stream_generate(model, tokenizer, mx.array(prompt), max_tokens=max_tokens):
        tokens.append(last.token)
    n = last.generation_tokens
    runs.append({"prefill": last.prompt_tps, "decode": last.generation_tps * (n - 1) / n})
print(json.dumps({"runs": runs[1:], "tokens": tokens}))
