"""Makes a draft model for bench/speculative.ts with mlx-lm: the target checkpoint cut to its first
N layers (same embeddings, norm, head and tokenizer). argv: target dir, out dir, N."""
import json
import os
import shutil
import sys

from mlx_lm import load
from mlx_lm.utils import save_config, save_model

target, out, layers = sys.argv[1], sys.argv[2], int(sys.argv[3])
model, _ = load(target)
model.model.layers = model.model.layers[:layers]
config = json.load(open(os.path.join(target, "config.json")))
config["num_hidden_layers"] = layers
os.makedirs(out, exist_ok=True)
save_model(out, model)
save_config(config, os.path.join(out, "config.json"))
for name in ("tokenizer.json", "tokenizer_config.json"):
    shutil.copy(os.path.join(target, name), out)
