#!/usr/bin/env bash
# Idempotent bootstrap: Bun (npm), Zig (PyPI ziglang), MLX (PyPI mlx-cpu, same version as the
# headers it ships), a Python venv holding the oracles (mlx, mlx-lm), then `zig build` of the shim.
# Everything lands under .cache/ (ignored). A second run only checks stamps and rebuilds the shim
# if its sources changed (zig's own cache makes that cheap).
#
# MLXB_MLX=cuda13 installs MLX's CUDA build (PyPI mlx-cuda-13 and the NVIDIA libraries it needs)
# instead of mlx-cpu, for a Linux machine with an NVIDIA GPU and driver; the shim is then built
# against that libmlx.so and MLX runs on the GPU by default. Default: MLXB_MLX=cpu.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="$ROOT/.cache"
source "$ROOT/scripts/versions.sh"
TARGET="${MLXB_MLX:-cpu}"
case "$TARGET" in
  cpu) MLX_WHEEL=mlx-cpu ;;
  cuda13) MLX_WHEEL=mlx-cuda-13 ;;
  *) echo "setup: MLXB_MLX must be cpu or cuda13 (got '$TARGET')" >&2; exit 1 ;;
esac
mkdir -p "$CACHE"

log() { printf '[setup] %s\n' "$*" >&2; }

# 1. Python venv: oracles + the libmlx.so that the shim links against + zig.
VENV="$CACHE/venv"
PY_STAMP="$VENV/.stamp-$TARGET-$MLX_VERSION-$MLX_LM_VERSION-$ZIG_VERSION-$GGUF_VERSION-$CLANG_FORMAT_VERSION"
if [ ! -f "$PY_STAMP" ]; then
  log "python venv: mlx==$MLX_VERSION $MLX_WHEEL==$MLX_VERSION mlx-lm==$MLX_LM_VERSION ziglang==$ZIG_VERSION gguf==$GGUF_VERSION clang-format==$CLANG_FORMAT_VERSION"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check --upgrade pip
  # Both wheels install mlx/lib/libmlx.so: a target switch removes the other one first.
  "$VENV/bin/pip" uninstall -q -y mlx-cpu mlx-cuda-13 >/dev/null 2>&1 || true
  "$VENV/bin/pip" install -q --disable-pip-version-check \
    "mlx==$MLX_VERSION" "$MLX_WHEEL==$MLX_VERSION" "mlx-lm==$MLX_LM_VERSION" "ziglang==$ZIG_VERSION" "gguf==$GGUF_VERSION" \
    "clang-format==$CLANG_FORMAT_VERSION" numpy
  rm -f "$VENV"/.stamp-*
  touch "$PY_STAMP"
fi
SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
MLX_PREFIX="$SITE/mlx"
[ -f "$MLX_PREFIX/lib/libmlx.so" ] || { echo "setup: libmlx.so missing under $MLX_PREFIX" >&2; exit 1; }
[ -f "$MLX_PREFIX/include/mlx/mlx.h" ] || { echo "setup: MLX headers missing under $MLX_PREFIX" >&2; exit 1; }
ln -sfn "$MLX_PREFIX" "$CACHE/mlx"

# 1b. The mlx-cpu wheel bundles the reference (netlib) BLAS: ~5 GFLOP/s for sgemm on this machine.
# Debian's OpenBLAS is ABI-compatible; point the wheel's bundled sonames at it (~165 GFLOP/s). This
# changes the venv only, and Python MLX (oracle, benchmark peer) and mlx-bun share that libmlx.so.
# MLXB_REFERENCE_BLAS=1 keeps the bundled BLAS.
OPENBLAS=/usr/lib/x86_64-linux-gnu/openblas-pthread
LIBS="$SITE/$(echo "$MLX_WHEEL" | tr - _).libs"
if [ "${MLXB_REFERENCE_BLAS:-0}" != 1 ]; then
  if [ ! -f "$OPENBLAS/libblas.so.3" ]; then
    log "OpenBLAS from Debian (libopenblas0-pthread)"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libopenblas0-pthread; } >/dev/null 2>&1 ||
      log "warning: could not install OpenBLAS; MLX keeps its bundled reference BLAS (slow matmul)"
  fi
  if [ -f "$OPENBLAS/libblas.so.3" ]; then
    for pair in "libblas-*.so.*:libblas.so.3" "liblapack-*.so.*:liblapack.so.3"; do
      for bundled in $LIBS/${pair%%:*}; do
        case "$bundled" in *.reference*) continue ;; esac # the bundled library, set aside earlier
        [ -e "$bundled" ] || continue
        [ -L "$bundled" ] || mv "$bundled" "$bundled.reference"
        ln -sfn "$OPENBLAS/${pair##*:}" "$bundled"
      done
    done
  fi
fi

# 2. Bun from npm (the package carries the binary in an optional dependency).
BUN_DIR="$CACHE/bun"
if [ ! -x "$BUN_DIR/node_modules/.bin/bun" ] || [ ! -f "$BUN_DIR/.stamp-$BUN_VERSION" ]; then
  log "bun@$BUN_VERSION from npm"
  mkdir -p "$BUN_DIR"
  npm install --silent --no-audit --no-fund --prefix "$BUN_DIR" "bun@$BUN_VERSION"
  touch "$BUN_DIR/.stamp-$BUN_VERSION"
fi
mkdir -p "$CACHE/bin"
ln -sfn "$BUN_DIR/node_modules/.bin/bun" "$CACHE/bin/bun"
ln -sfn "$BUN_DIR/node_modules/.bin/bunx" "$CACHE/bin/bunx"
cat > "$CACHE/bin/zig" <<ZIG
#!/usr/bin/env bash
exec "$VENV/bin/python" -m ziglang "\$@"
ZIG
chmod +x "$CACHE/bin/zig"
export PATH="$CACHE/bin:$PATH"

# 3. JS dependencies.
if [ ! -f "$ROOT/node_modules/.stamp" ] || [ "$ROOT/package.json" -nt "$ROOT/node_modules/.stamp" ]; then
  log "bun install"
  (cd "$ROOT" && bun install --silent)
  touch "$ROOT/node_modules/.stamp"
fi

# 5. The shim.
log "zig build (shim against $MLX_PREFIX)"
(cd "$ROOT" && ZIG_GLOBAL_CACHE_DIR="$CACHE/zig-global" zig build -Doptimize=ReleaseFast -Dmlx="$MLX_PREFIX")
