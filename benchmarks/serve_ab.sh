#!/usr/bin/env bash
# `helium bench serve` of two checkouts, alternating (A B B A), each server from its own tree:
#   bash benchmarks/serve_ab.sh OLD_TREE NEW_TREE OUT_DIR [bench serve options...]
# Each run's JSON goes to OUT_DIR/{a,b}{1,2}.json; the load average before each run to OUT_DIR/load.txt.
set -euo pipefail
old=$(cd "$1" && pwd); new=$(cd "$2" && pwd); out=$3; shift 3
opts=("$@"); [ ${#opts[@]} -eq 0 ] && opts=(--streams 1,8,16 --tokens 48)
mkdir -p "$out"
run() {  # tree name
    echo "$2 $(date -u +%H:%M:%S) $(cut -d' ' -f1-3 /proc/loadavg)" >> "$out/load.txt"
    (cd "$1" && PYTHONPATH="$1" python -m helium_tui.cli bench serve "${opts[@]}" --json) | tail -n 1 > "$out/$2.json"
}
run "$old" a1; run "$new" b1; run "$new" b2; run "$old" a2
python - "$out" <<'PY'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
runs = {n: json.loads((out / f"{n}.json").read_text()) for n in ("a1", "b1", "b2", "a2")}
print("streams | tok/s A (a1, a2) | tok/s B (b1, b2) | server CPU ms/token A | B")
for i, level in enumerate(runs["a1"]["levels"]):
    row = lambda k, key: ", ".join(f"{runs[n]['levels'][i][key]:.{2 if 'cpu' in key else 0}f}" for n in k)
    print(level["streams"], "|", row(("a1", "a2"), "tokens_per_s"), "|", row(("b1", "b2"), "tokens_per_s"), "|",
          row(("a1", "a2"), "server_cpu_ms_per_token"), "|", row(("b1", "b2"), "server_cpu_ms_per_token"))
PY
cat "$out/load.txt"
