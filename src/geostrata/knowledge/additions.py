"""What a run adds to its knowledge base, kept with the model it trains.

A run may add entry files and label-map tables (`--kb-extra`) and entries for class labels the
base lacked (`knowledge.labels`). A model trained with them must be evaluated and asked with
them, wherever it is copied to, so the model folder holds them (`knowledge_added/`: an entry
file and a label-map table) and loading the model puts them back on top of the base.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from geostrata.knowledge.base import LABEL_MAP_FILE, KnowledgeBase
from geostrata.knowledge.schema import (
    Entry,
    entry_files,
    merge_label_maps,
    read_entry_file,
    read_label_map,
    write_entries,
    write_label_map,
)

ENTRIES_FILE = "entries.jsonl"


@dataclass
class Additions:
    """Entries and label-map tables added on top of a base for one run."""

    entries: list[Entry] = field(default_factory=list)
    label_map: dict[str, dict[str, str]] = field(default_factory=dict)

    @classmethod
    def of_files(cls, paths: Sequence[str | Path], kb: KnowledgeBase) -> Additions:
        """The entries of entry files or folders (already loaded into `kb`) and the label-map
        tables of those folders."""
        entries = [e for p in paths for f in entry_files(p) for e, _ in read_entry_file(f)]
        tables = [
            read_label_map(Path(p) / LABEL_MAP_FILE, [e.id for e in kb.entries])
            for p in paths
            if (Path(p) / LABEL_MAP_FILE).is_file()
        ]
        return cls(entries, merge_label_maps(tables))

    def plus(self, entries: Sequence[Entry]) -> Additions:
        return Additions([*self.entries, *entries], self.label_map)

    def save(self, folder: str | Path) -> None:
        """Write `folder/entries.jsonl` and `folder/label_map.tsv` (nothing when empty)."""
        if not self.entries and not self.label_map:
            return
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if self.entries:
            write_entries(self.entries, folder / ENTRIES_FILE)
        if self.label_map:
            write_label_map(self.label_map, folder / LABEL_MAP_FILE)

    @classmethod
    def restore(cls, folder: str | Path, kb: KnowledgeBase) -> Additions:
        """Put what `save` wrote back into `kb` and return it (nothing when the folder does not
        exist: a model without additions). An entry `kb` holds already (the same file given
        again for this run) keeps its version."""
        folder = Path(folder)
        file, table = folder / ENTRIES_FILE, folder / LABEL_MAP_FILE
        entries = [e for e, _ in read_entry_file(file)] if file.is_file() else []
        held = {e.id for e in kb.entries}
        missing = [e for e in entries if e.id not in held]
        if missing:
            kb.add(missing)
        tables = read_label_map(table, [e.id for e in kb.entries]) if table.is_file() else {}
        if tables:
            kb.add_label_map(tables)
        return cls(entries, tables)
