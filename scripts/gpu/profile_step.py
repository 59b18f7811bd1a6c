"""Where a decode step's GPU time goes: mlx-lm's greedy decode loop on a checkpoint, run under the
PyTorch profiler (CUPTI sees every kernel of the process, MLX's included), reporting per step the
wall time, the kernels launched, their summed GPU time, and the kernels that take the most time.
Variant "fused" runs the same model with q|k|v and gate|up as one quantized matmul each (weights
concatenated along the output axis) to show what fused projections save on the GPU.
For the lent GPU machine (its PyTorch has the profiler): bash scripts/gpu/device.sh python3
scripts/gpu/profile_step.py DIR [STEPS].
Usage: profile_step.py DIR [STEPS]"""
import collections
import json
import sys
import time

import mlx.core as mx
import mlx.nn as nn
from mlx_lm import load
from mlx_lm.models.cache import make_prompt_cache

path = sys.argv[1]
steps = int(sys.argv[2]) if len(sys.argv) > 2 else 32


def fuse(layers):
    """One QuantizedLinear for several with the same input (outputs split after)."""
    first = layers[0]
    fused = nn.QuantizedLinear(first.group_size, 1, bias=False, group_size=first.group_size, bits=first.bits, mode=first.mode)
    fused.weight = mx.concatenate([l.weight for l in layers])
    fused.scales = mx.concatenate([l.scales for l in layers])
    if "biases" in first:
        fused.biases = mx.concatenate([l.biases for l in layers])
    sizes = [l.weight.shape[0] for l in layers]
    return fused, [sum(sizes[: i + 1]) for i in range(len(sizes) - 1)]


def fused_model(model):
    for layer in model.layers:
        a, m = layer.self_attn, layer.mlp
        a.qkv, a.qkv_split = fuse([a.q_proj, a.k_proj, a.v_proj])
        m.gate_up, m.gate_up_split = fuse([m.gate_proj, m.up_proj])
        del a.q_proj, a.k_proj, a.v_proj, m.gate_proj, m.up_proj

        def attention(x, mask=None, cache=None, a=a):
            B, L, _ = x.shape
            q, k, v = mx.split(a.qkv(x), a.qkv_split, axis=-1)
            q = a.q_norm(q.reshape(B, L, a.n_heads, -1)).transpose(0, 2, 1, 3)
            k = a.k_norm(k.reshape(B, L, a.n_kv_heads, -1)).transpose(0, 2, 1, 3)
            v = v.reshape(B, L, a.n_kv_heads, -1).transpose(0, 2, 1, 3)
            q, k = a.rope(q, offset=cache.offset), a.rope(k, offset=cache.offset)
            k, v = cache.update_and_fetch(k, v)
            o = mx.fast.scaled_dot_product_attention(q, k, v, scale=a.scale, mask=mask)
            return a.o_proj(o.transpose(0, 2, 1, 3).reshape(B, L, -1))

        def mlp(x, m=m):
            g, u = mx.split(m.gate_up(x), m.gate_up_split, axis=-1)
            return m.down_proj(nn.silu(g) * u)

        layer.self_attn = attention
        layer.mlp = mlp
    mx.eval(model.parameters())
    return model


def run(model, label):
    import torch
    from torch.profiler import ProfilerActivity, profile

    def step(y, cache):
        logits = model(y[None], cache=cache)[:, -1, :]
        return mx.argmax(logits, axis=-1)

    prompt = mx.array([(i * 37) % 1000 for i in range(128)])
    cache = make_prompt_cache(model)
    y = step(prompt, cache)
    mx.async_eval(y)
    for _ in range(8):
        nxt = step(y, cache)
        mx.async_eval(nxt)
        y.item()
        y = nxt
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        t0 = time.perf_counter()
        for _ in range(steps):
            nxt = step(y, cache)
            mx.async_eval(nxt)
            y.item()
            y = nxt
        wall = (time.perf_counter() - t0) / steps
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    by_name = collections.defaultdict(lambda: [0, 0.0])
    for e in kernels:
        by_name[e.name][0] += 1
        by_name[e.name][1] += e.device_time
    busy = sum(e.device_time for e in kernels) / steps
    top = sorted(by_name.items(), key=lambda kv: -kv[1][1])[:14]
    print(json.dumps({
        "variant": label, "wallMsPerStep": 1e3 * wall, "kernelsPerStep": len(kernels) / steps,
        "kernelMsPerStep": busy / 1e3,
        "top": [{"kernel": n[:90], "perStep": c / steps, "meanUs": t / c, "msPerStep": t / steps / 1e3} for n, (c, t) in top],
    }, indent=1))


model, _ = load(path)
run(model, "mlx-lm")
run(fused_model(model), "fused")
