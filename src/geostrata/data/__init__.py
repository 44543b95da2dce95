"""Data: image reading, loaders for the real RS formats, and the synthetic generator.

The public names below are imported on first use (PEP 562) rather than at package import:
the loaders subclass torch's Dataset, and importing torch for `geostrata.data.synthetic` or a
plain `read_image` would cost seconds for nothing. `from geostrata.data import X` works as usual.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from geostrata.data.captions import CaptionDataset
    from geostrata.data.check import CheckOptions, CheckReport, check_dataset
    from geostrata.data.folder import IMAGE_EXTENSIONS, SceneFolderDataset
    from geostrata.data.images import (
        DEFAULT_MAX_BYTES,
        DEFAULT_MAX_PIXELS,
        BandPolicy,
        as_rgb,
        check_image_files,
        image_size,
        missing_files,
        read_image,
        stretch_to_uint8,
    )
    from geostrata.data.instruct import GeoChatBenchDataset, InstructionDataset, strip_image_token
    from geostrata.data.rsvg import RSVGDataset
    from geostrata.data.rsvqa import DEFAULT_LEVELS, LEVELS, RSVQADataset, load_json
    from geostrata.data.vrsbench import VRSBenchDataset

_EXPORTS = {
    "BandPolicy": "images",
    "DEFAULT_MAX_BYTES": "images",
    "as_rgb": "images",
    "DEFAULT_MAX_PIXELS": "images",
    "check_image_files": "images",
    "image_size": "images",
    "missing_files": "images",
    "read_image": "images",
    "stretch_to_uint8": "images",
    "IMAGE_EXTENSIONS": "folder",
    "SceneFolderDataset": "folder",
    "DEFAULT_LEVELS": "rsvqa",
    "LEVELS": "rsvqa",
    "RSVQADataset": "rsvqa",
    "load_json": "rsvqa",
    "GeoChatBenchDataset": "instruct",
    "InstructionDataset": "instruct",
    "strip_image_token": "instruct",
    "CaptionDataset": "captions",
    "RSVGDataset": "rsvg",
    "VRSBenchDataset": "vrsbench",
    "CheckOptions": "check",
    "CheckReport": "check",
    "check_dataset": "check",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
