#!/usr/bin/env bash
# Writes test/fixtures/data/ with the Python oracles (mlx, mlx-lm from the setup's venv).
# Skipped when the scripts and the oracle versions are unchanged since the last run.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="$ROOT/.cache/venv/bin/python"
DATA="$ROOT/test/fixtures/data"
blas=reference
for lib in "$ROOT"/.cache/mlx/../mlx_*.libs/libblas-*.so.*; do
  if [ -L "$lib" ]; then blas="$(readlink "$lib")"; fi
done
key="$(cat "$ROOT"/scripts/fixtures/*.py "$ROOT"/default-model/* | sha256sum | cut -c1-16)-$("$PY" -c 'import mlx.core as mx; print(mx.__version__)')-$blas"
if [ -f "$DATA/.stamp" ] && [ "$(cat "$DATA/.stamp")" = "$key" ]; then exit 0; fi
rm -rf "$DATA"
mkdir -p "$DATA"
cd "$ROOT/scripts/fixtures"
# models.py first: later scripts (kv_variants.py) read the checkpoints it writes.
for script in models.py $(ls *.py | grep -v -e "^common.py$" -e "^models.py$"); do
  "$PY" "$script"
done
echo "$key" > "$DATA/.stamp"
