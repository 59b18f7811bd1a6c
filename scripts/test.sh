#!/usr/bin/env bash
# The README's test command: install everything (idempotent), regenerate oracle fixtures when their
# scripts or the MLX version changed, then run the whole bun:test suite.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MLXB_SKIP_DEFAULT_MODEL=1 bash "$ROOT/scripts/setup.sh"
bash "$ROOT/scripts/fixtures.sh"
cd "$ROOT"
exec "$ROOT/.cache/bin/bun" test --timeout 60000 "$@"
