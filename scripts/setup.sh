#!/usr/bin/env bash
# Idempotent bootstrap: Bun (npm), Zig (PyPI ziglang), MLX (PyPI mlx-cpu, same version as the
# headers it ships), a Python venv holding the oracles (mlx, mlx-lm), then `zig build` of the shim.
# Everything lands under .cache/ (ignored). A second run only checks stamps and rebuilds the shim
# if its sources changed (zig's own cache makes that cheap).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="$ROOT/.cache"
MLX_VERSION=0.32.4
MLX_LM_VERSION=0.32.2
ZIG_VERSION=0.17.1
BUN_VERSION=1.4.4
mkdir -p "$CACHE"

log() { printf '[setup] %s\n' "$*" >&2; }

# 1. Python venv: oracles + the libmlx.so that the shim links against + zig.
VENV="$CACHE/venv"
PY_STAMP="$VENV/.stamp-$MLX_VERSION-$MLX_LM_VERSION-$ZIG_VERSION"
if [ ! -f "$PY_STAMP" ]; then
  log "python venv: mlx[cpu]==$MLX_VERSION mlx-lm==$MLX_LM_VERSION ziglang==$ZIG_VERSION"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check --upgrade pip
  "$VENV/bin/pip" install -q --disable-pip-version-check \
    "mlx==$MLX_VERSION" "mlx-cpu==$MLX_VERSION" "mlx-lm==$MLX_LM_VERSION" "ziglang==$ZIG_VERSION" numpy
  touch "$PY_STAMP"
fi
SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
MLX_PREFIX="$SITE/mlx"
[ -f "$MLX_PREFIX/lib/libmlx.so" ] || { echo "setup: libmlx.so missing under $MLX_PREFIX" >&2; exit 1; }
[ -f "$MLX_PREFIX/include/mlx/mlx.h" ] || { echo "setup: MLX headers missing under $MLX_PREFIX" >&2; exit 1; }
ln -sfn "$MLX_PREFIX" "$CACHE/mlx"

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
ln -sfn "$VENV/bin/python-zig" "$CACHE/bin/zig" 2>/dev/null || true
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

# 4. The shim.
log "zig build (shim against $MLX_PREFIX)"
(cd "$ROOT" && ZIG_GLOBAL_CACHE_DIR="$CACHE/zig-global" zig build -Doptimize=ReleaseFast -Dmlx="$MLX_PREFIX")
