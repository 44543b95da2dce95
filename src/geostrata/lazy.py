"""Package attributes imported on first use (PEP 562): importing a light submodule, such as the
experiment config that `geostrata train` validates first, then does not import torch and
transformers along with its package's `__init__`."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, exports: dict[str, str]) -> Callable[[str], Any]:
    """A module `__getattr__` that imports `name` from the module `exports[name]` when asked."""

    def __getattr__(name: str) -> Any:  # noqa: N807 - the name PEP 562 looks up
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(exports[name]), name)

    return __getattr__
