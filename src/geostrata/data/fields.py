"""Checks on single fields of annotation entries, shared by the loaders of the JSON formats."""

from __future__ import annotations

from pathlib import PurePath
from typing import Any


def is_text(value: Any) -> bool:
    """A string with something in it besides whitespace."""
    return isinstance(value, str) and bool(value.strip())


def is_relative_name(value: Any) -> bool:
    """A file name or relative path that stays inside its folder (no absolute path, no '..')."""
    return (
        is_text(value) and not PurePath(value).is_absolute() and ".." not in PurePath(value).parts
    )


def is_id(value: Any) -> bool:
    """An id: an integer (not a bool) or a non-empty string."""
    return type(value) is int or is_text(value)


def image_file(name: str, default_ext: str) -> str:
    """`name` with `default_ext` added when it has no extension (GeoChat-Bench writes bare ids)."""
    return name if PurePath(name).suffix else f"{name}{default_ext}"
