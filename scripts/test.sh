#!/usr/bin/env bash
# Builds and runs every lola test through ctest: the Release build (unit tests, the header compile
# test, the packaging tests, the examples, the command-line tool end to end, the benchmark smoke
# runs and the Thrust-launched kernels on Thrust's host systems), then the core, expression,
# backend-kernel, small-kernel and adapter-view tests again under AddressSanitizer and
# UndefinedBehaviorSanitizer with Eigen's own assertions on, then fuzzes every file reader with
# libFuzzer (scripts/fuzz.sh, LOLA_FUZZ_SECONDS per target, default 60).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/lib.sh
lola_require_packages g++ clang cmake make ccache libeigen3-dev doctest-dev libbenchmark-dev nlohmann-json3-dev libre2-dev libcli11-dev
# A compiler cache: rebuilding unchanged sources, from this or another clone on the same machine
# (paths are hashed relative to the clone), costs a lookup; a cold cache costs almost nothing.
export CMAKE_CXX_COMPILER_LAUNCHER=ccache CCACHE_BASEDIR="$PWD" CCACHE_NOHASHDIR=true
# Thrust for the host-system tests of the Thrust-launched kernels: the CUDA toolkit's, else Debian's.
if [[ ! -f /usr/local/cuda/include/cccl/thrust/version.h ]]; then lola_require_packages libthrust-dev; fi

echo "== Release build and tests"
cmake --preset test
cmake --build --preset test -j "$LOLA_JOBS"
ctest --preset test -j "$LOLA_JOBS"

echo "== AddressSanitizer + UBSan build and tests"
cmake --preset sanitize
cmake --build --preset sanitize -j "$LOLA_JOBS"
ctest --preset sanitize -j "$LOLA_JOBS"

echo "== Fuzzing the file readers (libFuzzer, ASan + UBSan)"
scripts/fuzz.sh
