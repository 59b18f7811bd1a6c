"""Trains the default model (a small Llama) on prepare.py's token files with MLX, keeps the weights
with the best validation loss, quantizes them to 4 bits (group 64) with mlx-lm and saves an MLX
checkpoint. Made for one call on the lent H100 (README, "The default model"); runs anywhere MLX does.

Usage: train.py DATA_DIR OUT_DIR SECONDS [--tiny]
Writes OUT_DIR/model/ (config.json, model.safetensors, tokenizer files) and OUT_DIR/train.json (the
run: config, steps, tokens, throughput, the loss curve, validation loss and perplexity before and
after quantization)."""
import json
import math
import os
import shutil
import sys
import time
from functools import partial

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_flatten, tree_map
from mlx_lm.models import llama
from mlx_lm.utils import quantize_model, save_config, save_model

data_dir, out_dir, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
tiny = "--tiny" in sys.argv
train = np.fromfile(os.path.join(data_dir, "train.bin"), dtype=np.uint16).astype(np.int32)
val = np.fromfile(os.path.join(data_dir, "val.bin"), dtype=np.uint16).astype(np.int32)
eos = json.load(open(os.path.join(data_dir, "tokenizer.json")))["added_tokens"][0]["id"]

config = {
    "model_type": "llama", "hidden_size": 512, "num_hidden_layers": 8, "intermediate_size": 1536,
    "num_attention_heads": 8, "num_key_value_heads": 4, "rms_norm_eps": 1e-5, "vocab_size": 8192,
    "rope_theta": 10000.0, "max_position_embeddings": 1024, "tie_word_embeddings": True,
    "eos_token_id": eos,
}
SEQ, BATCH, PEAK_LR, WARMUP = 512, 64, 2e-3, 100
if tiny:
    config.update(hidden_size=64, num_hidden_layers=2, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2)
    SEQ, BATCH = 64, 4

mx.random.seed(0)
rng = np.random.default_rng(0)
model = llama.Model(llama.ModelArgs.from_dict(config))
params = sum(v.size for _, v in tree_flatten(model.parameters()))
optimizer = optim.AdamW(learning_rate=0.0, betas=[0.9, 0.95], weight_decay=0.1)


def loss_fn(model, x, y):
    return nn.losses.cross_entropy(model(x), y, reduction="mean")


loss_and_grad = nn.value_and_grad(model, loss_fn)
state = [model.state, optimizer.state]


@partial(mx.compile, inputs=state, outputs=state)
def step(x, y):
    loss, grads = loss_and_grad(model, x, y)
    grads, _ = optim.clip_grad_norm(grads, 1.0)
    optimizer.update(model, grads)
    return loss


def batch():
    starts = rng.integers(0, len(train) - SEQ - 1, size=BATCH)
    window = np.stack([train[s:s + SEQ + 1] for s in starts])
    return mx.array(window[:, :-1]), mx.array(window[:, 1:])


def val_loss(model) -> float:
    """Mean cross-entropy over every whole SEQ-token window of the held-out text."""
    n = (len(val) - 1) // SEQ
    total = 0.0
    for i in range(0, n, BATCH):
        rows = range(i, min(n, i + BATCH))
        x = mx.array(np.stack([val[r * SEQ:(r + 1) * SEQ] for r in rows]))
        y = mx.array(np.stack([val[r * SEQ + 1:(r + 1) * SEQ + 1] for r in rows]))
        total += loss_fn(model, x, y).item() * len(rows)
    return total / n


def lr_at(i: int, total: int) -> float:
    if i < WARMUP:
        return PEAK_LR * (i + 1) / WARMUP
    progress = min(1.0, (i - WARMUP) / max(1, total - WARMUP))
    return PEAK_LR * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


start = time.time()
total_steps = 10**9  # set from the measured step time once warm
curve, best = [], (float("inf"), None, 0)
i = 0
while True:
    if i == 30:
        per_step = (time.time() - timed) / 20
        total_steps = int(seconds / per_step)
        print(f"{per_step * 1000:.0f} ms/step -> {total_steps} steps, {total_steps * SEQ * BATCH / len(train):.1f} epochs", flush=True)
    if i == 10:
        timed = time.time()
    if i >= total_steps or time.time() - start > seconds * 1.1:
        break
    optimizer.learning_rate = mx.array(lr_at(i, total_steps))
    loss = step(*batch())
    mx.eval(state, loss)
    if i % 50 == 0:
        curve.append({"step": i, "loss": round(loss.item(), 4), "seconds": round(time.time() - start, 1)})
    if (i % 500 == 0 and i > 0) or i == total_steps - 1:
        v = val_loss(model)
        curve[-1]["val_loss"] = round(v, 4)
        print(f"step {i} loss {loss.item():.3f} val {v:.3f} ({time.time() - start:.0f}s)", flush=True)
        if v < best[0]:
            best = (v, tree_map(lambda p: mx.array(p), model.parameters()), i)
    i += 1
elapsed = time.time() - start
last = val_loss(model)
if last <= best[0]:
    best = (last, None, i)
elif best[1] is not None:
    model.update(best[1])
mx.eval(model.parameters())
dense_val = val_loss(model)
model, qconfig = quantize_model(model, dict(config), 64, 4)
quant_val = val_loss(model)
model_dir = os.path.join(out_dir, "model")
os.makedirs(model_dir, exist_ok=True)
save_model(model_dir, model)
save_config(qconfig, os.path.join(model_dir, "config.json"))
for name in ("tokenizer.json", "tokenizer_config.json"):
    shutil.copy(os.path.join(data_dir, name), model_dir)
run = {
    "config": config, "parameters": params, "seq": SEQ, "batch": BATCH, "peak_lr": PEAK_LR,
    "steps": i, "best_step": best[2], "seconds": round(elapsed, 1), "train_tokens": len(train),
    "tokens_seen": i * SEQ * BATCH, "epochs": round(i * SEQ * BATCH / len(train), 2),
    "tokens_per_second": round(i * SEQ * BATCH / elapsed), "device": str(mx.default_device()),
    "mlx": mx.__version__, "val_tokens": len(val),
    "val_loss": round(dense_val, 4), "val_perplexity": round(math.exp(dense_val), 2),
    "val_loss_4bit": round(quant_val, 4), "val_perplexity_4bit": round(math.exp(quant_val), 2),
    "curve": curve,
}
with open(os.path.join(out_dir, "train.json"), "w") as f:
    json.dump(run, f, indent=1)
print(json.dumps({k: v for k, v in run.items() if k != "curve"}), flush=True)
