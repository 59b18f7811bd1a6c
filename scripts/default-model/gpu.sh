#!/usr/bin/env bash
# Trains the default model on the lent GPU (README, "The default model").
#   here:   bash scripts/default-model/gpu.sh pack CORPUS_DATA_DIR
#           -> .gpu/train.tar.xz: MLX's CUDA build + mlx-lm as scripts/gpu/pack.sh stages them
#              (run that first), and prepare.py's token files
#   device: a run carrying [".gpu/train.tar.xz"] with the command
#           bash scripts/default-model/gpu.sh train SECONDS
#           -> $OUT/model (the 4-bit checkpoint) and $OUT/train.json
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
case "${1:-}" in
  pack)
    STAGE="$ROOT/.cache/gpu/stage/site"
    [ -d "$STAGE/mlx" ] || { echo "gpu.sh: run scripts/gpu/pack.sh first (it stages $STAGE)" >&2; exit 1; }
    TMP="$(mktemp -d)"
    mkdir -p "$TMP/data" "$ROOT/.gpu"
    cp "$2"/{train.bin,val.bin,tokenizer.json,tokenizer_config.json} "$TMP/data/"
    tar -C "$TMP" -cf - data -C "$STAGE/.." site | xz -T0 -9 > "$ROOT/.gpu/train.tar.xz"
    rm -rf "$TMP"
    ls -la "$ROOT/.gpu/train.tar.xz"
    ;;
  train)
    BASE=/tmp/mlxb-train
    rm -rf "$BASE" && mkdir -p "$BASE"
    python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1], "r:xz").extractall(sys.argv[2], filter="tar")' "$ROOT/.gpu/train.tar.xz" "$BASE"
    # libmlx.so finds the CUDA libraries in site/../nvidia (its RPATH): the machine's PyTorch has them.
    ln -sfn "$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(os.path.dirname(torch.__file__)), "nvidia"))')" "$BASE/site/nvidia"
    export PYTHONPATH="$BASE/site" LD_LIBRARY_PATH="$BASE/site/mlx/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    python3 "$ROOT/scripts/default-model/train.py" "$BASE/data" "${OUT:-$BASE/out}" "$2"
    # Files that come back from the device are size-limited: the weights travel in 4 MiB parts
    # (join here: cat model.safetensors.part.* > model.safetensors).
    (cd "${OUT:-$BASE/out}/model" && split -b 4M -d model.safetensors model.safetensors.part. && sha256sum model.safetensors > model.safetensors.sha256 && rm model.safetensors)
    ;;
  *) echo "usage: gpu.sh pack DATA_DIR | gpu.sh train SECONDS" >&2; exit 2 ;;
esac
