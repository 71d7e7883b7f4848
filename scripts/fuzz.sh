#!/usr/bin/env bash
# Builds lola's libFuzzer targets (tests/fuzz/fuzz_*.cpp) under AddressSanitizer and
# UndefinedBehaviorSanitizer and runs each for LOLA_FUZZ_SECONDS (default 60) on a corpus kept in
# build/fuzz/corpus/<target>, into which the seeds written by tests/fuzz/make_seeds.cpp and the
# checked-in regression inputs of tests/fuzz/corpus/<target>/ (replayed by the tests too) are merged.
# A crash, leak, timeout or out-of-memory in any target makes the script exit non-zero; its
# reproducer is left in build/fuzz/artifacts/<target>/ and its log in build/fuzz/<target>.log.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/lib.sh
lola_require_packages clang libeigen3-dev libre2-dev libcli11-dev

seconds=${LOLA_FUZZ_SECONDS:-60}
# Absolute: fuzz_cli runs the tool with the working directory in its sandbox.
out=$PWD/build/fuzz
mkdir -p "$out"
flags=(-std=c++17 -O1 -gline-tables-only -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -Iinclude -Itools/lola -I/usr/include/eigen3)

# libFuzzer's runtime ships separately from clang on Debian (libclang-rt-<major>-dev).
probe() {
  echo 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }' >"$out/probe.cpp"
  clang++ -fsanitize=fuzzer,address,undefined "$out/probe.cpp" -o "$out/probe" >/dev/null 2>&1
}
if ! probe; then
  major=$(clang++ -dumpversion | cut -d. -f1)
  lola_require_packages "libclang-rt-$major-dev"
  probe || { echo "clang++ cannot link -fsanitize=fuzzer even with libclang-rt-$major-dev" >&2; exit 1; }
fi
rm -f "$out/probe" "$out/probe.cpp"

targets=(fuzz_safetensors fuzz_adapter fuzz_json fuzz_gl_net fuzz_peft_config fuzz_cli)

# Compiled and linked apart, so that the compiler cache (when there is one: scripts/test.sh sets it
# up) serves an unchanged target; it caches compilations, not links.
compile=(clang++)
if command -v ccache >/dev/null; then compile=(ccache clang++); fi
build_target() {
  "${compile[@]}" "${flags[@]}" -c "tests/fuzz/$1.cpp" -o "$out/$1.o"
  clang++ -fsanitize=fuzzer,address,undefined "$out/$1.o" -o "$out/$1" -lre2
}

echo "== building ${targets[*]} and make_seeds"
start=$SECONDS
pids=()
for target in "${targets[@]}"; do
  build_target "$target" &
  pids+=($!)
  # Two compilations at a time at most: each takes a few hundred MB and one core.
  if [ ${#pids[@]} -ge "$LOLA_JOBS" ]; then wait "${pids[0]}"; pids=("${pids[@]:1}"); fi
done
clang++ -std=c++17 -O1 -Iinclude -I/usr/include/eigen3 tests/fuzz/make_seeds.cpp -o "$out/make_seeds"
for pid in "${pids[@]}"; do wait "$pid"; done
echo "   built in $((SECONDS - start)) s"

rm -rf "$out/seeds"
"$out/make_seeds" "$out/seeds"

# Seeds per target: the adapter files are safetensors images too.
seed_dirs() {
  case "$1" in
    fuzz_safetensors) echo "$out/seeds/safetensors $out/seeds/adapter" ;;
    fuzz_adapter) echo "$out/seeds/adapter" ;;
    fuzz_json) echo "$out/seeds/json" ;;
    fuzz_gl_net) echo "$out/seeds/gl_net" ;;
    fuzz_peft_config) echo "$out/seeds/peft_config" ;;
  esac
}
dict_for() {
  case "$1" in
    fuzz_json) echo "$out/seeds/json.dict" ;;
    fuzz_peft_config) echo "$out/seeds/peft_config.dict" ;;
    fuzz_cli) echo "$PWD/tests/fuzz/fuzz_cli.dict" ;;
    *) echo "$out/seeds/safetensors.dict" ;;
  esac
}

# fuzz_one TARGET: one libFuzzer run; its exit status goes to $out/TARGET.status.
fuzz_one() {
  local target=$1 corpus="$out/corpus/$1" artifacts="$out/artifacts/$1" status=0
  "$out/$target" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
    -dict="$(dict_for "$target")" -artifact_prefix="$artifacts/" "$corpus" >"$out/$target.log" 2>&1 || status=$?
  echo "$status" >"$out/$target.status"
}

# The targets run LOLA_JOBS at a time (each is one process on one core).
pids=()
for target in "${targets[@]}"; do
  corpus="$out/corpus/$target"
  mkdir -p "$corpus" "$out/artifacts/$target"
  for dir in $(seed_dirs "$target"); do cp -f "$dir"/* "$corpus"/; done
  # Checked-in regression inputs, for any target that has them.
  if [ -d "tests/fuzz/corpus/$target" ]; then
    find "tests/fuzz/corpus/$target" -maxdepth 1 -type f -exec cp -f {} "$corpus"/ \;
  fi
  echo "== $target: ${seconds} s on $(find "$corpus" -type f | wc -l) inputs"
  fuzz_one "$target" &
  pids+=($!)
  if [ ${#pids[@]} -ge "$LOLA_JOBS" ]; then wait "${pids[0]}"; pids=("${pids[@]:1}"); fi
done
for pid in "${pids[@]}"; do wait "$pid"; done

failed=()
summary=()
for target in "${targets[@]}"; do
  log="$out/$target.log"
  status=$(cat "$out/$target.status")
  runs=$(grep -E '^stat::number_of_executed_units:' "$log" | awk '{print $2}' | tail -1 || true)
  done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1 || true)
  cov=$(sed -nE 's/.* cov: ([0-9]+).*/\1/p' <<<"$done_line")
  ft=$(sed -nE 's/.* ft: ([0-9]+).*/\1/p' <<<"$done_line")
  corp=$(sed -nE 's/.* corp: ([0-9]+)\/.*/\1/p' <<<"$done_line")
  if [ "$status" -ne 0 ]; then
    failed+=("$target")
    summary+=("$target: FAILED (exit $status) after ${runs:-?} runs; see $log and $out/artifacts/$target/")
    tail -n 60 "$log" >&2
  else
    summary+=("$target: ${runs:-?} runs, cov ${cov:-?}, ft ${ft:-?}, corpus ${corp:-?}")
  fi
done

echo "== fuzzing summary (${seconds} s per target)"
printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -ne 0 ]; then
  echo "fuzzing found problems in: ${failed[*]}" >&2
  exit 1
fi
