#!/usr/bin/env bash
# A/B of two checkouts of the native runtime (e.g. an attention change), 1 thread, rounds alternating. Used for the
# "AVX512-BF16 attention: tried, not kept" lines of docs/BENCHMARKS.md.
# Usage: bash benchmarks/attention_ab.sh BASE_CHECKOUT NEW_CHECKOUT   (e.g. `git worktree add ../base HEAD~1`)
set -u
base=${1:?usage: attention_ab.sh BASE_CHECKOUT NEW_CHECKOUT}; new=${2:?usage: attention_ab.sh BASE_CHECKOUT NEW_CHECKOUT}
for round in 1 2 3; do
  for side in base new; do
    dir=$base; [ $side = new ] && dir=$new
    for cfg in "--preset nano --quantize int4" "--preset nano --dtype bfloat16" "--preset mini --dtype bfloat16 --new-tokens 120"; do
      r=$(cd $dir && PYTHONPATH=$dir helium bench decode $cfg --threads 1 --repeats 3 --json 2>/dev/null | tail -1 | python -c "import json,sys; r=json.load(sys.stdin); print(round(r['decode_tokens_per_s'],1), r['cpu_kernel'])")
      echo "round $round $side [$cfg]: $r  load $(cut -d' ' -f1 /proc/loadavg)"
    done
  done
done
