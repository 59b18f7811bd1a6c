#!/usr/bin/env bash
# Each test file on its own with a time limit, its exit status and seconds: finds what a GPU run
# spends its time on (run through device.sh).
set -uo pipefail
for f in test/*.test.ts; do
  start=$(date +%s%N)
  MLX_ENABLE_TF32=0 timeout "${LIMIT:-150}" bun test --timeout 120000 "$f" > "/tmp/mlxb-test-$(basename "$f").log" 2>&1
  rc=$?
  printf '%-32s rc=%-3s %6.1f s  %s\n' "$f" "$rc" "$(awk -v a="$start" -v b="$(date +%s%N)" 'BEGIN { print (b - a) / 1e9 }')" "$(grep -E '^ *[0-9]+ (pass|fail)' "/tmp/mlxb-test-$(basename "$f").log" | tr '\n' ' ')"
  if [ "$rc" != 0 ]; then grep -E '^\(fail\)|error:' "/tmp/mlxb-test-$(basename "$f").log" | head -8; fi
done
