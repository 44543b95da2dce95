"""The toy model for the FSDP / DeepSpeed workers: the toy MLP without its weight penalty, with
``fc2.bias`` frozen (as base weights are under LoRA).

Sharding gathers a weight only inside its own module's forward (an FSDP unit, a ZeRO-3
partition), and the penalty reads ``fc1.weight`` from the parent's forward, where it is a shard.
"""

from __future__ import annotations

import torch

from tests.train._toy import D_IN, HIDDEN, ToyMLP, ToyOutput

GRAD_ACCUM = 2
# fc2.weight (1, 16) splits unevenly over two ranks: one rank's shard is empty.
TRAINED = {"fc1.weight": (HIDDEN, D_IN), "fc1.bias": (HIDDEN,), "fc2.weight": (1, HIDDEN)}


class ShardToy(ToyMLP):
    def forward(self, x: torch.Tensor, y: torch.Tensor) -> ToyOutput:
        pred = self.fc2(self.drop(torch.relu(self.fc1(x))))  # (B, 1)
        mse = ((pred - y) ** 2).mean()
        return ToyOutput(loss=mse, mse_loss=mse, reg_loss=mse.detach() * 0)


def shard_toy_model() -> ShardToy:
    torch.manual_seed(0)
    model = ShardToy(dropout=0.3)
    model.fc2.bias.requires_grad_(False)
    return model
