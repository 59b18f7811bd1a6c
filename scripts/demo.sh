#!/usr/bin/env bash
# The README's main command: install everything (idempotent), then run the demo.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
exec "$ROOT/.cache/bin/bun" run "$ROOT/src/cli/generate.ts" "$@"
