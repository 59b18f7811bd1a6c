"""A 4-bit Qwen3-0.6B-shaped checkpoint with random weights (mlx-lm), for the decode bench.
Usage: make_bench_model.py OUT_DIR TOKENIZER_DIR"""
import os
import shutil
import sys

import mlx.core as mx
from mlx_lm.models import qwen3
from mlx_lm.utils import quantize_model, save_config, save_model

out, tokenizer_dir = sys.argv[1], sys.argv[2]
config = {
    "model_type": "qwen3", "hidden_size": 1024, "num_hidden_layers": 28, "intermediate_size": 3072,
    "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 128, "rms_norm_eps": 1e-6,
    "vocab_size": 151936, "rope_theta": 1000000.0, "max_position_embeddings": 40960,
    "tie_word_embeddings": True,
}
mx.random.seed(0)
model = qwen3.Model(qwen3.ModelArgs.from_dict(config))
model, config = quantize_model(model, config, 64, 4)
save_model(out, model)
save_config(config, os.path.join(out, "config.json"))
for name in ("tokenizer.json", "tokenizer_config.json"):
    shutil.copy(os.path.join(tokenizer_dir, name), out)
