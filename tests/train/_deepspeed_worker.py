"""Worker for the DeepSpeed test: ``torchrun --nproc_per_node 2 _deepspeed_worker.py OUT CRASH
STAGE``, with ``ACCELERATE_USE_DEEPSPEED=true``, ``DS_ACCELERATOR=cpu`` and no visible GPU.

Trains ``_sharded_toy``'s model under DeepSpeed ZeRO-STAGE on CPU (gloo) with the training
loop's own checkpoints, exiting with status 3 after step CRASH (0: never). Rank 0 writes the full
weights, gathered by DeepSpeed, to OUT/final.safetensors.

Without a GPU Accelerate leaves DeepSpeed alone only with ``cpu=False`` and an explicit backend
(``cpu=True`` would drop DeepSpeed); the loop's own ``make_accelerator`` passes ``cpu=True`` there,
hence the Accelerator built here.
"""

from __future__ import annotations

import sys
from pathlib import Path

import deepspeed
import torch
from accelerate import Accelerator
from accelerate.utils import DeepSpeedPlugin, InitProcessGroupKwargs
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from geostrata.train import train  # noqa: E402
from geostrata.train.engines import gather_full_state  # noqa: E402
from tests.train._sharded_toy import GRAD_ACCUM, shard_toy_model  # noqa: E402
from tests.train._toy import toy_config, toy_dataset  # noqa: E402


def main(out: str, crash: int, stage: int) -> None:
    torch.set_num_threads(1)
    plugin = DeepSpeedPlugin(zero_stage=stage, gradient_clipping=1.0, zero3_init_flag=False)
    acc = Accelerator(
        deepspeed_plugin=plugin,
        gradient_accumulation_steps=GRAD_ACCUM,
        kwargs_handlers=[InitProcessGroupKwargs(backend="gloo")],
    )
    assert acc.distributed_type == "DEEPSPEED" and acc.num_processes == 2, acc.state
    model = shard_toy_model()

    def on_step(info: object) -> None:
        if info.step == crash:
            raise SystemExit(3)

    cfg = toy_config(
        out, batch_size=4, grad_accum=GRAD_ACCUM, max_steps=6, save_every=2, keep_last=0
    )
    train(
        model,
        toy_dataset(n=32),
        None,
        cfg,
        on_step=on_step,
        resume=True,
        show_progress=False,
        accelerator=acc,
    )
    params = list(model.parameters())
    with deepspeed.zero.GatheredParameters(params, modifier_rank=None):  # no-op below ZeRO-3
        full = {k: v.detach().clone() for k, v in model.state_dict().items()}
    gathered = gather_full_state(model)  # what the pipeline saves as the final model
    if stage < 3:
        assert gathered is None  # ZeRO-1/2 leave every weight whole on every process
    elif torch.distributed.get_rank() == 0:
        assert gathered.keys() == full.keys()
        assert all(torch.equal(gathered[k], v) for k, v in full.items())
    else:
        assert gathered == {}
    if torch.distributed.get_rank() == 0:
        save_file(full, f"{out}/final.safetensors")
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
