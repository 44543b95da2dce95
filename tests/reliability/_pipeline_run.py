"""Run the real two-stage pipeline on a tiny profile, as a child process a test can SIGKILL.

Usage: python -m tests.reliability._pipeline_run DATA_DIR OUT_DIR [--resume] [--eval]

Everything that decides the result (profile, seed, checkpoint cadence) is fixed here, so a
killed-and-resumed run and an uninterrupted one compute the same thing. "trained" is printed
once the model folder is saved, so a test can aim a kill at the evaluation that follows.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

SEED = 0
STAGE2_STEPS = 12  # long enough for three kills at distinct steps of stage 2
SAVE_EVERY = 2
KEEP_LAST = 2
REPORT_DIR = "report"


def profile() -> Any:
    """The tiny DemoProfile both the killed and the reference runs use."""
    from geostrata.demo import DemoProfile

    return DemoProfile(n_train=24, n_test=8, stage1_steps=2, stage2_steps=STAGE2_STEPS,
                       batch_size=4)


def experiment(data_dir: Path, out_dir: Path) -> Any:
    """The ExperimentConfig: checkpoints every SAVE_EVERY steps, every step logged to history."""
    extra = [f"{stage}.{key}={value}" for stage in ("stage1", "stage2") for key, value in
             (("save_every", SAVE_EVERY), ("keep_last", KEEP_LAST), ("log_every", 1))]
    return profile().experiment(data_dir, out_dir, seed=SEED, extra=extra)


def main(argv: list[str]) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch

    from geostrata.evaluate.suite import evaluate_session
    from geostrata.train.pipeline import run_experiment

    torch.set_num_threads(1)  # the same intra-op threads as the test process: same numerics
    data_dir, out_dir = Path(argv[0]), Path(argv[1])
    result = run_experiment(experiment(data_dir, out_dir), resume="--resume" in argv,
                            show_progress=False)
    print("trained", flush=True)
    if "--eval" in argv:
        evaluate_session(result.session, out_dir / REPORT_DIR, show_progress=False)
        print("evaluated", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
