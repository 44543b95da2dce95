"""The training run's configuration: one validated dataclass, loadable from YAML.

Everything that changes what a run computes lives here, so the config saved beside each checkpoint
is enough to reproduce (and resume) the run.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from geostrata.errors import ConfigError
from geostrata.textio import check_known_keys, read_yaml_mapping

MIXED_PRECISION_CHOICES = ("no", "bf16", "fp16")


@dataclass
class TrainConfig:
    """Hyper-parameters of one training run.

    A *step* is one optimizer update; it consumes ``grad_accum`` micro-batches of ``batch_size``
    samples on every process, so the effective batch is ``batch_size * grad_accum * processes``.
    """

    max_steps: int = 1000
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 2e-4
    weight_decay: float = 0.0
    warmup_steps: int = 0
    min_lr_ratio: float = 0.1  # cosine floor, as a fraction of ``lr``
    max_grad_norm: float = 1.0  # 0 disables clipping
    mixed_precision: str = "no"  # "no" | "bf16" | "fp16"; forced to "no" when there is no GPU
    save_every: int = 0  # 0: checkpoint only at the end
    keep_last: int = 2  # 0: keep every checkpoint
    log_every: int = 1
    seed: int = 0
    output_dir: str = "runs/train"

    def __post_init__(self) -> None:
        positive = ("max_steps", "batch_size", "grad_accum", "log_every")
        for name in positive:
            _check_int(name, getattr(self, name), minimum=1)
        for name in ("warmup_steps", "save_every", "keep_last", "seed"):
            _check_int(name, getattr(self, name), minimum=0)
        for name in ("lr", "weight_decay", "max_grad_norm", "min_lr_ratio"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"TrainConfig.{name} must be a number, got {value!r}")
            number = float(value) if abs(value) < 1e300 else math.inf  # huge ints overflow
            if not math.isfinite(number):  # a NaN lr would train silently into NaN weights
                raise ConfigError(f"TrainConfig.{name} must be finite, got {value!r}")
            setattr(self, name, number)
        if self.lr <= 0:
            raise ConfigError(f"TrainConfig.lr must be > 0, got {self.lr!r}")
        if self.weight_decay < 0 or self.max_grad_norm < 0:
            raise ConfigError(
                "TrainConfig.weight_decay and max_grad_norm must be >= 0, got "
                f"{self.weight_decay!r} and {self.max_grad_norm!r}"
            )
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(
                f"TrainConfig.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio!r}"
            )
        if self.warmup_steps > self.max_steps:
            raise ConfigError(
                f"TrainConfig.warmup_steps={self.warmup_steps} exceeds max_steps={self.max_steps}"
            )
        if self.mixed_precision is False:  # YAML 1.1 reads a bare `no` as false
            self.mixed_precision = "no"
        if self.mixed_precision not in MIXED_PRECISION_CHOICES:
            raise ConfigError(
                f"TrainConfig.mixed_precision must be one of {MIXED_PRECISION_CHOICES}, "
                f"got {self.mixed_precision!r}"
            )
        if not isinstance(self.output_dir, str | Path) or not str(self.output_dir):
            raise ConfigError(
                f"TrainConfig.output_dir must be a non-empty path, got {self.output_dir!r}"
            )
        self.output_dir = str(self.output_dir)

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> TrainConfig:
        """Read a YAML mapping of field -> value; ``overrides`` win over the file."""
        data = read_yaml_mapping(path, "training config")
        return cls._from_mapping({**data, **overrides}, source=str(path))

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<dict>") -> TrainConfig:
        """Build from a plain mapping (e.g. the ``config`` saved in a checkpoint)."""
        return cls._from_mapping(dict(data), source=source)

    @classmethod
    def _from_mapping(cls, data: dict[str, Any], source: str) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        check_known_keys(data, known, f"training config {source}")
        try:
            return cls(**data)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from exc

    def to_dict(self) -> dict[str, Any]:
        """A JSON/YAML-serialisable copy, the inverse of ``from_dict``."""
        return dataclasses.asdict(self)


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"TrainConfig.{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ConfigError(f"TrainConfig.{name} must be >= {minimum}, got {value!r}")
