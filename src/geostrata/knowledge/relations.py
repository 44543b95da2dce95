"""What the knowledge base says one level's entries are made of at another level.

An entry's `related` ids name what is seen with it (airport -> runway, airplane); `parents` name
broader entries (airplane -> aircraft). Relational retrieval (model/augmentation.py) scores a
scene entry by how well the image's region and object retrieval matches the entry's relations,
so it needs, per entry of one level, its relations at another level:

- a relation counts in both directions (storage tank -> industrial area says as much as
  industrial area -> storage tank);
- a relation matches every entry comparable with it in the `parents` hierarchy: itself, its kinds
  (narrower entries) and its broader entries (an image retrieved as "water" fits "marine
  waters", one retrieved as "small aircraft" fits "airplane");
- a relation implied by another one of the same entry (river -> water and -> inland waters, a
  kind of water) is counted once, so listing both does not weigh that relation twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from geostrata.knowledge.schema import Entry


@dataclass(frozen=True)
class Relations:
    """Relations of the entries of one level (rows) at another level (columns)."""

    matrix: np.ndarray  # (N_level, N_other) float32: 1 where column entry fits a relation of row
    counts: np.ndarray  # (N_level,) float32: the row's relations at that level, each chain once


def ancestors(entry_id: str, by_id: Mapping[str, Entry]) -> set[str]:
    """Every broader entry of `entry_id` (parents, their parents, ...); cycles are tolerated."""
    seen: set[str] = set()
    todo = list(by_id[entry_id].parents) if entry_id in by_id else []
    while todo:
        parent = todo.pop()
        if parent not in seen and parent in by_id:
            seen.add(parent)
            todo.extend(by_id[parent].parents)
    return seen


def related_ids(entries: Iterable[Entry]) -> dict[str, set[str]]:
    """entry id -> the ids it is related to, in either direction."""
    out: dict[str, set[str]] = {}
    for entry in entries:
        out.setdefault(entry.id, set())
        for other in entry.related:
            if other != entry.id:
                out[entry.id].add(other)
                out.setdefault(other, set()).add(entry.id)
    return out


def relation_table(
    entries: Sequence[Entry], rows: Sequence[str], columns: Sequence[str]
) -> Relations:
    """Relations of the entries `rows` (ids, one level) among the entries `columns` (another)."""
    by_id = {e.id: e for e in entries}
    related = related_ids(entries)
    up = {i: ancestors(i, by_id) for i in columns}
    col = {i: c for c, i in enumerate(columns)}
    matrix = np.zeros((len(rows), len(columns)), dtype=np.float32)
    counts = np.zeros(len(rows), dtype=np.float32)
    for r, entry_id in enumerate(rows):
        mine = {i for i in related.get(entry_id, ()) if i in col}
        # a relation whose broader entry is also a relation of this row adds nothing new
        counts[r] = sum(1 for i in mine if not (up[i] & mine))
        for c, other in enumerate(columns):
            if other in mine or up[other] & mine or any(other in up[i] for i in mine):
                matrix[r, c] = 1.0
    return Relations(matrix, counts)
