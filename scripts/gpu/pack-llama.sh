#!/usr/bin/env bash
# Packs node-llama-cpp with its CUDA 13 prebuilt (@node-llama-cpp/linux-x64-cuda) for the lent GPU
# machine, where `bun run bench decode` runs it as a peer (docs/gpu.md). Its libggml-cuda.so has for
# sm_90 only compute_90 PTX written by CUDA 13.1, which the machine's driver (CUDA 13.0) refuses:
# retarget_ptx.py keeps that PTX alone in each fat binary with its ISA version lowered to 9.0
# (MLXB_GPU_PTX), the other architectures' code zeroed (124 -> ~22 MB xz'd). The xz'd tarball is cut
# into parts of 12 MiB, .gpu/llama-cuda.part0..N (a part fits a call beside the payload and the
# working tree, ~21 MB with the default model: 64 MiB a call), carried while the machine is warm,
# with .gpu/llama-cuda.sum (the whole file's checksum and its part count); device.sh joins them once
# all are there. Left out: the other platforms' binaries and llama.cpp's source bundle (a build
# from source is never asked for). Env: MLXB_GPU_SM (default 90), MLXB_GPU_PTX (default 9.0).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
STAGE="$ROOT/.cache/gpu/llama-stage"
OUT="$ROOT/.gpu/llama-cuda"
log() { printf '[gpu-pack-llama] %s\n' "$*" >&2; }

# node-llama-cpp as the CPU bench installs it (bench/peer.ts), then a copy without what the GPU
# machine does not need.
DIR="$(cd "$ROOT" && "$ROOT/.cache/bin/bun" -e 'import { llamaCppDir } from "./bench/peer.ts"; console.log(llamaCppDir())')"
log "staging $DIR in $STAGE"
rm -rf "$STAGE"
mkdir -p "$STAGE"
cp -r "$DIR/node_modules" "$STAGE/node_modules"
for platform in "$STAGE"/node_modules/@node-llama-cpp/*; do
  [ "$(basename "$platform")" = linux-x64-cuda ] || rm -rf "$platform"
done
rm -f "$STAGE/node_modules/node-llama-cpp/llama/gitRelease.bundle"
log "retargeting libggml-cuda.so's PTX (a few minutes)"
python3 "$ROOT/scripts/gpu/retarget_ptx.py" "$STAGE"/node_modules/@node-llama-cpp/linux-x64-cuda/bins/*/libggml-cuda.so \
  "${MLXB_GPU_SM:-90}" "${MLXB_GPU_PTX:-9.0}"

log "compressing (xz -9, a few minutes)"
mkdir -p "$ROOT/.gpu"
rm -f "$OUT".part* "$OUT.sum"
tar -C "$STAGE" -cf - node_modules | xz -T0 -9 > "$OUT.tar.xz"
split -b 12M -d -a 1 "$OUT.tar.xz" "$OUT.part"
echo "$(cksum < "$OUT.tar.xz") $(ls "$OUT".part* | wc -l)" > "$OUT.sum"
rm "$OUT.tar.xz"
log "$(cat "$OUT.sum" | awk '{ print $3 }') parts: $(ls "$OUT".part* | tr '\n' ' ')"
