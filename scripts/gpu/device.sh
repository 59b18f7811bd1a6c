#!/usr/bin/env bash
# Runs on the lent GPU machine, in the copy of the repo: unpacks what pack.sh made and this call
# carries into /tmp/mlxb-gpu (.gpu/bun.tar.xz, .gpu/payload.tar.xz, .gpu/fixtures.tar.xz) unless that
# same file is unpacked already (a warm machine keeps /tmp), then, once Bun and the payload are both
# there, points Bun, the shim, Python and MLX at them and runs the given command in the repo root.
# The first call carries bun.tar.xz (command: bash scripts/gpu/device.sh true), the next ones the
# payload. node-llama-cpp's CUDA build (pack-llama.sh), when a bench wants it, comes in parts
# (.gpu/llama-cuda.part*, one or two per call, each with .gpu/llama-cuda.sum), kept in
# /tmp/mlxb-gpu/llama-parts until all have come, then joined into /tmp/mlxb-gpu/llama. docs/gpu.md.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BASE=/tmp/mlxb-gpu

# unpack FILE DIR: extracts FILE into DIR unless DIR/.stamp already names it.
unpack() {
  local stamp
  stamp="$(cksum < "$1")"
  [ "$(cat "$2/.stamp" 2>/dev/null)" = "$stamp" ] && return
  rm -rf "$2"
  mkdir -p "$2"
  python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1], "r:xz").extractall(sys.argv[2], filter="tar")' "$1" "$2"
  echo "$stamp" > "$2/.stamp"
}
if [ -f "$ROOT/.gpu/bun.tar.xz" ]; then unpack "$ROOT/.gpu/bun.tar.xz" "$BASE/bun"; fi
if [ -f "$ROOT/.gpu/payload.tar.xz" ]; then unpack "$ROOT/.gpu/payload.tar.xz" "$BASE/main"; fi
if [ -f "$ROOT/.gpu/fixtures.tar.xz" ]; then unpack "$ROOT/.gpu/fixtures.tar.xz" "$BASE/fixtures"; fi
if [ -f "$ROOT/.gpu/llama-cuda.sum" ]; then
  parts="$BASE/llama-parts"
  if [ "$(cat "$parts/sum" 2>/dev/null)" != "$(cat "$ROOT/.gpu/llama-cuda.sum")" ]; then
    rm -rf "$parts"
    mkdir -p "$parts"
    cp "$ROOT/.gpu/llama-cuda.sum" "$parts/sum"
  fi
  for part in "$ROOT"/.gpu/llama-cuda.part*; do [ -f "$part" ] && cp "$part" "$parts/"; done
  read -r sum size count < "$parts/sum"
  if [ "$(cat "$BASE/llama/.stamp" 2>/dev/null)" != "$sum $size" ]; then
    if [ "$(ls "$parts" | grep -c '^llama-cuda.part')" = "$count" ] && [ "$(cat "$parts"/llama-cuda.part* | cksum)" = "$sum $size" ]; then
      rm -rf "$BASE/llama"
      mkdir -p "$BASE/llama"
      cat "$parts"/llama-cuda.part* | xz -d | tar -x -C "$BASE/llama"
      echo "$sum $size" > "$BASE/llama/.stamp"
    else
      echo "device.sh: node-llama-cpp parts so far: $(ls "$parts" | grep '^llama-cuda.part' | tr '\n' ' ')(of $count)"
    fi
  fi
fi
if [ -f "$BASE/llama/.stamp" ]; then
  export MLXB_LLAMA_CPP_DIR="$BASE/llama" MLXB_LLAMA_CPP_LIBS=/usr/local/cuda/lib64
  # llama.cpp's CUDA kernels are PTX, compiled by the driver on first use: cached across calls.
  export CUDA_CACHE_PATH="$BASE/cuda-cache" CUDA_CACHE_MAXSIZE=4294967296
fi
if [ ! -f "$BASE/bun/.stamp" ] || [ ! -f "$BASE/main/.stamp" ]; then
  echo "device.sh: unpacked so far: $(ls "$BASE" 2>/dev/null | tr '\n' ' ')(needs bun and main; carry the missing part)"
  [ "$*" = true ] && exit 0 || exit 1
fi
GPU="$BASE/main"

# libmlx.so looks for the CUDA libraries in site/nvidia (its RPATH), and MLX's JIT for the CUDA
# headers in site/nvidia/cu13/include: the machine's PyTorch has both but crt/, which the payload
# carries (pack.sh). site/nvidia is built of links to PyTorch's entries, with crt/ added.
NVIDIA="$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(os.path.dirname(torch.__file__)), "nvidia"))')"
rm -rf "$GPU/site/nvidia"
mkdir -p "$GPU/site/nvidia/cu13/include"
for entry in "$NVIDIA"/*; do [ "$(basename "$entry")" = cu13 ] || ln -s "$entry" "$GPU/site/nvidia/"; done
for entry in "$NVIDIA"/cu13/*; do [ "$(basename "$entry")" = include ] || ln -s "$entry" "$GPU/site/nvidia/cu13/"; done
for entry in "$NVIDIA"/cu13/include/*; do ln -s "$entry" "$GPU/site/nvidia/cu13/include/"; done
[ -e "$GPU/site/nvidia/cu13/include/crt" ] || ln -s "$GPU/site/cuda-crt/crt" "$GPU/site/nvidia/cu13/include/crt"

ln -sfn "$GPU/repo/node_modules" "$ROOT/node_modules"
mkdir -p "$ROOT/.cache/models" "$ROOT/test/fixtures"
if [ -d "$BASE/fixtures/data" ]; then ln -sfn "$BASE/fixtures/data" "$ROOT/test/fixtures/data"; fi

export PATH="$BASE/bun/bin:$PATH"
export PYTHONPATH="$GPU/site${PYTHONPATH:+:$PYTHONPATH}"
export MLXB_PYTHON="$(command -v python3)"
export MLXB_LIBRARY="$GPU/shim/lib/libmlxb.so"
export MLXB_KERNEL_TIMES="$GPU/shim/lib/libkernel_times.so"
export LD_LIBRARY_PATH="$GPU/site/mlx/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
if [ -z "${CUDA_HOME:-}" ] && [ -d /usr/local/cuda ]; then export CUDA_HOME=/usr/local/cuda; fi
cd "$ROOT"
exec "$@"
