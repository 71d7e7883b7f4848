#!/usr/bin/env bash
# Builds and runs lola's main example: a tour of the expression core on a Llama-sized module.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/lib.sh
lola_require_packages g++ cmake libeigen3-dev

cmake --preset demo >/dev/null
cmake --build --preset demo -j "$LOLA_JOBS" --target lola_tour
./build/demo/examples/lola_tour
