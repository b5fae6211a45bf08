#!/usr/bin/env bash
# Helium's decode runtime next to a native llama.cpp: every shape of issue 23, as one block in one order and
# again in the reverse order, with the load average before and after each command. Each `bench decode
# --vs-llama-cpp` alternates Helium and llama.cpp rounds itself; the ratios to read are from the same command.
# Usage: bash benchmarks/native_vs_llama_cpp.sh OUT_DIR   (writes OUT_DIR/<block>-<n>.json and a log)
set -euo pipefail
out=${1:?usage: native_vs_llama_cpp.sh OUT_DIR}
mkdir -p "$out"
runs=(
  "--preset nano --quantize int8 --threads 1"
  "--preset nano --quantize int8 --threads 2"
  "--preset nano --dtype bfloat16 --threads 1"
  "--preset nano --dtype bfloat16 --threads 2"
  "--preset mini --dtype bfloat16 --threads 1 --new-tokens 120"
  "--preset mini --quantize int8 --threads 1 --new-tokens 120"
  "--preset nano --quantize int4 --threads 1"
  "--preset nano --quantize int4 --threads 2"
)
run_block() {  # $1 = block name, then the indices in the order to run
  local block=$1; shift
  for i in "$@"; do
    echo "== $block $i: helium bench decode ${runs[$i]} --vs-llama-cpp --repeats 3 --json"
    echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
    # shellcheck disable=SC2086
    helium bench decode ${runs[$i]} --vs-llama-cpp --repeats 3 --json | tail -n 1 > "$out/$block-$i.json"
    echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
    python - "$out/$block-$i.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
keys = ("decode_tokens_per_s", "decode_runs", "llama_cpp", "cpu_kernel", "native_decode")
print(json.dumps({k: r.get(k) for k in keys}))
PY
  done
}
n=${#runs[@]}
forward=$(seq 0 $((n - 1))); reverse=$(seq $((n - 1)) -1 0)
# shellcheck disable=SC2086
run_block forward $forward 2>&1 | tee "$out/log.txt"
# shellcheck disable=SC2086
run_block reverse $reverse 2>&1 | tee -a "$out/log.txt"
