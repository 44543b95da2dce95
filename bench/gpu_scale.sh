#!/usr/bin/env bash
# The GPU figures issue 18 asks for, in one run that fits a 10-minute device call (its parts are
# limited to 150 + 200 + 200 s; not run yet, so how long they take is not known; results are
# written as they are measured, so a part cut short keeps what it measured):
#   1. `base` training steps at micro-batch 1 and 4 (512 tokens), with a torch.profiler trace of
#      the micro-batch-1 step: the MFU after retrieval moved onto the device;
#   2. decoding ms/token for `base`, dynamic vs static vs compiled cache, batch 1 and 8, beside
#      the bandwidth bound (weight bytes / peak bandwidth);
#   3. QLoRA: `base` with its LLM loaded 4-bit NF4 (a random-weight folder saved first), LoRA
#      steps and peak memory; needs bitsandbytes, which the device machine cannot download:
#      carry a wheel (BNB_WHEEL=path/to/bitsandbytes-*.whl) or it is skipped with a note.
#
#   bash bench/gpu_scale.sh [OUT_DIR]      # default bench/results
set -uo pipefail
out=${1:-bench/results}
mkdir -p "$out"
py() { timeout "$1" python3 bench/bench_gpu.py "${@:2}"; echo "exit $? ($2 ...)"; }

py 150 --preset base --seq-lens 512 --micro-batches 1,4 --gen-batches "" \
    --trace "$out/gpu_trace_base_mb1.json" --out "$out/gpu_h200_base_mb1_4.json"
py 200 --preset base --no-train --decode dynamic,static,compiled --gen-batches 1,8 \
    --gen-tokens 64 --out "$out/gpu_h200_decode.json"
if [ -n "${BNB_WHEEL:-}" ]; then pip install --no-deps -q "$BNB_WHEEL"; fi
if python3 -c 'import bitsandbytes' 2>/dev/null; then
    py 200 --preset base --qlora-dir /tmp/geostrata-base-llm --seq-lens 512 --micro-batches 1,4 \
        --gen-batches 1 --gen-tokens 16 --out "$out/gpu_h200_qlora.json"
else
    echo "QLoRA skipped: bitsandbytes is not installed here (carry a wheel: BNB_WHEEL=...)"
fi
