"""Worker for the multi-process test: ``torchrun --nproc_per_node 2 _ddp_worker.py OUT CRASH``.

Trains the toy model (dropout on, so every rank's RNG matters) and exits with status 3 after
step CRASH (0: never); rank 0 saves the final weights to OUT/final.safetensors.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from geostrata.train import train  # noqa: E402
from tests.train._toy import toy_config, toy_dataset, toy_model  # noqa: E402


def main(out: str, crash: int) -> None:
    torch.set_num_threads(1)
    model = toy_model(dropout=0.3)

    def on_step(info: object) -> None:
        if info.step == crash:
            raise SystemExit(3)

    cfg = toy_config(out, batch_size=4, max_steps=6, save_every=2)
    train(model, toy_dataset(n=32), None, cfg, on_step=on_step, resume=True, show_progress=False)
    if torch.distributed.get_rank() == 0:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()},
                  f"{out}/final.safetensors")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
