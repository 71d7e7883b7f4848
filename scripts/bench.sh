#!/usr/bin/env bash
# Builds the benchmarks in Release, runs every suite, and writes benchmarks/RESULTS.md.
# Extra arguments go to every benchmark binary, e.g. --benchmark_filter=llama.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/lib.sh
lola_require_packages g++ cmake make libeigen3-dev libbenchmark-dev nlohmann-json3-dev libre2-dev

# One thread unless a benchmark sets its own count (the thread-scaling rows do).
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
cmake --preset bench >/dev/null
cmake --build --preset bench -j "$LOLA_JOBS"
runs=()
for suite in build/bench/benchmarks/lola_bench_*; do
  [ -x "$suite" ] || continue
  name=$(basename "$suite")
  echo "== $name"
  "$suite" --benchmark_out="build/bench/$name.json" --benchmark_out_format=json "$@"
  runs+=("build/bench/$name.json")
done
./build/bench/benchmarks/lola_write_results benchmarks/RESULTS.md "${runs[@]}"
