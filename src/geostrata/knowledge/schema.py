"""What one knowledge-base entry is, and how entry files are read and checked.

An entry is one remote-sensing concept at one semantic level (scene, region, object, attribute),
described the way it looks from above. Files are JSONL (one entry per line) or YAML (a list of
entries); every problem raises `KnowledgeBaseError` naming the file, the line and the field, so a
user adding their own file sees exactly what to fix.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from geostrata.atomic import write_text_atomic
from geostrata.errors import KnowledgeBaseError
from geostrata.textio import read_jsonl, read_utf8

ENTRY_SUFFIXES: tuple[str, ...] = (".jsonl", ".yaml", ".yml")
# Files in a knowledge folder that are not entries (evaluation material shipped next to them).
RESERVED_FILES: frozenset[str] = frozenset({"paraphrases.jsonl"})
REQUIRED_FIELDS: tuple[str, ...] = ("id", "level", "name", "description")
LIST_FIELDS: tuple[str, ...] = ("synonyms", "parents", "related", "datasets")
# Bounds on what one entry may hold. The encoders see at most a few hundred tokens (MiniLM:
# 256, about 1,500 characters), so longer text only costs time and memory: a 50 MB description
# took 135 s and 6 GB to build. The shipped entries stay far below (description <= 225).
MAX_DESCRIPTION_CHARS = 2_000
MAX_TEXT_CHARS = 200  # id, name, and each item of a list field
MAX_LIST_ITEMS = 100
MAX_LINE_CHARS = 100_000  # a JSONL / YAML line is refused before it is parsed


class Level(str, Enum):
    """Semantic granularity, coarse to fine (attributes qualify any of the others)."""

    SCENE = "scene"
    REGION = "region"
    OBJECT = "object"
    ATTRIBUTE = "attribute"


@dataclass
class Entry:
    """One concept of the knowledge base."""

    id: str
    level: Level
    name: str
    description: str  # how it looks from above: shape, texture, colour, context, scale
    synonyms: list[str] = field(default_factory=list)
    parents: list[str] = field(default_factory=list)  # ids of broader entries
    related: list[str] = field(default_factory=list)  # ids of entries seen with it
    datasets: list[str] = field(default_factory=list)  # data sets that have this class

    def __post_init__(self) -> None:
        levels = [level.value for level in Level]
        if self.level not in levels:
            raise KnowledgeBaseError(f"entry {self.id!r}: unknown level {self.level!r} ({levels})")
        self.level = Level(self.level)
        for name in ("id", "name", "description"):
            if not str(getattr(self, name)).strip():
                raise KnowledgeBaseError(f"entry {self.id!r}: field {name!r} is empty")

    @property
    def text(self) -> str:
        """The text that is embedded: name, synonyms, then the visual description."""
        synonyms = f" ({', '.join(self.synonyms)})" if self.synonyms else ""
        return f"{self.name}{synonyms}: {self.description}"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping (the level as its string value)."""
        data = asdict(self)
        data["level"] = self.level.value
        return data


@dataclass(frozen=True)
class _Record:
    """A raw mapping with the place it came from, for error messages."""

    data: Any
    source: str  # "file:line"


def _entry_from_record(record: _Record) -> Entry:
    """Check one raw mapping field by field and build the entry."""
    data, where = record.data, record.source
    if not isinstance(data, dict):
        raise KnowledgeBaseError(f"{where}: expected an object, got {type(data).__name__}")
    for name in REQUIRED_FIELDS:
        if name not in data:
            raise KnowledgeBaseError(f"{where}: missing field {name!r}")
        if not isinstance(data[name], str) or not data[name].strip():
            raise KnowledgeBaseError(f"{where}: field {name!r} must be a non-empty string")
    for name in ("id", "name", "description"):
        limit = MAX_DESCRIPTION_CHARS if name == "description" else MAX_TEXT_CHARS
        if len(data[name]) > limit:
            raise KnowledgeBaseError(
                f"{where}: field {name!r} has {len(data[name])} characters; the limit is {limit}"
            )
    levels = [level.value for level in Level]
    if data["level"] not in levels:
        raise KnowledgeBaseError(
            f"{where}: field 'level' has unknown value {data['level']!r} (expected one of {levels})"
        )
    for name in LIST_FIELDS:
        value = data.get(name, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise KnowledgeBaseError(f"{where}: field {name!r} must be a list of strings")
        if len(value) > MAX_LIST_ITEMS:
            raise KnowledgeBaseError(
                f"{where}: field {name!r} has {len(value)} items; the limit is {MAX_LIST_ITEMS}"
            )
        longest = max(value, key=len, default="")
        if len(longest) > MAX_TEXT_CHARS:
            raise KnowledgeBaseError(
                f"{where}: field {name!r} has an item of {len(longest)} characters; the limit "
                f"is {MAX_TEXT_CHARS}"
            )
    # key=str: YAML keys may be ints or dates, which do not sort against strings.
    unknown = sorted(set(data) - set(REQUIRED_FIELDS) - set(LIST_FIELDS), key=str)
    if unknown:
        raise KnowledgeBaseError(f"{where}: unknown field {unknown[0]!r}")
    lists = {name: list(data.get(name, [])) for name in LIST_FIELDS}
    return Entry(**{name: data[name] for name in REQUIRED_FIELDS}, **lists)


def _check_line_length(path: Path, number: int, line: str) -> None:
    if len(line) > MAX_LINE_CHARS:
        raise KnowledgeBaseError(
            f"{path}:{number}: line of {len(line)} characters; the limit is {MAX_LINE_CHARS} "
            f"(an entry's description holds at most {MAX_DESCRIPTION_CHARS})"
        )


def _read_jsonl(path: Path) -> list[_Record]:
    rows = read_jsonl(path, KnowledgeBaseError, comments=True, max_line_chars=MAX_LINE_CHARS)
    return [_Record(value, where) for where, value in rows]


def _read_yaml(path: Path) -> list[_Record]:
    import yaml

    text = read_utf8(path, KnowledgeBaseError)
    for number, line in enumerate(text.split("\n"), start=1):
        _check_line_length(path, number, line)
    try:
        data = yaml.safe_load(text)
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        raise KnowledgeBaseError(f"{path}:{line}: invalid YAML ({error})") from error
    if data is None:
        return []
    if not isinstance(data, list):
        raise KnowledgeBaseError(f"{path}:1: expected a list of entries, got {type(data).__name__}")
    lines = [node.start_mark.line + 1 for node in root.value]
    return [_Record(item, f"{path}:{line}") for item, line in zip(data, lines, strict=True)]


def read_entry_file(path: str | Path) -> list[tuple[Entry, str]]:
    """Entries of one .jsonl/.yaml file with their "file:line", checked field by field."""
    path = Path(path)
    if not path.is_file():
        raise KnowledgeBaseError(f"{path}: no such knowledge-base file")
    if path.suffix not in ENTRY_SUFFIXES:
        raise KnowledgeBaseError(
            f"{path}: unsupported suffix {path.suffix!r} (use {ENTRY_SUFFIXES})")
    records = _read_yaml(path) if path.suffix in (".yaml", ".yml") else _read_jsonl(path)
    return [(_entry_from_record(record), record.source) for record in records]


def entry_files(path: str | Path) -> list[Path]:
    """The entry files of a file or a folder (sorted; paraphrase files skipped)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in ENTRY_SUFFIXES)
        return [p for p in files if p.name not in RESERVED_FILES]
    if path.is_file():
        return [path]
    raise KnowledgeBaseError(f"{path}: no such knowledge-base file or folder")


def load_entries(paths: Sequence[str | Path], known_ids: Iterable[str] = ()) -> list[Entry]:
    """Read and cross-check entries of several files or folders.

    Ids must be unique across all files (and `known_ids`, the entries already in a base), and
    every parent/related id must name an entry that exists after loading.
    """
    located: list[tuple[Entry, str]] = []
    for path in paths:
        for file in entry_files(path):
            located.extend(read_entry_file(file))
    check_entries(located, known_ids)
    return [entry for entry, _ in located]


def check_entries(located: Sequence[tuple[Entry, str]], known_ids: Iterable[str] = ()) -> None:
    """Duplicate ids and dangling parent/related ids, each named with its file and line."""
    seen: dict[str, str] = {entry_id: "the existing base" for entry_id in known_ids}
    for entry, where in located:
        if entry.id in seen:
            raise KnowledgeBaseError(
                f"{where}: field 'id': duplicate id {entry.id!r} "
                f"(first defined at {seen[entry.id]})"
            )
        seen[entry.id] = where
    for entry, where in located:
        for name in ("parents", "related"):
            for other in getattr(entry, name):
                if other not in seen:
                    raise KnowledgeBaseError(f"{where}: field {name!r}: unknown entry id {other!r}")


def write_entries(entries: Iterable[Entry], path: str | Path) -> None:
    """Write entries as JSONL (one entry per line), the format `read_entry_file` reads."""
    lines = [json.dumps(entry.to_dict(), ensure_ascii=False) for entry in entries]
    write_text_atomic(path, "\n".join(lines) + "\n")


LABEL_MAP_HEADER = ("dataset", "label", "entry_id")


def normalise_label(label: str) -> str:
    """Case, `_`, `-`, `/` and spaces do not matter: "Parking_Lot" == "parking lot"."""
    return re.sub(r"[^0-9a-z]+", "", label.lower())


def spoken(label: str) -> str:
    """How a class label is said, in answers and new entries' names: "Parking_Lot" ->
    "parking lot"."""
    return label.replace("_", " ").strip().lower()


def read_label_map(path: str | Path, known_ids: Iterable[str]) -> dict[str, dict[str, str]]:
    """`dataset<TAB>label<TAB>entry_id` rows -> {dataset: {label: entry_id}}, ids checked."""
    path, known = Path(path), set(known_ids)
    table: dict[str, dict[str, str]] = {}
    for number, line in enumerate(read_utf8(path, KnowledgeBaseError).splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) != 3:
            raise KnowledgeBaseError(
                f"{path}:{number}: expected 3 tab-separated fields, got {len(fields)}")
        if tuple(fields) == LABEL_MAP_HEADER:
            continue
        dataset, label, entry_id = (f.strip() for f in fields)
        if entry_id not in known:
            raise KnowledgeBaseError(
                f"{path}:{number}: field 'entry_id': unknown entry id {entry_id!r}")
        if label in table.setdefault(dataset, {}) and table[dataset][label] != entry_id:
            raise KnowledgeBaseError(
                f"{path}:{number}: field 'label': {dataset}/{label!r} mapped twice")
        table[dataset][label] = entry_id
    return table


def merge_label_maps(tables: Iterable[dict[str, dict[str, str]]]) -> dict[str, dict[str, str]]:
    """Label-map tables merged in order (a later row for the same label wins)."""
    merged: dict[str, dict[str, str]] = {}
    for table in tables:
        for dataset, labels in table.items():
            merged.setdefault(dataset, {}).update(labels)
    return merged


def write_label_map(table: dict[str, dict[str, str]], path: str | Path) -> None:
    """Write {dataset: {label: entry_id}} as the TSV `read_label_map` reads."""
    rows = [
        "\t".join((dataset, label, entry_id))
        for dataset, labels in sorted(table.items())
        for label, entry_id in labels.items()
    ]
    write_text_atomic(path, "\n".join(["\t".join(LABEL_MAP_HEADER), *rows]) + "\n")
