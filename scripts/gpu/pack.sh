#!/usr/bin/env bash
# Packs what a run on the lent GPU machine needs into .gpu/payload.tar.xz (docs/gpu.md). That
# machine has no network and takes 64 MiB of files per call, so the payload holds, xz'd:
#   site/   MLX's CUDA build (PyPI mlx-cuda-13, the version setup.sh pins) with libmlx.so stripped of
#           its symbol table and its machine code for other GPU architectures zeroed
#           (prune_fatbin.py; default sm_90, the H100/H200), plus Python mlx, mlx-lm and gguf for the
#           machine's python3 (the benchmark peer and the oracle of a few tests)
#   bin/    Bun;   shim/  libmlxb.so built here against that libmlx.so
#   repo/   node_modules (ignored by git)
# A call carries the tracked tree too (~20 MiB with default-model/), so this goes in two parts, each
# carried by its own call while the machine is still warm (device.sh unpacks what a call carries):
#   .gpu/bun.tar.xz      bin/ (Bun, ~38 MiB)
#   .gpu/payload.tar.xz  everything else (~22 MiB)
# The oracle fixtures (for `bun test` there) go to .gpu/fixtures.tar.xz, carried beside the payload.
# The CUDA libraries themselves (cuBLAS, cuDNN, NVRTC, NCCL, ...) are the machine's, from its PyTorch.
# Env: MLXB_GPU_SM (default 90), MLXB_GPU_PYTHON (the machine's python3 version, default 3.12),
# MLXB_GPU_CUDA_CRT (the nvidia-cuda-crt version matching the machine's CUDA, default 13.0.*).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
source "$ROOT/scripts/versions.sh"
SM="${MLXB_GPU_SM:-90}"
PYVER="${MLXB_GPU_PYTHON:-3.12}"
CUDA_CRT="${MLXB_GPU_CUDA_CRT:-13.0.*}" # the machine's CUDA (its PyTorch: 2.11.0+cu130)
CACHE="$ROOT/.cache"
WHEELS="$CACHE/gpu/wheels"
STAGE="$CACHE/gpu/stage"
OUT="$ROOT/.gpu/payload.tar.xz"
BUN_OUT="$ROOT/.gpu/bun.tar.xz"
FIXTURES="$ROOT/.gpu/fixtures.tar.xz"
LIMIT=$((40 * 2 ** 20)) # each part: leaves room under the 64 MiB per call for the tracked tree
log() { printf '[gpu-pack] %s\n' "$*" >&2; }
command -v strip >/dev/null || { echo "gpu-pack: needs strip (binutils)" >&2; exit 1; }

bash "$ROOT/scripts/setup.sh"
bash "$ROOT/scripts/fixtures.sh"
export PATH="$CACHE/bin:$PATH"

log "wheels: mlx-cuda-13, mlx (cp$PYVER), mlx-lm, gguf (bench decode's GGUF files for llama.cpp)"
mkdir -p "$WHEELS"
"$CACHE/venv/bin/pip" download -q --disable-pip-version-check --no-deps --only-binary=:all: \
  --python-version "$PYVER" --implementation cp --platform manylinux_2_35_x86_64 -d "$WHEELS" \
  "mlx-cuda-13==$MLX_VERSION" "mlx==$MLX_VERSION" "mlx-lm==$MLX_LM_VERSION" "gguf==$GGUF_VERSION"

log "staging in $STAGE"
rm -rf "$STAGE"
mkdir -p "$STAGE/site" "$STAGE/bin" "$STAGE/repo"
for wheel in "mlx_cuda_13-$MLX_VERSION-"*.whl "mlx-$MLX_VERSION-cp${PYVER/./}-"*.whl "mlx_lm-$MLX_LM_VERSION-"*.whl "gguf-$GGUF_VERSION-"*.whl; do
  unzip -q -o "$WHEELS"/$wheel -d "$STAGE/site"
done
LIB="$STAGE/site/mlx/lib/libmlx.so"
strip --strip-unneeded "$LIB"
"$CACHE/venv/bin/python" "$ROOT/scripts/gpu/prune_fatbin.py" "$LIB" "$SM"

# MLX's JIT (quantized matmuls of some shapes) includes crt/ headers from site/nvidia/cu13/include;
# the machine's PyTorch ships the CUDA runtime headers there but not nvidia-cuda-crt's: its CUDA
# version's crt/ goes in the payload (device.sh links it in).
log "CUDA crt headers (nvidia-cuda-crt==$CUDA_CRT)"
rm -rf "$CACHE/gpu/crt"
"$CACHE/venv/bin/pip" download -q --disable-pip-version-check --no-deps --only-binary=:all: \
  --python-version "$PYVER" --implementation cp --platform manylinux_2_17_x86_64 -d "$CACHE/gpu/crt" "nvidia-cuda-crt==$CUDA_CRT"
mkdir -p "$STAGE/site/cuda-crt"
unzip -q -o "$CACHE"/gpu/crt/nvidia_cuda_crt-*.whl 'nvidia/cu13/include/crt/*' -d "$STAGE/cuda-crt-wheel"
mv "$STAGE/cuda-crt-wheel/nvidia/cu13/include/crt" "$STAGE/site/cuda-crt/crt"
rm -rf "$STAGE/cuda-crt-wheel"

# The kernels our shim compiles at run time (NVRTC), compiled here first: a source that does not
# compile would otherwise be found on the GPU machine (qmv_cuda_source.h needs its own defines).
log "NVRTC check of shim/ext's kernel sources (nvidia-cuda-nvrtc==$CUDA_CRT)"
rm -rf "$CACHE/gpu/nvrtc"
"$CACHE/venv/bin/pip" download -q --disable-pip-version-check --no-deps --only-binary=:all: \
  --platform manylinux_2_12_x86_64 -d "$CACHE/gpu/nvrtc" "nvidia-cuda-nvrtc==$CUDA_CRT"
unzip -q -o "$CACHE"/gpu/nvrtc/nvidia_cuda_nvrtc-*.whl 'nvidia/cu13/lib/*' -d "$CACHE/gpu/nvrtc"
NVRTC_LIB="$CACHE/gpu/nvrtc/nvidia/cu13/lib"
LD_LIBRARY_PATH="$NVRTC_LIB" python3 "$ROOT/scripts/gpu/nvrtc_check.py" "$NVRTC_LIB/libnvrtc.so.13" \
  "$ROOT/shim/ext/kv_cuda.cpp" "$ROOT/shim/ext/norm_rope_cuda.cpp" "$ROOT/shim/ext/sample_cuda.cpp" \
  "$ROOT/shim/ext/attention_cuda.cpp:D=128,G=4,VECTOR=1" "$ROOT/shim/ext/attention_cuda.cpp:D=64,G=1,VECTOR=1" "$ROOT/shim/ext/attention_cuda.cpp:D=128,G=8,VECTOR=0" \
  "$ROOT/shim/ext/qmv_cuda_source.h:GROUP=64,ROWS=1,R=4,U=1,WARPS=4,SPLIT=4,ADD=1" "$ROOT/shim/ext/qmv_cuda_source.h:GROUP=32,ROWS=8,R=1,U=2,WARPS=4,SPLIT=1,ADD=0" \
  "$ROOT/shim/ext/qmv_cuda_source.h:GROUP=64,ROWS=32,R=1,U=1,WARPS=4,SPLIT=1,ADD=1" \
  "$ROOT/shim/ext/qmv_cuda_source.h:GROUP=64,ROWS=1,R=16,U=2,WARPS=8,SPLIT=1,MMA=1,ADD=1" "$ROOT/shim/ext/qmv_cuda_source.h:GROUP=32,ROWS=4,R=16,U=1,WARPS=16,SPLIT=8,MMA=1,ADD=0" \
  "$ROOT/shim/ext/qmv_cuda_source.h:GROUP=64,ROWS=1,R=16,U=3,WARPS=16,SPLIT=8,MMA=1,ADD=1" \
  "$ROOT/shim/ext/qmv_cuda_source.h:GROUP=128,ROWS=8,R=16,U=2,WARPS=8,SPLIT=1,MMA=1,ADD=0"

log "shim against the CUDA libmlx.so"
(cd "$ROOT" && ZIG_GLOBAL_CACHE_DIR="$CACHE/zig-global" zig build -Doptimize=ReleaseFast -Dmlx="$STAGE/site/mlx" -Dcuda=true --prefix "$STAGE/shim")

# The kernel-time profiler (scripts/gpu/kernel_times.cpp, used by profile-step.ts), against
# nvidia-cuda-cupti's headers and the CUDA runtime's; it finds libcupti.so.13 in site/nvidia on the
# machine (PyTorch's, linked there by device.sh).
log "kernel_times profiler (nvidia-cuda-cupti, nvidia-cuda-runtime $CUDA_CRT headers)"
CUPTI="$CACHE/gpu/cupti"
if [ ! -f "$CUPTI/nvidia/cu13/include/cupti.h" ] || [ ! -f "$CUPTI/nvidia/cu13/include/cuda.h" ]; then
  rm -rf "$CUPTI"
  "$CACHE/venv/bin/pip" download -q --disable-pip-version-check --no-deps --only-binary=:all: -d "$CUPTI" \
    "nvidia-cuda-cupti==$CUDA_CRT" "nvidia-cuda-runtime==$CUDA_CRT"
  for wheel in "$CUPTI"/*.whl; do unzip -q -o "$wheel" 'nvidia/cu13/include/*' 'nvidia/cu13/lib/libcupti*' -d "$CUPTI" || true; done
fi
zig c++ -shared -fPIC -O2 -target x86_64-linux-gnu.2.28 -I "$CUPTI/nvidia/cu13/include" -I "$STAGE/site/cuda-crt" \
  -Wl,-rpath,'$ORIGIN/../../site/nvidia/cu13/lib' "$ROOT/scripts/gpu/kernel_times.cpp" \
  "$CUPTI/nvidia/cu13/lib/libcupti.so.13" -o "$STAGE/shim/lib/libkernel_times.so"

cp "$(readlink -f "$CACHE/bin/bun")" "$STAGE/bin/bun"
# The runtime's node_modules: the type checker, type packages and the formatter (~140 MB) stay here.
cp -r "$ROOT/node_modules" "$STAGE/repo/node_modules"
rm -rf "$STAGE/repo/node_modules/typescript" "$STAGE/repo/node_modules/@typescript" "$STAGE/repo/node_modules/.bin/tsc" \
  "$STAGE/repo/node_modules/bun-types" "$STAGE/repo/node_modules/@types" "$STAGE/repo/node_modules/undici-types" \
  "$STAGE/repo/node_modules/@biomejs" "$STAGE/repo/node_modules/.bin/biome"

log "compressing"
mkdir -p "$(dirname "$OUT")"
tar -C "$STAGE" -cf - bin | xz -T0 -9 > "$BUN_OUT.tmp"
mv "$BUN_OUT.tmp" "$BUN_OUT"
tar -C "$STAGE" -cf - --exclude=./bin . | xz -T0 -9 > "$OUT.tmp"
mv "$OUT.tmp" "$OUT"
# The GGUF test files (~110 MB) stay here: a call carries 64 MiB (test.sh leaves gguf.test.ts out).
tar -C "$ROOT/test/fixtures" --exclude='*.gguf' -cf - data | xz -T0 -9 > "$FIXTURES.tmp"
mv "$FIXTURES.tmp" "$FIXTURES"
log "$FIXTURES: $(($(stat -c %s "$FIXTURES") / 2 ** 20)) MiB"
for part in "$BUN_OUT" "$OUT"; do
  size=$(stat -c %s "$part")
  log "$part: $((size / 2 ** 20)) MiB"
  if [ "$size" -gt "$LIMIT" ]; then
    echo "gpu-pack: $part is $size bytes, over the $LIMIT that leave room for the tree in a 64 MiB call" >&2
    exit 1
  fi
done
