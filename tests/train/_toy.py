"""A tiny toy model and dataset for the training-loop tests; also a script for the SIGKILL test.

Run as ``python _toy.py OUTPUT_DIR MAX_STEPS SLEEP_S``: trains with a checkpoint every step,
sleeping after each step so the parent test can kill it mid-run.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import torch
from torch import nn

from geostrata.train import TrainConfig, train

D_IN, HIDDEN = 8, 16


@dataclass
class ToyOutput:
    loss: torch.Tensor
    mse_loss: torch.Tensor
    reg_loss: torch.Tensor


class ToyMLP(nn.Module):
    """2-layer MLP regressor; dropout makes the result depend on the torch RNG."""

    def __init__(self, dropout: float = 0.3) -> None:
        super().__init__()
        self.fc1 = nn.Linear(D_IN, HIDDEN)
        self.drop = nn.Dropout(dropout)
        self.fc2 = nn.Linear(HIDDEN, 1)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> ToyOutput:
        pred = self.fc2(self.drop(torch.relu(self.fc1(x))))  # (B, 1)
        mse = ((pred - y) ** 2).mean()
        reg = 1e-3 * (self.fc1.weight**2).mean()
        return ToyOutput(loss=mse + reg, mse_loss=mse, reg_loss=reg)


def toy_dataset(n: int = 24, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, D_IN, generator=g)  # (N, D_IN)
    y = x[:, :1] * 2.0 - x[:, 1:2] + 0.1 * torch.randn(n, 1, generator=g)  # (N, 1)
    return [{"x": x[i], "y": y[i]} for i in range(n)]


def toy_model(seed: int = 0, dropout: float = 0.3) -> ToyMLP:
    torch.manual_seed(seed)
    return ToyMLP(dropout)


def toy_config(output_dir: str, **overrides: object) -> TrainConfig:
    base = dict(
        max_steps=8, batch_size=4, grad_accum=1, lr=1e-2, weight_decay=0.01, warmup_steps=2,
        min_lr_ratio=0.1, max_grad_norm=1.0, save_every=2, keep_last=2, log_every=1, seed=3,
        output_dir=output_dir,
    )
    base.update(overrides)
    return TrainConfig(**base)


def main(argv: list[str]) -> None:
    torch.set_num_threads(1)
    output_dir, max_steps, sleep_s = argv[0], int(argv[1]), float(argv[2])
    cfg = toy_config(output_dir, max_steps=max_steps, save_every=1, keep_last=3)
    train(toy_model(), toy_dataset(), None, cfg, on_step=lambda info: time.sleep(sleep_s),
          resume=True, show_progress=False)


if __name__ == "__main__":
    main(sys.argv[1:])
