"""A data set's class labels -> knowledge-base entries, at whatever level each one lives.

Users bring their own label sets (land-cover chips named developed, forest, water, ...). A label
is looked up as `KnowledgeBase.lookup` does it (the data set's label-map table when one is
named, then entry names, synonyms and every table), first at the level it was declared at (a
class folder's label is a scene label), then at the other visual levels, coarse to fine (a
land-cover class lives at the region level). A label the base lacks gets a new entry at its
declared level, named after it. What cannot work is collected and raised as one
`KnowledgeBaseError` listing every problem, before anything is computed from the labels.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from geostrata.errors import KnowledgeBaseError
from geostrata.knowledge.base import KnowledgeBase
from geostrata.knowledge.schema import MAX_TEXT_CHARS, Entry, normalise_label, spoken
from geostrata.levels import VISUAL_LEVELS

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LabelGrounding:
    """Where each label of a data set landed."""

    ids: dict[str, dict[str, str]] = field(default_factory=dict)  # declared level -> label -> id
    levels: dict[str, dict[str, str]] = field(default_factory=dict)  # declared -> label -> level
    added: tuple[Entry, ...] = ()  # new entries for the labels the base lacked (not yet added)

    def by_level(self) -> dict[str, list[str]]:
        """Entry level -> the labels whose entries live there, in declared order."""
        out: dict[str, list[str]] = {}
        for declared in self.levels.values():
            for label, level in declared.items():
                if label not in out.setdefault(level, []):
                    out[level].append(label)
        return {level: out[level] for level in VISUAL_LEVELS if level in out}


def ground_labels(
    kb: KnowledgeBase, labels: Mapping[str, Sequence[str]], dataset: str | None = None
) -> LabelGrounding:
    """Resolve every label of `labels` (declared level -> class labels); see the module
    docstring. New entries are returned in `added` for the caller to `kb.add`; a KnowledgeBaseError
    lists every problem (an unknown label-map table, labels that cannot name an entry)."""
    problems = _table_problems(kb, dataset)
    table = dataset if not problems else None
    ids: dict[str, dict[str, str]] = {}
    levels: dict[str, dict[str, str]] = {}
    added: dict[str, Entry] = {}
    for declared, names in labels.items():
        if declared not in VISUAL_LEVELS:
            problems.append(f"labels declared at level {declared!r} (expected {VISUAL_LEVELS})")
            continue
        for label in names:
            problem = _label_problem(label)
            if problem:
                problems.append(problem)
                continue
            level, entry_id = _find(kb, label, table, declared)
            if entry_id is None:
                entry = added.get(_new_id(label, declared)) or new_entry(label, declared, table)
                added[entry.id], entry_id = entry, entry.id
            ids.setdefault(declared, {})[label] = entry_id
            levels.setdefault(declared, {})[label] = level
    if problems:
        listed = "\n  - ".join(problems)
        raise KnowledgeBaseError(f"{len(problems)} label problem(s):\n  - {listed}")
    _warn_shared(ids)
    return LabelGrounding(ids, levels, tuple(added.values()))


def new_entry(label: str, level: str, dataset: str | None = None) -> Entry:
    """The entry of a label the knowledge base lacks: named as the label is spoken
    ("made_up_class" -> "made up class"); the name is its only description, so new entries do
    not share filler words that would make them look alike to the text encoder."""
    name = spoken(label)
    return Entry(
        id=_new_id(label, level),
        level=level,
        name=name,
        description=name,
        datasets=[dataset] if dataset else [],
    )


def _new_id(label: str, level: str) -> str:
    return f"{level}.{re.sub(r'[^0-9a-z]+', '_', label.lower()).strip('_')}"


def _find(
    kb: KnowledgeBase, label: str, dataset: str | None, declared: str
) -> tuple[str, str | None]:
    """(level, entry id) of `label`: the named table's entry, else by name at its declared
    level first, then the other visual levels; (declared, None) when no visual level has it."""
    mapped = kb.table_entry(label, dataset) if dataset else None
    if mapped is not None and kb.get(mapped).level.value in VISUAL_LEVELS:
        return kb.get(mapped).level.value, mapped
    for level in (declared, *(lv for lv in VISUAL_LEVELS if lv != declared)):
        found = kb.lookup(label, dataset, level)
        if found is not None:
            return level, found
    return declared, None


def _table_problems(kb: KnowledgeBase, dataset: str | None) -> list[str]:
    if dataset is None or dataset in kb.label_map:
        return []
    return [
        f"data.dataset {dataset!r} names no label-map table (tables: {sorted(kb.label_map)}); "
        "leave it empty to resolve labels by entry name and synonym"
    ]


def _label_problem(label: object) -> str | None:
    if not isinstance(label, str) or not normalise_label(label):
        return f"label {label!r} has no letter or digit, so it cannot name an entry"
    if len(label) > MAX_TEXT_CHARS:
        return f"label {label[:40]!r}... has {len(label)} characters (at most {MAX_TEXT_CHARS})"
    return None


def _warn_shared(ids: Mapping[str, Mapping[str, str]]) -> None:
    """Several labels on one entry still train (their answers differ) but share an alignment
    target: say so, since a label map or an entry of their own may be what was meant."""
    by_entry: dict[str, list[str]] = {}
    for names in ids.values():
        for label, entry_id in names.items():
            by_entry.setdefault(entry_id, []).append(label)
    for entry_id, names in by_entry.items():
        if len(set(names)) > 1:
            logger.warning(
                "labels %s all resolve to %s and share its alignment target; give them "
                "entries of their own and a label-map table (--kb-extra) to tell them apart",
                sorted(set(names)),
                entry_id,
            )
