#!/usr/bin/env bash
# CPU per operation of the report's profile workloads, for A/B comparisons
# on a machine too noisy for throughput alone: the whole process tree's
# task-clock (parent and runner) divided by the operations made.
#
#   cargo bench --bench report --no-run     # then copy the binary it names
#   benches/cpu_per_op.sh 5 /tmp/report-before /tmp/report-after
#
# Needs `perf` (Debian's linux-perf). Rounds interleave the binaries.
set -euo pipefail
rounds=$1
shift
for _ in $(seq "$rounds"); do
  for bin in "$@"; do
    out=$(FLAME_BENCH_PROFILE=calls512 perf stat -x, -e task-clock "$bin" --bench 2>&1)
    rate=$(echo "$out" | grep -o 'calls512: [0-9]*' | awk '{print $2}')
    ms=$(echo "$out" | grep task-clock | cut -d, -f1)
    # 5 s of 512 callers after 0.3 s of 64: about 5.3 s of calls.
    per_call=$(echo "$ms $rate" | awk '{printf "%.2f", $1 * 1000 / ($2 * 5.3)}')
    out=$(FLAME_BENCH_PROFILE=casts perf stat -x, -e task-clock "$bin" --bench 2>&1)
    ms=$(echo "$out" | grep task-clock | cut -d, -f1)
    per_cast=$(echo "$ms" | awk '{printf "%.2f", $1 * 1000 / 900000}')
    echo "$bin calls512 ${rate}/s cpu_us_per_call=${per_call} | casts cpu_us_per_cast=${per_cast}"
  done
done
