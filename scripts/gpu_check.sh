#!/usr/bin/env bash
# The prepared GPU check (issue 13): pytest -m gpu, `helium bench train` eager vs compiled, `helium bench decode`
# with CUDA graphs at batch 1/8/64, and a timed real training run of nano on the TinyStories excerpt, in under
# 8 minutes. Each step writes its result file under $OUT as it ends (default ./gpu-results); a failed step is
# recorded and the next one runs; summary.json, summary.md and a table close the run.
#
#   scripts/gpu_check.sh --stage      here, before the device call: fill .gpu/ (git-ignored) with the TinyStories
#                                     excerpt and the wheels the device machine lacks; carry .gpu with the call
#   scripts/gpu_check.sh              on the CUDA machine (exit 0: all ok, 1: a step failed, 2: no GPU / bad option)
#   scripts/gpu_check.sh --dry-run    every step on the CPU with the tiny preset, in seconds (CI runs this)
#
# Other options go to `helium bench gpu` (see its --help). Needs torch, numpy, tokenizers, safetensors, typer and
# rich; wheels in .gpu/wheels/ (platformdirs, which engine.paths imports) are installed first.
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if [ "${1:-}" = "--stage" ]; then
    src="${TINYSTORIES:-../shared/data/tinystories}"
    mkdir -p .gpu/tinystories .gpu/wheels || exit 2
    cp "$src/train.txt" "$src/valid.txt" .gpu/tinystories/ || exit 2
    version="$("$PY" -c 'import platformdirs; print(platformdirs.__version__)')" || exit 2
    "$PY" -m pip download -q --no-deps --only-binary=:all: -d .gpu/wheels "platformdirs==$version" || exit 2
    du -sh .gpu && ls .gpu/tinystories .gpu/wheels
    exit 0
fi
if compgen -G ".gpu/wheels/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/helium-wheels \
        .gpu/wheels/*.whl || exit 2
    export PYTHONPATH="/tmp/helium-wheels${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec "$PY" -m helium_tui.cli bench gpu --out "${OUT:-gpu-results}" "$@"
