#!/usr/bin/env bash
# The test suite on the lent GPU machine, within 8 minutes: every test file but embed.test.ts and
# gguf.test.ts (the all-MiniLM-L6-v2 checkpoint and the GGUF files are larger than a call can carry;
# server.test.ts reports its encoder tests as skipped there, crash cases on GGUF files are left out), MLX_ENABLE_TF32=0 (the float32 oracle tolerances assume it), four
# files at a time, each file a `bun test` of its own. Prints each file's result and time, then the
# failures; exits 1 when any file fails. Files given as arguments run instead of all of them. Run
# through device.sh (docs/gpu.md):
#   bash scripts/gpu/device.sh bash scripts/gpu/test.sh [test/qmv.test.ts ...]
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
LOGS="$(mktemp -d)"
export MLX_ENABLE_TF32=0 LOGS
if [ $# -gt 0 ]; then
  files=$(printf '%s\n' "$@")
else
  files=$(ls test/*.test.ts | grep -v -e '^test/embed.test.ts$' -e '^test/gguf.test.ts$')
fi
start=$(date +%s)
# One file: its log in $LOGS, one summary line (seconds, exit status, pass/fail/skip counts).
run_one() {
  local file="$1" log="$LOGS/$(basename "$1").log" begin=$(date +%s)
  timeout 420 bun test --timeout 180000 "$file" > "$log" 2>&1
  local rc=$?
  printf '%-32s %4d s  rc=%-3d %s\n' "$file" "$(( $(date +%s) - begin ))" "$rc" "$(grep -E '^ *[0-9]+ (pass|fail|skip)$' "$log" | tr -s ' \n' ' ')"
}
export -f run_one
echo "$files" | xargs -P 4 -I{} bash -c 'run_one {}' | tee "$LOGS/summary"
failed=$(grep -v ' rc=0 ' "$LOGS/summary" | awk '{ print $1 }')
echo "[gpu-test] $(echo "$files" | wc -l) files in $(( $(date +%s) - start )) s"
if [ -n "$failed" ]; then
  for f in $failed; do
    echo "== $f"
    grep -E '^\(fail\)|^error' -A3 "$LOGS/$(basename "$f").log" | head -30
    # A file that ran out of time: where it was.
    grep -q ' rc=124 ' <(grep "^$f " "$LOGS/summary") && tail -n 8 "$LOGS/$(basename "$f").log"
  done
  exit 1
fi
