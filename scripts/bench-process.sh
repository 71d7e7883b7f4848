#!/usr/bin/env bash
# Whole-process figures: the `lola` tool timed as a process on adapters written to disk, beside the
# floor of moving the same bytes once in the same run — reading the input files (from the page
# cache, as the tool does on a second run) and, for commands that write, writing the output once.
# Writes benchmarks/PROCESS.md. LOLA_RUNS (default 5) runs per command, the median is reported.
# LOLA_OLD=/path/to/an/older/lola adds its times beside (commands it cannot finish within
# LOLA_OLD_TIMEOUT seconds, default 120, are reported as such).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/lib.sh
lola_require_packages g++ cmake make libeigen3-dev libbenchmark-dev nlohmann-json3-dev libre2-dev libcli11-dev

export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
runs=${LOLA_RUNS:-5}
old_timeout=${LOLA_OLD_TIMEOUT:-120}
cmake --preset bench -DLOLA_BUILD_TOOLS=ON >/dev/null
cmake --build --preset bench -j "$LOLA_JOBS" --target lola_cli lola_make_process_inputs
lola=$PWD/build/bench/tools/lola/lola
work=$PWD/build/bench/process
rm -rf "$work" && mkdir -p "$work"
"$PWD/build/bench/benchmarks/lola_make_process_inputs" "$work/in" 1000 10000

now() { date +%s%N; }
# median_ms CMD...: the median wall time of $runs runs of CMD, in milliseconds.
median_ms() {
  local times=() t0
  for ((i = 0; i < runs; i++)); do
    t0=$(now)
    "$@" >/dev/null
    times+=($((($(now) - t0) / 1000)))
  done
  printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {printf "%.1f", a[int((NR+1)/2)]/1000}'
}
bytes() { du -cb "$@" | tail -1 | cut -f1; }
read_floor() { cat "$@" >/dev/null; }
copy_floor() { local to=$1; shift; cat "$@" >"$to"; }
# The same copy made durable (fsync'ed, `sync FILE`), as lola makes every output before renaming it
# into place: what a write costs when it must survive a crash.
durable_copy_floor() { local to=$1; shift; cat "$@" >"$to" && sync "$to"; }

rows=()
# case NAME INPUT OUTPUT ARGS...: runs `lola ARGS...` (or `$runner ARGS...` when runner is set). INPUT is a directory, every file under it an input; OUTPUT is "-"
# for commands that print only, else the directory the command writes (created first when
# OUTPUT_PARENT=1: the command writes a file inside it).
case_row() {
  local name=$1 input=$2 output=$3
  shift 3
  local in_files
  mapfile -t in_files < <(find "$input" -type f | sort)
  local t floor old="" out_bytes=0 durable="-" durable_ratio="-"
  if [ "$output" = - ]; then
    t=$(median_ms ${runner:-$lola} "$@")
    floor=$(median_ms read_floor "${in_files[@]}")
  else
    rm -rf "$output"
    if [ "${OUTPUT_PARENT:-0}" = 1 ]; then mkdir -p "$output"; fi
    t=$(median_ms ${runner:-$lola} "$@")
    local out_files=("$output"/*)
    out_bytes=$(bytes "${out_files[@]}")
    floor_read=$(median_ms read_floor "${in_files[@]}")
    floor_write=$(median_ms copy_floor "$work/copy" "${out_files[@]}")
    floor=$(awk -v a="$floor_read" -v b="$floor_write" 'BEGIN {printf "%.1f", a + b}')
    floor_durable=$(median_ms durable_copy_floor "$work/copy" "${out_files[@]}")
    durable=$(awk -v a="$floor_read" -v b="$floor_durable" 'BEGIN {printf "%.1f", a + b}')
    durable_ratio=$(awk -v t="$t" -v f="$durable" 'BEGIN {printf "%.2f", (f > 0 ? t / f : 0)}')
    durable="$durable ms"
  fi
  if [ -n "${LOLA_OLD:-}" ] && [ -n "${runner:-}" ]; then
    old="-"
  elif [ -n "${LOLA_OLD:-}" ]; then
    local t0
    t0=$(now)
    if timeout "$old_timeout" "$LOLA_OLD" "$@" >/dev/null 2>&1; then
      old="$(awk -v n="$(($(now) - t0))" 'BEGIN {printf "%.1f ms", n / 1e6}')"
    else
      old="not done in ${old_timeout} s"
    fi
  fi
  local ratio
  ratio=$(awk -v t="$t" -v f="$floor" 'BEGIN {printf "%.2f", (f > 0 ? t / f : 0)}')
  rows+=("| $name | $(bytes "${in_files[@]}") | $out_bytes | $t ms | $floor ms | $ratio | $durable | $durable_ratio |${LOLA_OLD:+ $old |}")
  echo "${rows[-1]}"
}

# One small adapter (2.2 MB): what a process pays for starting OpenMP's threads, beside the same
# run with idle threads sleeping at once instead of spinning first (OMP_WAIT_POLICY=passive).
Q1=$work/in/qwen_64/a00
case_row "inspect --json, one Qwen2-1.5B-like r8 BF16 adapter" "$Q1" - inspect "$Q1" --json
OMP_NUM_THREADS=2 case_row "inspect --json, one Qwen2-1.5B-like r8 BF16 adapter, 2 threads" "$Q1" - inspect "$Q1" --json
OMP_WAIT_POLICY=passive OMP_NUM_THREADS=2 \
  case_row "inspect --json, one Qwen2-1.5B-like r8 BF16 adapter, 2 threads, OMP_WAIT_POLICY=passive" "$Q1" - \
  inspect "$Q1" --json
L=$work/in/llama_bf16
case_row "inspect --json, Llama-2-7B r16 BF16" "$L" - inspect "$L" --json
OMP_NUM_THREADS=2 case_row "inspect --json, Llama-2-7B r16 BF16, 2 threads" "$L" - inspect "$L" --json
# The LoL numpy path beside it (QR of B and Aᵀ, σ of the core, per module, from the file), with
# numpy from PyPI in a virtual environment of its own.
venv=$PWD/build/bench/numpy-venv
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import numpy" 2>/dev/null; then
  lola_require_packages python3-venv
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet numpy
fi
runner="$venv/bin/python $PWD/scripts/numpy_singular_values.py" \
  case_row "numpy singular values (the LoL reference path), Llama-2-7B r16 BF16" "$L" - "$L"
case_row "canonicalize, Llama-2-7B r16 BF16" "$L" "$work/canon" canonicalize "$L" -o "$work/canon"
case_row "resize --rank 8, Llama-2-7B r16 BF16" "$L" "$work/r8" resize "$L" -o "$work/r8" --rank 8
Q=$work/in/qwen_64
OUTPUT_PARENT=1 case_row "features --kind svd, 64 Qwen2-1.5B-like r8 BF16 adapters" "$Q" "$work/feat" \
  features "$Q"/a* --kind svd -o "$work/feat/svd.safetensors"
OMP_NUM_THREADS=2 OUTPUT_PARENT=1 case_row "features --kind svd, 64 Qwen2-1.5B-like r8 BF16 adapters, 2 threads" \
  "$Q" "$work/feat" features "$Q"/a* --kind svd -o "$work/feat/svd.safetensors"
for n in 1000 10000; do
  P=$work/in/patterns_$n
  case_row "inspect --json, $n modules, one pattern key each" "$P" - inspect "$P" --json
  case_row "resize --rank 1, $n modules, one pattern key each" "$P" "$work/p$n" resize "$P" -o "$work/p$n" --rank 1
done

{
  echo "# lola whole-process results"
  echo
  echo "Written by \`scripts/bench-process.sh\` on $(date -u +%Y-%m-%d) (UTC). Do not edit by hand."
  echo
  echo "Machine: $(nproc --all) CPUs, $(awk -F: '/model name/ {print $2; exit}' /proc/cpuinfo | sed 's/^ *//'); OMP_NUM_THREADS=$OMP_NUM_THREADS"
  echo "unless a row says otherwise. The tool is built with the default flags (no -march)."
  echo "Each time is the median of $runs runs of the \`lola\` process on files in the page cache."
  echo "Floor: reading the input files once (\`cat\` to /dev/null) plus, for commands that write, writing"
  echo "the output's bytes once (\`cat\` into a new file), measured the same way in the same run."
  echo "Durable floor: the same, with the written copy fsync'ed (\`sync FILE\`), as lola fsyncs every"
  echo "output before renaming it into place; the gap between the two floors is the cost of that guarantee."
  echo "On this VM, a process's first OpenMP region with 2 threads costs several milliseconds while"
  echo "libgomp's default policy spins waiting for the second thread to start (compare the three rows"
  echo "of one small adapter: OMP_WAIT_POLICY=passive removes it); on larger inputs it is hidden."
  echo
  if [ -n "${LOLA_OLD:-}" ]; then
    echo "| command | input bytes | output bytes | time | floor | ratio | durable floor | ratio | older lola (one run) |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
  else
    echo "| command | input bytes | output bytes | time | floor | ratio | durable floor | ratio |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|"
  fi
  printf '%s\n' "${rows[@]}"
} >benchmarks/PROCESS.md
echo "wrote benchmarks/PROCESS.md (${#rows[@]} rows)"
