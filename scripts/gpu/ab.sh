#!/usr/bin/env bash
# Two builds or settings of the decode step alternating on one lease (A B A B ...: a lease's host and
# GPU differ from the next one's, so only sides measured together compare): each side's CUPTI profile
# of a step (profile-step.ts: wall, kernels, busy µs a step, then the kernels matching PATTERN).
# A side is a list of environment assignments for the run ("MLXB_QMV_NORM=0"; another shim as
# "MLXB_LIBRARY=.gpu/libmlxb-main.so.xz", a value ending in .xz unpacked into /tmp once), "" for the
# payload as packed. MLX_ENABLE_TF32=0 as the tests. AB_RATE=1: each side's greedy decode rate
# instead, without CUPTI (host-profile.ts: 512 + 128, three runs). Run through device.sh (docs/gpu.md):
#   bash scripts/gpu/device.sh bash scripts/gpu/ab.sh MODEL "SIDE A" "SIDE B" [ROUNDS] [PATTERN]
set -euo pipefail
[ $# -ge 3 ] || { echo "usage: ab.sh MODEL 'SIDE A' 'SIDE B' [ROUNDS (2)] [PATTERN (mlxb_)]" >&2; exit 2; }
model="$1" a="$2" b="$3" rounds="${4:-2}" pattern="${5:-mlxb_}"
export MLX_ENABLE_TF32=0

# The side's assignments, one a line, a value ending in .xz replaced by its unpacked copy.
assignments() {
  local kv key value plain
  for kv in $1; do
    key="${kv%%=*}" value="${kv#*=}"
    if [[ "$value" == *.xz ]]; then
      plain="/tmp/mlxb-ab/$(basename "${value%.xz}")"
      mkdir -p /tmp/mlxb-ab
      [ -f "$plain" ] || xz -dc "$value" > "$plain"
      value="$plain"
    fi
    echo "$key=$value"
  done
}

for ((round = 0; round < rounds; round++)); do
  for spec in "$a" "$b"; do
    echo "== ${spec:-(the payload as packed)}"
    mapfile -t vars < <(assignments "$spec")
    if [ "${AB_RATE:-0}" = 1 ]; then
      env "${vars[@]}" bun scripts/gpu/host-profile.ts "$model" 512 128
      continue
    fi
    # The first 12 matching lines, all the output read (an early exit would end the run by SIGPIPE
    # under pipefail).
    env "${vars[@]}" bun scripts/gpu/profile-step.ts "$model" 512 32 | awk -v p="wall|$pattern" '$0 ~ p && n++ < 12'
  done
done
