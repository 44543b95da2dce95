"""Training: one explicit loop on HF Accelerate with atomic checkpoints and exact resume."""

from geostrata.session.train_config import TrainConfig
from geostrata.train.checkpoint import (
    Checkpoint,
    WeightsLoadResult,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_safetensors_weights,
    load_torch_state,
    save_checkpoint,
)
from geostrata.train.loop import StepInfo, TrainResult, train
from geostrata.train.sampling import SeededSampleStream

__all__ = [
    "Checkpoint",
    "SeededSampleStream",
    "StepInfo",
    "TrainConfig",
    "TrainResult",
    "WeightsLoadResult",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "load_safetensors_weights",
    "load_torch_state",
    "save_checkpoint",
    "train",
]
