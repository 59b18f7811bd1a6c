"""A 4-bit checkpoint with random weights in a real model's shape (mlx-lm), for the decode bench.
Usage: make_bench_model.py OUT_DIR TOKENIZER_DIR [SHAPE [DTYPE]]
SHAPE: qwen3-0.6b (default) or qwen3-8b; DTYPE of the scales, norms and activations: float32
(default) or bfloat16 (as released MLX checkpoints; slow on MLX's CPU backend)."""
import os
import shutil
import sys

import mlx.core as mx
from mlx_lm.models import qwen3
from mlx_lm.utils import quantize_model, save_config, save_model

SHAPES = {
    "qwen3-0.6b": {"hidden_size": 1024, "num_hidden_layers": 28, "intermediate_size": 3072,
                   "num_attention_heads": 16, "num_key_value_heads": 8, "tie_word_embeddings": True},
    "qwen3-8b": {"hidden_size": 4096, "num_hidden_layers": 36, "intermediate_size": 12288,
                 "num_attention_heads": 32, "num_key_value_heads": 8, "tie_word_embeddings": False},
}
out, tokenizer_dir = sys.argv[1], sys.argv[2]
shape = sys.argv[3] if len(sys.argv) > 3 else "qwen3-0.6b"
dtype = sys.argv[4] if len(sys.argv) > 4 else "float32"
config = {
    "model_type": "qwen3", "head_dim": 128, "rms_norm_eps": 1e-6, "vocab_size": 151936,
    "rope_theta": 1000000.0, "max_position_embeddings": 40960, **SHAPES[shape],
}
mx.random.seed(0)
model = qwen3.Model(qwen3.ModelArgs.from_dict(config))
model.set_dtype(getattr(mx, dtype))
model, config = quantize_model(model, config, 64, 4)
save_model(out, model)
save_config(config, os.path.join(out, "config.json"))
for name in ("tokenizer.json", "tokenizer_config.json"):
    shutil.copy(os.path.join(tokenizer_dir, name), out)
