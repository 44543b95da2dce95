"""`KnowledgeBase`: entries + their embeddings + one FAISS index per level.

It implements the `Retriever` Protocol the model depends on (dim, encoder_name, level_ids,
level_embeddings, search, encode_text, resolve) and adds what people need around it: text search
with entries, label resolution for data sets, incremental add, save/load and statistics.

Padding: `search(..., k)` with k larger than a level's size returns what exists, then index -1
and score -inf; `ids[b]` lists only the real hits (so it may be shorter than k). k=0 gives (B, 0).
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from geostrata.atomic import write_text_atomic
from geostrata.errors import KnowledgeBaseError
from geostrata.knowledge.encoder import (
    EmbeddingCache,
    MiniLMEncoder,
    ProgressFn,
    TextEncoder,
    default_cache_dir,
    embed_texts,
    encoder_from_name,
)
from geostrata.knowledge.index import IndexConfig, VectorIndex
from geostrata.knowledge.protocol import LEVELS, SearchResult
from geostrata.knowledge.relations import Relations, relation_table
from geostrata.knowledge.schema import (
    Entry,
    check_entries,
    load_entries,
    merge_label_maps,
    normalise_label,
    read_entry_file,
    read_label_map,
    write_entries,
    write_label_map,
)

LABEL_MAP_FILE = "label_map.tsv"
MANIFEST_FILE = "manifest.json"
SAVE_VERSION = 1


def default_dir() -> Path:
    """The shipped base: `geostrata/knowledge/default/`."""
    return Path(__file__).parent / "default"


@dataclass(frozen=True)
class Hit:
    """One retrieved entry with its score and rank (0 = best)."""

    entry: Entry
    score: float
    rank: int


@dataclass(frozen=True)
class KBStats:
    """Size and make-up of a base."""

    n_entries: int
    per_level: dict[str, int]
    dim: int
    encoder_name: str
    index_kinds: dict[str, str]
    index_bytes: int
    labels_per_dataset: dict[str, int]


def _check_level(level: str) -> str:
    if level not in LEVELS:
        raise KnowledgeBaseError(f"unknown level {level!r} (expected one of {list(LEVELS)})")
    return level


def _table_ids(label: str, tables: Iterable[dict[str, str]]) -> list[str]:
    """Entry ids the tables give `label`: exact spelling first, then normalised."""
    tables, key = list(tables), normalise_label(label)
    mapped = [t[label] for t in tables if label in t]
    return mapped + [i for t in tables for lab, i in t.items() if normalise_label(lab) == key]


class KnowledgeBase:
    """The RS semantic knowledge base (see the module docstring for padding rules)."""

    def __init__(self, entries: Sequence[Entry], encoder: TextEncoder,
                 label_map: dict[str, dict[str, str]] | None = None,
                 cache_dir: str | Path | None = None, index_config: IndexConfig | None = None,
                 progress: ProgressFn | None = None) -> None:
        check_entries([(entry, f"entry {entry.id!r}") for entry in entries])
        self.encoder = encoder
        self.index_config = index_config or IndexConfig()
        self.cache = EmbeddingCache(cache_dir if cache_dir is not None else default_cache_dir())
        self._entries: list[Entry] = []
        self._by_id: dict[str, Entry] = {}
        self._rows: dict[str, list[str]] = {level: [] for level in LEVELS}
        self._vectors = {level: np.zeros((0, encoder.dim), np.float32) for level in LEVELS}
        self._indexes: dict[str, VectorIndex] = {}
        self._names: dict[str, list[str]] = {}
        self.label_map = label_map or {}
        self._append(list(entries), progress)
        self._check_label_map()

    # ----- construction -------------------------------------------------------------------
    @classmethod
    def load(cls, path_or_default: str | Path = "default", encoder: TextEncoder | None = None,
             cache_dir: str | Path | None = None, extra: Sequence[str | Path] = (),
             index_config: IndexConfig | None = None,
             progress: ProgressFn | None = None) -> KnowledgeBase:
        """A base from "default" (the shipped one), a .jsonl/.yaml file, a folder of them, or a
        folder written by `save`; `extra` adds the user's own entry files or folders."""
        source = default_dir() if str(path_or_default) == "default" else Path(path_or_default)
        if (source / MANIFEST_FILE).is_file():
            return cls._load_saved(source, encoder, cache_dir, extra, index_config)
        sources = [source, *map(Path, extra)]
        entries = load_entries(sources)
        known = [entry.id for entry in entries]
        maps = [read_label_map(s / LABEL_MAP_FILE, known) for s in sources
                if s.is_dir() and (s / LABEL_MAP_FILE).is_file()]
        return cls(entries, encoder or MiniLMEncoder(), merge_label_maps(maps), cache_dir,
                   index_config, progress)

    def _append(self, entries: list[Entry], progress: ProgressFn | None) -> None:
        """Embed `entries` (disk cache first) and add them to their level's index."""
        entries = sorted(entries, key=lambda e: LEVELS.index(e.level.value))
        vectors = embed_texts(self.encoder, [e.text for e in entries], self.cache, progress)
        for level in LEVELS:
            rows = [i for i, e in enumerate(entries) if e.level.value == level]
            self._add_rows(level, [entries[i] for i in rows], vectors[rows])

    def _add_rows(self, level: str, entries: list[Entry], vectors: np.ndarray) -> None:
        if level not in self._indexes:
            self._indexes[level] = VectorIndex.build(vectors, self.index_config, self.encoder.dim)
        elif entries:
            self._indexes[level].add(vectors)
        self._register(level, entries, vectors)

    def _register(self, level: str, entries: list[Entry], vectors: np.ndarray) -> None:
        """Bookkeeping for rows already in the level's index: vectors, ids, name lookup."""
        self._vectors[level] = np.concatenate([self._vectors[level], vectors])  # (N_level, D)
        for entry in entries:
            self._entries.append(entry)
            self._by_id[entry.id] = entry
            self._rows[level].append(entry.id)
            for text in (entry.name, *entry.synonyms, entry.id, entry.id.split(".")[-1]):
                ids = self._names.setdefault(normalise_label(text), [])
                if entry.id not in ids:
                    ids.append(entry.id)

    def _check_label_map(self) -> None:
        for dataset, labels in self.label_map.items():
            for label, entry_id in labels.items():
                if entry_id not in self._by_id:
                    raise KnowledgeBaseError(
                        f"label map {dataset}/{label!r}: unknown entry id {entry_id!r}")

    def add_label_map(self, tables: dict[str, dict[str, str]]) -> None:
        """Merge label-map tables (dataset -> label -> entry id) into the base's; ids checked."""
        merged = merge_label_maps([self.label_map, tables])
        self.label_map, previous = merged, self.label_map
        try:
            self._check_label_map()
        except KnowledgeBaseError:
            self.label_map = previous
            raise

    def add(self, entries: Iterable[Entry]) -> None:
        """Add entries incrementally (ids must be new; parents/related may name old entries)."""
        entries = list(entries)
        check_entries([(e, f"added entry {e.id!r}") for e in entries], known_ids=self._by_id)
        self._append(entries, None)

    # ----- Retriever protocol --------------------------------------------------------------
    @property
    def dim(self) -> int:
        return int(self.encoder.dim)

    @property
    def encoder_name(self) -> str:
        return self.encoder.name

    def level_ids(self, level: str) -> list[str]:
        return list(self._rows[_check_level(level)])

    def level_embeddings(self, level: str) -> np.ndarray:
        return self._vectors[_check_level(level)]

    def relations(self, level: str, other: str) -> Relations:
        """Each `level` entry's relations among the `other` entries (knowledge/relations.py), in
        the row orders of `level_ids`; entries added later (`add`, `--kb-extra`) are included."""
        return relation_table(self._entries, self._rows[_check_level(level)],
                              self._rows[_check_level(other)])

    def encode_text(self, texts: list[str]) -> np.ndarray:
        """(B, D) query vectors, each encoded alone: multi-threaded matmuls round differently
        for different batch shapes, and a question's vector must not depend on which questions
        came with it (a resumed run meets them in other company than an uninterrupted one)."""
        return self.encoder.encode(list(texts), batch_size=1)

    def search(self, queries: np.ndarray, level: str, k: int) -> SearchResult:
        """Top-k entries of `level` for `queries` (B, D); see the module docstring for padding."""
        queries = np.asarray(queries, dtype=np.float32)
        if queries.ndim == 1:
            queries = queries[None]  # (1, D)
        top = self._indexes[_check_level(level)].search(queries, k)
        rows = self._rows[level]
        ids = [[rows[i] for i in row if i >= 0] for row in top.indices]
        return SearchResult(ids=ids, indices=top.indices, scores=top.scores)

    def resolve(self, label: str, dataset: str | None = None, level: str | None = None) -> str:
        """Entry id of a class label: the data set's label map first, then a name/synonym match
        (case, `_`, `-`, spaces ignored; a trailing plural "s" tolerated). Names shared by
        several levels resolve to the coarsest unless `level` is given."""
        found = self.lookup(label, dataset, level)
        if found is None:
            raise KnowledgeBaseError(self._unknown_label_message(label, dataset))
        return found

    def lookup(
        self, label: str, dataset: str | None = None, level: str | None = None
    ) -> str | None:
        """`resolve` without the error: the entry id, or None when no entry (of `level`) has the
        label. An unknown `dataset` is still an error: it is a typo, not a missing label."""
        if level is not None:
            _check_level(level)
        for candidate in self._label_candidates(label, dataset):
            if level is None or self._by_id[candidate].level.value == level:
                return candidate
        return None

    def _label_candidates(self, label: str, dataset: str | None) -> list[str]:
        if dataset is not None and dataset not in self.label_map:
            raise KnowledgeBaseError(
                f"unknown dataset {dataset!r} (label maps: {sorted(self.label_map)})")
        key = normalise_label(label)
        tables = [self.label_map[dataset]] if dataset else list(self.label_map.values())
        mapped = _table_ids(label, tables)
        singular = key[:-1] if key.endswith("s") else ""
        named = self._names.get(key, []) + self._names.get(singular, [])
        # a data set's own table wins; without one, names win over other data sets' tables
        return mapped + named if dataset else named + mapped

    def table_entry(self, label: str, dataset: str) -> str | None:
        """The entry id the data set's label-map table gives `label`, or None."""
        if dataset not in self.label_map:
            raise KnowledgeBaseError(
                f"unknown dataset {dataset!r} (label maps: {sorted(self.label_map)})")
        return next(iter(_table_ids(label, [self.label_map[dataset]])), None)

    def _unknown_label_message(self, label: str, dataset: str | None) -> str:
        names = sorted({text for e in self._entries for text in (e.name, *e.synonyms)})
        close = difflib.get_close_matches(label.lower().replace("_", " "), names, n=5, cutoff=0.6)
        where = f" in dataset {dataset!r}" if dataset else ""
        return f"unknown label {label!r}{where}; close matches: {close or 'none'}"

    # ----- convenience ---------------------------------------------------------------------
    @property
    def entries(self) -> list[Entry]:
        return list(self._entries)

    def get(self, entry_id: str) -> Entry:
        if entry_id not in self._by_id:
            close = difflib.get_close_matches(entry_id, list(self._by_id), n=5)
            raise KnowledgeBaseError(f"unknown entry id {entry_id!r}; close matches: {close}")
        return self._by_id[entry_id]

    def search_text(self, texts: Sequence[str], level: str, k: int = 5) -> list[list[Hit]]:
        """Encode `texts` and return the top-k entries of `level` for each, best first."""
        result = self.search(self.encode_text(list(texts)), level, k)
        # ids omit the -1 padding that scores keep, so the inner zip stops at the real hits
        return [[Hit(self._by_id[i], float(s), r)
                 for r, (i, s) in enumerate(zip(ids, scores, strict=False))]
                for ids, scores in zip(result.ids, result.scores, strict=True)]

    def stats(self) -> KBStats:
        return KBStats(
            n_entries=len(self._entries),
            per_level={level: len(self._rows[level]) for level in LEVELS},
            dim=self.dim, encoder_name=self.encoder_name,
            index_kinds={level: index.kind for level, index in self._indexes.items()},
            index_bytes=sum(index.nbytes() for index in self._indexes.values()),
            labels_per_dataset={d: len(labels) for d, labels in sorted(self.label_map.items())},
        )

    # ----- persistence ---------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        """Write entries, label map, embeddings and FAISS indexes; `load(folder)` reads them."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        write_entries(self._entries, folder / "entries.jsonl")
        write_label_map(self.label_map, folder / LABEL_MAP_FILE)
        for level in LEVELS:
            np.save(folder / f"embeddings_{level}.npy", self._vectors[level])
            self._indexes[level].save(folder / f"index_{level}.faiss")
        manifest = {"version": SAVE_VERSION, "encoder": self.encoder_name, "dim": self.dim,
                    "levels": {level: self._rows[level] for level in LEVELS},
                    "index_config": asdict(self.index_config)}
        write_text_atomic(folder / MANIFEST_FILE, json.dumps(manifest, indent=1))
        return folder

    @classmethod
    def _load_saved(cls, folder: Path, encoder: TextEncoder | None, cache_dir: str | Path | None,
                    extra: Sequence[str | Path], index_config: IndexConfig | None) -> KnowledgeBase:
        manifest = json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8"))
        if manifest.get("version") != SAVE_VERSION:
            raise KnowledgeBaseError(
                f"{folder / MANIFEST_FILE}: unsupported version {manifest.get('version')!r}")
        encoder = encoder or encoder_from_name(manifest["encoder"])
        if encoder.name != manifest["encoder"]:
            raise KnowledgeBaseError(f"{folder}: saved with encoder {manifest['encoder']!r}, "
                                     f"but encoder {encoder.name!r} was given")
        kb = cls.__new__(cls)
        kb._restore(folder, manifest, encoder, cache_dir,
                    index_config or IndexConfig(**manifest["index_config"]))
        if extra:
            kb.add(load_entries(list(extra), known_ids=kb._by_id))
        return kb

    def _restore(self, folder: Path, manifest: dict, encoder: TextEncoder,
                 cache_dir: str | Path | None, index_config: IndexConfig) -> None:
        entries = {e.id: e for e, _ in read_entry_file(folder / "entries.jsonl")}
        self.encoder, self.index_config = encoder, index_config
        self.cache = EmbeddingCache(cache_dir if cache_dir is not None else default_cache_dir())
        self._entries, self._by_id, self._names = [], {}, {}
        self._rows = {level: [] for level in LEVELS}
        self._vectors = {level: np.zeros((0, encoder.dim), np.float32) for level in LEVELS}
        self._indexes = {}
        for level in LEVELS:
            vectors = np.load(folder / f"embeddings_{level}.npy")
            index = VectorIndex.load(folder / f"index_{level}.faiss", index_config)
            if index.ntotal != len(manifest["levels"][level]) or vectors.shape[0] != index.ntotal:
                raise KnowledgeBaseError(f"{folder}: level {level!r} rows disagree between "
                                         "manifest, embeddings and index")
            self._indexes[level] = index
            self._register(level, [entries[i] for i in manifest["levels"][level]], vectors)
        self.label_map = read_label_map(folder / LABEL_MAP_FILE, self._by_id)
