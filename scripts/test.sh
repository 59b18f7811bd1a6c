#!/usr/bin/env bash
# The README's test command: install everything (idempotent), regenerate oracle fixtures when their
# scripts or the MLX version changed, type-check (tsc --noEmit, strict), then run the whole bun:test suite.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MLXB_SKIP_DEFAULT_MODEL=1 bash "$ROOT/scripts/setup.sh"
bash "$ROOT/scripts/fixtures.sh"
cd "$ROOT"
# Our sources ship to users as .ts: strict type-check of src/, test/ and bench/ before the tests.
"$ROOT/node_modules/.bin/tsc" --noEmit -p "$ROOT/tsconfig.json"
"$ROOT/node_modules/.bin/tsc" --noEmit -p "$ROOT/tsconfig.src.json"
echo "[test] tsc --noEmit (tsconfig.json, tsconfig.src.json): no type errors" >&2
# The install path: pack, bun add into a fresh project, mlx-bun setup, run, type-check.
bash "$ROOT/scripts/consumer-test.sh"
exec "$ROOT/.cache/bin/bun" test --timeout 60000 "$@"
