"""Times variants of the decode attention kernel (shim/ext/attention_cuda.cpp) alone, outside MLX, as
qmv_lab.py does the matvec's: compiled with NVRTC as the shim compiles it, launched for one query
position over LAYERS distinct KV caches (so that L2 does not hold them; LAB_DISTINCT fewer) in a
CUDA graph, the step's key and value written into the cache as in a decode step; µs a call as CUPTI
gives it.

usage (on the GPU machine, its PyTorch; no payload): python3 scripts/gpu/attention_lab.py CASE ...
  CASE: name:keys:MACROS  e.g. 8b:512:D=128,G=4,KV=8  (bfloat16; VECTOR=1 unless given)
  KV: the KV heads (G query heads each); CHUNK and TARGET: the fewest keys a chunk and the blocks
  aimed at (the shim's MLXB_ATTENTION_CHUNKS, default 32 and 512); MERGE=0 leaves the last block's
  merge out (a timing trial: the output is not written). Other macros go to the kernel.
"""
import ctypes
import math
import os
import re
import sys

import torch

from qmv_lab import DISTINCT, EXT, LAYERS, compile_kernel, launch_kernel, macros_of, raw, run_cases, time_layers

MAX_CHUNKS = 128  # the kernel's


class Params(ctypes.Structure):
    _fields_ = [
        ("q_strides", ctypes.c_longlong * 2),
        ("k_strides", ctypes.c_longlong * 3),
        ("v_strides", ctypes.c_longlong * 3),
        ("mask_strides", ctypes.c_longlong * 2),
        ("k_new_strides", ctypes.c_longlong * 2),
        ("v_new_strides", ctypes.c_longlong * 2),
        ("kv_heads", ctypes.c_int),
        ("keys", ctypes.c_int),
        ("chunk_keys", ctypes.c_int),
        ("chunks", ctypes.c_int),
        ("at", ctypes.c_int),
        ("scale_log2", ctypes.c_float),
    ]


def run_case(case: str) -> None:
    label, keys, macros = case.split(":")
    keys = int(keys)
    m = macros_of(macros, {"D": "128", "G": "4", "VECTOR": "1"})
    kv_heads, min_chunk, target = int(m.pop("KV", "8")), int(m.pop("CHUNK", "32")), int(m.pop("TARGET", "512"))
    d, g = int(m["D"]), int(m["G"])
    defines = "".join(f"#define {key} {value}\n" for key, value in m.items())
    source = raw(os.path.join(EXT, "cuda.h"), "DEPENDENT_LAUNCH_SOURCE") + defines + "#define DTYPE 1\n" + raw(os.path.join(EXT, "cuda.h"))
    source += re.search(r'SOURCE = R"CUDA\((.*?)\)CUDA"', open(os.path.join(EXT, "attention_cuda.cpp")).read(), re.S)[1]
    function = compile_kernel(source, "mlxb_attention")
    # The chunking as the shim's set_keys makes it.
    chunks = max(1, min(max(1, min(target // kv_heads, MAX_CHUNKS)), (keys + min_chunk - 1) // min_chunk))
    chunk_keys = (keys + chunks - 1) // chunks
    chunks = (keys + chunk_keys - 1) // chunk_keys
    q_heads = kv_heads * g
    dev, bf16 = torch.device("cuda"), torch.bfloat16
    caches = [(torch.randn(1, kv_heads, keys, d, device=dev).to(bf16), torch.randn(1, kv_heads, keys, d, device=dev).to(bf16)) for _ in range(DISTINCT)]
    q = torch.randn(1, q_heads, 1, d, device=dev).to(bf16)
    k_new = torch.randn(1, kv_heads, 1, d, device=dev).to(bf16)
    v_new = torch.randn(1, kv_heads, 1, d, device=dev).to(bf16)
    out = torch.zeros(1, q_heads, 1, d, device=dev, dtype=bf16)
    part_o = torch.zeros(chunks * q_heads * d, device=dev)
    part_ml = torch.zeros(chunks * q_heads * 2, device=dev)
    counters = torch.zeros(kv_heads, device=dev, dtype=torch.int32)
    p = Params()
    p.q_strides[:] = [q_heads * d, d]
    p.k_strides[:] = [kv_heads * keys * d, keys * d, d]
    p.v_strides[:] = [kv_heads * keys * d, keys * d, d]
    p.mask_strides[:] = [0, 0]
    p.k_new_strides[:] = [kv_heads * d, d]
    p.v_new_strides[:] = [kv_heads * d, d]
    p.kv_heads, p.keys, p.chunk_keys, p.chunks, p.at = kv_heads, keys, chunk_keys, chunks, keys - 1
    p.scale_log2 = 1 / math.sqrt(d) * 1.4426950408889634
    keep: list = []

    def launch(layer: int) -> None:
        k, v = caches[layer % DISTINCT]
        pointers = [q, k, v, None, part_o, part_ml, counters, out, k_new, v_new, k, v]
        values = [ctypes.c_void_p(t.data_ptr() if t is not None else 0) for t in pointers] + [p]
        launch_kernel(function, (chunks, kv_heads, 1), 128, 0, values, keep)

    best = time_layers(launch)
    read = 2 * kv_heads * keys * d * 2
    print(f"{label:<20} keys {keys:>6} chunks {chunks:>4} x {kv_heads} heads  {best:7.2f} µs  {read / best / 1e6:5.2f} TB/s  [{macros}]", flush=True)
    del caches


if __name__ == "__main__":
    sys.exit(run_cases(run_case, sys.argv[1:]))
