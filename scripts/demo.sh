#!/usr/bin/env bash
# lola in one minute: builds the `lola` tool and a program that writes two small example adapters
# (a PEFT directory and a kohya file; nothing binary is committed), then inspects them and shows
# canonicalize and resize; finally the tour of the expression core on a Llama-sized module.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/lib.sh
lola_require_packages g++ cmake make libeigen3-dev libre2-dev libcli11-dev

cmake --preset demo >/dev/null
cmake --build --preset demo -j "$LOLA_JOBS" --target lola_cli lola_make_example_adapter lola_tour
bin=build/demo/examples
tool=build/demo/tools/lola
work=build/demo/adapters
rm -rf "$work"
"$tool/lola_make_example_adapter" "$work"

step() { printf '\n$ %s\n' "$*"; "$@"; }
step "$tool/lola" inspect "$work/peft"
step "$tool/lola" inspect "$work/kohya.safetensors" --top 3
step "$tool/lola" canonicalize "$work/peft" -o "$work/peft_canonical"
step "$tool/lola" inspect "$work/peft_canonical" --top 3
step "$tool/lola" resize "$work/kohya.safetensors" -o "$work/kohya_r4.safetensors" --sv-fro 0.95
step "$tool/lola" inspect "$work/kohya_r4.safetensors" --top 3

printf '\n$ %s\n' "$bin/lola_tour"
"$bin/lola_tour"
