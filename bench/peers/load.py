"""mlx-lm's load of a checkpoint directory (model + weights evaluated, tokenizer excluded), ms."""
import json
import sys
import time
from pathlib import Path

import mlx.core as mx
from mlx_lm.utils import load_model

runs = []
for i in range(7):
    start = time.perf_counter()
    model, _ = load_model(Path(sys.argv[1]))
    mx.eval(model.parameters())
    if i >= 2:
        runs.append((time.perf_counter() - start) * 1000)
    del model
runs.sort()
median = runs[len(runs) // 2]
print(json.dumps({"median": median, "spread": (runs[-1] - runs[0]) / median}))
