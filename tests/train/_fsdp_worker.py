"""Worker for the FSDP test: ``torchrun --nproc_per_node 2 _fsdp_worker.py OUT CRASH``.

Trains ``_sharded_toy``'s model under FSDP2 on CPU (gloo) with the training loop's own checkpoints
in two stages, as ``geostrata train`` does: stage 1 (OUT/stage1, 2 steps, ``fc1`` only) shards the
model, stage 2 (OUT/stage2, 6 steps, ``fc2.weight`` too) trains the already sharded model and exits
with status 3 after its step CRASH (0: never). Both resume from their newest checkpoint. At the end
every process joins in gathering the full state dict, which rank 0 writes to
OUT/stage2/final.safetensors (every tensor, the frozen bias included).

Accelerate turns FSDP on only for accelerator devices: with ``cpu=True`` it picks plain
multi-CPU data parallelism and drops the plugin, so the worker switches the shared state to FSDP
after building the Accelerator (as Accelerate itself records it on GPUs); ``prepare`` then shards
with ``fully_shard`` on a CPU mesh.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin
from safetensors.torch import save_file
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from geostrata.train import train  # noqa: E402
from geostrata.train.engines import gather_full_state  # noqa: E402
from tests.train._sharded_toy import GRAD_ACCUM, shard_toy_model  # noqa: E402
from tests.train._toy import toy_config, toy_dataset  # noqa: E402


def cpu_fsdp_accelerator(grad_accum: int) -> Accelerator:
    # As configs/accelerate/fsdp.yaml, with Linear for the decoder layer: each one its own FSDP
    # unit and activation-checkpointed (which inserts `_checkpoint_wrapped_module` in names).
    plugin = FullyShardedDataParallelPlugin(
        fsdp_version=2,
        reshard_after_forward=True,
        auto_wrap_policy="transformer_based_wrap",
        transformer_cls_names_to_wrap=["Linear"],
        activation_checkpointing=True,
        state_dict_type="FULL_STATE_DICT",
    )
    acc = Accelerator(cpu=True, gradient_accumulation_steps=grad_accum, fsdp_plugin=plugin)
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP  # what FSDP on GPUs
    acc.state.distributed_type = DistributedType.FSDP  # leaves in both shared states
    acc.state.fsdp_plugin = plugin
    assert acc.is_fsdp2 and acc.device.type == "cpu"
    return acc


def main(out: str, crash: int) -> None:
    torch.set_num_threads(1)
    model = shard_toy_model()
    data = toy_dataset(n=32)

    def on_step(info: object) -> None:
        if info.step == crash:
            raise SystemExit(3)

    def stage(name: str, max_steps: int, **kw: object) -> None:
        cfg = toy_config(
            f"{out}/{name}",
            batch_size=4,
            grad_accum=GRAD_ACCUM,
            max_steps=max_steps,
            save_every=2,
            keep_last=0,
        )
        acc = cpu_fsdp_accelerator(GRAD_ACCUM)
        train(model, data, None, cfg, resume=True, show_progress=False, accelerator=acc, **kw)

    model.fc2.weight.requires_grad_(False)
    stage("stage1", 2)
    model.fc2.weight.requires_grad_(True)
    stage("stage2", 6, on_step=on_step)
    assert type(model.fc1.weight).__name__ == "DTensor"  # it really was sharded
    assert any("_checkpoint_wrapped_module" in name for name, _ in model.named_parameters())
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    full = get_model_state_dict(model, options=options)
    gathered = gather_full_state(model)  # what the pipeline saves as the final model
    if torch.distributed.get_rank() == 0:
        assert gathered.keys() == full.keys()
        assert all(torch.equal(gathered[k], v) for k, v in full.items())
        final = f"{out}/stage2/final.safetensors"
        save_file({k: v.contiguous() for k, v in full.items()}, final)
    else:
        assert gathered == {}
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()  # a clean exit; gloo threads can abort otherwise


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
