"""The method's semantic levels, defined once: the visual levels coarse to fine (each has its
features, retrieval, expert and question type), and the knowledge base's entry levels, which add
attribute entries (colours, sizes, densities) that describe any visual level."""

from __future__ import annotations

VISUAL_LEVELS: tuple[str, ...] = ("scene", "region", "object")  # coarse to fine
ENTRY_LEVELS: tuple[str, ...] = (*VISUAL_LEVELS, "attribute")
