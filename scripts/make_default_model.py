"""Makes the default model for the demo, since no registry package carries a small causal LM's
weights: a byte-level BPE tokenizer trained on the English docstrings of Python's standard library,
and a small Llama trained on the same text for a fixed number of steps with MLX on the CPU, then
quantized to 4 bits and saved in MLX format by mlx-lm. Deterministic for a given Python and MLX.

Usage: make_default_model.py OUT_DIR [STEPS]"""
import importlib
import json
import os
import pkgutil
import sys
import time
import warnings

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx_lm.models import llama
from mlx_lm.utils import quantize_model, save_config, save_model
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

out_dir = sys.argv[1]
steps = int(sys.argv[2]) if len(sys.argv) > 2 else 300
EOS = "<|endoftext|>"


def corpus() -> list[str]:
    warnings.simplefilter("ignore")
    skip = ("test", "idlelib", "tkinter", "turtle", "antigravity", "this", "lib2to3", "ensurepip", "pydoc_data")
    docs = []
    for info in sorted(pkgutil.iter_modules(), key=lambda m: m.name):
        if info.name.startswith(("_",) + skip) or not info.module_finder.path.endswith("python3.11"):
            continue
        try:
            module = importlib.import_module(info.name)
        except Exception:
            continue
        for obj in [module, *[getattr(module, n, None) for n in sorted(dir(module)) if not n.startswith("_")]]:
            doc = getattr(obj, "__doc__", None)
            if isinstance(doc, str) and len(doc) > 200 and doc not in docs:
                docs.append(" ".join(doc.split()))
    return docs


docs = corpus()
os.makedirs(out_dir, exist_ok=True)
tokenizer = Tokenizer(models.BPE())
tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
tokenizer.decoder = decoders.ByteLevel()
trainer = trainers.BpeTrainer(vocab_size=1024, special_tokens=[EOS], initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
tokenizer.train_from_iterator(docs, trainer)
tokenizer.save(os.path.join(out_dir, "tokenizer.json"))
with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
    json.dump({"eos_token": EOS, "bos_token": None, "model_max_length": 1024, "tokenizer_class": "PreTrainedTokenizerFast"}, f)

eos_id = tokenizer.token_to_id(EOS)
ids = []
for doc in docs:
    ids.extend(tokenizer.encode(doc).ids + [eos_id])
data = np.array(ids, dtype=np.int32)

config = {
    "model_type": "llama", "hidden_size": 256, "num_hidden_layers": 4, "intermediate_size": 768,
    "num_attention_heads": 8, "num_key_value_heads": 2, "rms_norm_eps": 1e-5, "vocab_size": 1024,
    "rope_theta": 10000.0, "max_position_embeddings": 1024, "tie_word_embeddings": True,
    "eos_token_id": eos_id,
}
mx.random.seed(0)
model = llama.Model(llama.ModelArgs.from_dict(config))
optimizer = optim.AdamW(learning_rate=optim.cosine_decay(3e-3, steps, 3e-4), weight_decay=0.01)
rng = np.random.default_rng(0)
seq, batch = 128, 16


def loss_fn(model, x, y):
    return nn.losses.cross_entropy(model(x), y, reduction="mean")


step_fn = nn.value_and_grad(model, loss_fn)
start = time.time()
for step in range(steps):
    starts = rng.integers(0, len(data) - seq - 1, size=batch)
    x = mx.array(np.stack([data[s:s + seq] for s in starts]))
    y = mx.array(np.stack([data[s + 1:s + seq + 1] for s in starts]))
    loss, grads = step_fn(model, x, y)
    optimizer.update(model, grads)
    mx.eval(model.parameters(), optimizer.state, loss)
    if step % 100 == 0 or step == steps - 1:
        print(f"[default model] step {step} loss {loss.item():.3f} ({time.time() - start:.0f}s)", flush=True)

model, config = quantize_model(model, config, 64, 4)
save_model(out_dir, model)
save_config(config, os.path.join(out_dir, "config.json"))
print(f"[default model] {len(data)} training tokens, saved to {out_dir}")
