"""A saved model folder (what `save_session` writes): its experiment file, and the check that a
folder is one, shared by `load_model` and `init_from`."""

from __future__ import annotations

from pathlib import Path

from geostrata.errors import CheckpointError

CONFIG_FILE = "experiment.yaml"


def saved_model_files(path: str | Path) -> tuple[Path, ...]:
    """The weights files of a saved model folder, each checked to be safetensors, after checking
    the folder holds its experiment.yaml; CheckpointError naming the folder otherwise."""
    from geostrata.weights import verify_safetensors

    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: no such folder (a saved GeoStrata model folder is needed)")
    weights = tuple(sorted(path.glob("model*.safetensors")))
    if not weights:
        raise CheckpointError(
            f"{path} holds no model.safetensors: not a saved GeoStrata model folder"
        )
    for file in weights:  # refuse a renamed pickle or a cut file before anything parses it
        verify_safetensors(file)
    if not (path / CONFIG_FILE).is_file():
        raise CheckpointError(
            f"{path} has weights but no {CONFIG_FILE}: an incomplete model folder"
        )
    return weights
