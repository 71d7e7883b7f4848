#!/usr/bin/env bash
# Builds and runs every lola test through ctest: the Release build (unit tests, the header compile
# test, the packaging tests, the examples, the command-line tool end to end and the benchmark smoke
# runs), then the core, expression and file-format tests again under AddressSanitizer and
# UndefinedBehaviorSanitizer with Eigen's own assertions on, then fuzzes every file reader with
# libFuzzer (scripts/fuzz.sh, LOLA_FUZZ_SECONDS per target, default 60).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/lib.sh
lola_require_packages g++ clang cmake libeigen3-dev doctest-dev libbenchmark-dev nlohmann-json3-dev

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
