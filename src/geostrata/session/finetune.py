"""Fine-tuning from a saved model (`init_from: MODEL_DIR` in an experiment).

The new run is built as every run is (`prepare`), with three differences:

- its model settings are the saved model's (`experiment.yaml`'s `model` section) updated by the
  new experiment's own `model` section (e.g. `in_bands: 13` for a band adapter), on the same
  preset (another preset is another architecture: refused);
- it reuses the saved processor's text side (tokenizer, prompt and turn templates), so the saved
  token ids keep their meaning; the image side is built for the new run's settings and data;
- after the model is built, every saved weight whose name and shape match is loaded into it; the
  rest is reported: weights the new model has that the folder lacks or holds in another shape are
  newly initialised (a band adapter for more bands, say), saved weights the new model has no place
  for are dropped. A source sharing no weight with the new model is refused.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geostrata.errors import CheckpointError, ConfigError
from geostrata.session.experiment import ExperimentConfig
from geostrata.session.folder import CONFIG_FILE, saved_model_files

_LISTED = 12  # keys named per list in the report


@dataclass(frozen=True)
class InitSource:
    """A saved model folder to start from, and the experiment it was trained with."""

    path: Path
    cfg: ExperimentConfig
    weights: tuple[Path, ...]


@dataclass
class InitReport:
    """What loading a saved model into the new one did (tensor names)."""

    source: Path
    loaded: list[str] = field(default_factory=list)
    new: list[str] = field(default_factory=list)  # the new model's, absent from the folder
    reshaped: list[str] = field(default_factory=list)  # "key: saved (..) vs new (..)"
    dropped: list[str] = field(default_factory=list)  # the folder's, absent from the new model

    def describe(self) -> str:
        lines = [f"init_from {self.source}: loaded {len(self.loaded)} saved tensors"]
        if self.new:
            lines.append(f"  newly initialised (not in the saved model): {_names(self.new)}")
        if self.reshaped:
            lines.append(f"  newly initialised (other shape): {_names(self.reshaped)}")
        if self.dropped:
            lines.append(f"  saved but unused by the new model: {_names(self.dropped)}")
        if not (self.new or self.reshaped or self.dropped):
            lines.append("  every weight of the new model came from the saved one")
        return "\n".join(lines)


def _names(keys: list[str]) -> str:
    more = f" ... and {len(keys) - _LISTED} more" if len(keys) > _LISTED else ""
    return ", ".join(keys[:_LISTED]) + more


def open_source(path: str | Path) -> InitSource:
    """The saved model an experiment starts from, checked before any data is read."""
    path = Path(path)
    weights = saved_model_files(path)
    for name in ("config.json", "processor_config.json"):
        if not (path / name).is_file():
            raise CheckpointError(f"{path} has no {name}: not a complete saved model folder")
    saved = ExperimentConfig.from_yaml(path / CONFIG_FILE)
    return InitSource(path, saved, weights)


def resolve(cfg: ExperimentConfig, source: InitSource) -> ExperimentConfig:
    """`cfg` with the saved model's settings under its own (same preset required)."""
    if cfg.preset != source.cfg.preset:
        raise ConfigError(
            f"init_from {source.path}: that model is preset {source.cfg.preset!r}, this "
            f"experiment {cfg.preset!r}; fine-tuning keeps the architecture: set preset: "
            f"{source.cfg.preset}"
        )
    return dataclasses.replace(cfg, model={**source.cfg.model, **cfg.model})


def saved_text_side(source: InitSource, question_encoder: Any) -> Any:
    """The saved GeoStrataProcessor (whose tokenizer and templates the new run reuses)."""
    from geostrata.model import GeoStrataProcessor

    return GeoStrataProcessor.from_pretrained(source.path, question_encoder=question_encoder)


def load_source_weights(model: Any, source: InitSource) -> InitReport:
    """Copy every saved tensor whose name and shape match into `model`; report the rest."""
    from geostrata.weights import read_safetensors, state_shapes

    saved: dict[str, Any] = {}
    for file in source.weights:
        saved.update(read_safetensors(file))
    own, tied = state_shapes(model)
    fits = {k: v for k, v in saved.items() if k in own and tuple(v.shape) == own[k]}
    if not fits:
        raise CheckpointError(
            f"init_from {source.path}: no saved weight fits the new model (names and shapes all "
            "differ); is it a model of this preset?"
        )
    model.load_state_dict(fits, strict=False)
    loaded_tensors = {id(p) for n, p in model.named_parameters(remove_duplicate=False) if n in fits}
    tied_loaded = {
        n
        for n, p in model.named_parameters(remove_duplicate=False)
        if n in tied and id(p) in loaded_tensors
    }
    return InitReport(
        source.path,
        loaded=sorted(fits),
        new=sorted(k for k in own if k not in saved and k not in tied_loaded),
        reshaped=[
            f"{k}: saved {tuple(v.shape)} vs new {own[k]}"
            for k, v in sorted(saved.items())
            if k in own and tuple(v.shape) != own[k]
        ],
        dropped=sorted(k for k in saved if k not in own),
    )
