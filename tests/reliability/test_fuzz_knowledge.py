"""Fuzz the knowledge-base files a user may hand in: entry files (JSONL, YAML) and label_map.tsv.

tests/knowledge/test_schema.py checks one hand-written bad line per rule; here hypothesis damages
valid files in many ways at once (a field deleted or retyped, an unknown level, a duplicated id,
a dangling parent, an unknown key, non-string YAML keys, cut or non-UTF-8 bytes, random bytes).
Each file either loads into a consistent base or raises KnowledgeBaseError naming file:line.
"""

from __future__ import annotations

import json

import pytest
import yaml
from hypothesis import example, given
from hypothesis import strategies as st

from geostrata.errors import KnowledgeBaseError
from geostrata.knowledge.schema import (
    LIST_FIELDS,
    REQUIRED_FIELDS,
    Entry,
    Level,
    load_entries,
    read_label_map,
    write_entries,
)
from tests.reliability._fuzz import (
    FUZZ,
    damage_bytes,
    json_values,
    mutate_tree,
    outcome,
    text_noise,
    yaml_keys,
    yaml_values,
)

pytestmark = pytest.mark.timeout(120)  # small inputs: a hang fails fast
FIELDS = REQUIRED_FIELDS + LIST_FIELDS
VALID = [
    {"id": "scene.port", "level": "scene", "name": "port", "description": "docks, moored ships",
     "synonyms": ["harbour"], "datasets": ["ucm"]},
    {"id": "region.water", "level": "region", "name": "water", "description": "dark, flat",
     "parents": ["scene.port"]},
    {"id": "object.ship", "level": "object", "name": "ship", "description": "elongated hull",
     "parents": ["scene.port"], "related": ["region.water"]},
]
KINDS = ["missing", "retype", "level", "duplicate", "dangling", "unknown", "tree"]


def _mutate_entries(data: st.DataObject, fmt: str) -> tuple[list, tuple[str, ...]]:
    """One semantic mutation of VALID; returns the entries and words the error must contain."""
    entries = json.loads(json.dumps(VALID))
    kind = data.draw(st.sampled_from(KINDS), label="kind")
    target = entries[data.draw(st.integers(0, len(entries) - 1), label="entry")]
    name = data.draw(st.sampled_from(FIELDS), label="field")
    if kind == "missing":
        target.pop(name, None)
        return entries, (name, "parents", "related")  # a missing id also orphans its children
    if kind == "retype":
        target[name] = data.draw(yaml_values if fmt == "yaml" else json_values, label="value")
        return entries, (name, "parents", "related")
    if kind == "level":
        target["level"] = data.draw(text_noise, label="level")
        return entries, ("level",)
    if kind == "duplicate":
        target["id"] = data.draw(st.sampled_from([e["id"] for e in VALID]), label="id")
        return entries, ("id", "parents", "related")
    if kind == "dangling":
        target.setdefault(name if name in ("parents", "related") else "parents", []).append(
            data.draw(text_noise, label="ghost"))
        return entries, ("parents", "related")
    if kind == "unknown":
        keys = yaml_keys if fmt == "yaml" else st.text(max_size=8)
        target[data.draw(keys.filter(lambda k: k not in FIELDS), label="key")] = 1
        return entries, ("unknown field",)
    return mutate_tree(entries, data, yaml_values if fmt == "yaml" else json_values), ()


def _dump(entries: object, fmt: str) -> bytes:
    if fmt == "yaml":
        return yaml.safe_dump(entries, allow_unicode=True).encode("utf-8")
    rows = entries if isinstance(entries, list) else [entries]
    return "\n".join(json.dumps(row, ensure_ascii=False) for row in rows).encode("utf-8")


def _check_consistent(entries: list[Entry]) -> None:
    ids = [e.id for e in entries]
    assert len(ids) == len(set(ids))
    for e in entries:
        assert isinstance(e.level, Level)
        assert all(p in ids for p in e.parents + e.related)
        assert all(isinstance(getattr(e, f), str) and getattr(e, f).strip()
                   for f in ("id", "name", "description"))


@FUZZ
@given(data=st.data(), fmt=st.sampled_from(["jsonl", "yaml"]))
def test_mutated_entry_files(tmp_path, data, fmt):
    entries, names = _mutate_entries(data, fmt)
    content = _dump(entries, fmt)
    damaged = data.draw(st.booleans(), label="damage bytes")
    if damaged:
        content = damage_bytes(content, data)
    path = tmp_path / f"user.{fmt}"
    path.write_bytes(content)
    loaded = outcome(lambda: load_entries([path]), path, line=True,
                     names=() if damaged else names)
    if loaded is not None:
        _check_consistent(loaded)


def test_non_utf8_entry_file_names_the_line(tmp_path):
    path = tmp_path / "user.jsonl"
    path.write_bytes(_dump(VALID, "jsonl").replace(b"elongated", b"elong\xffated"))
    try:
        load_entries([path])
    except KnowledgeBaseError as error:
        assert f"{path}:3: not UTF-8" in str(error)
    else:
        raise AssertionError("a non-UTF-8 byte loaded silently")


def test_yaml_non_string_keys_name_the_field(tmp_path):
    path = tmp_path / "user.yaml"
    path.write_text("- {id: a, level: scene, name: a, description: d, 1: x, zz: y}\n")
    try:
        load_entries([path])
    except KnowledgeBaseError as error:  # used to be TypeError from sorting int and str keys
        assert f"{path}:1: unknown field 1" in str(error)
    else:
        raise AssertionError("unknown keys loaded silently")


field_text = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=12).filter(
    lambda s: s.strip())


@FUZZ
@given(name=field_text, description=field_text, synonyms=st.lists(field_text, max_size=2))
@example(name="x", description="a\u2028b", synonyms=["c\x85d"])  # line separators inside JSON
def test_written_entries_read_back_equal(tmp_path, name, description, synonyms):
    entry = Entry(id="scene.x", level="scene", name=name, description=description,
                  synonyms=synonyms)
    write_entries([entry, Entry(id="object.y", level="object", name="y", description="z",
                                parents=["scene.x"])], tmp_path / "out.jsonl")
    assert load_entries([tmp_path / "out.jsonl"])[0] == entry


KNOWN = ["scene.port", "region.water"]
ROWS = ["dataset\tlabel\tentry_id", "ucm\tharbor\tscene.port", "ucm\tsea\tregion.water",
        "aid\tPort\tscene.port", "# comment", "", "ucm\tharbor\tregion.water", "ucm\tx\tscene.nope",
        "ucm\tonly two", "a\tb\tc\td", " \t \t "]


@FUZZ
@given(data=st.data(), rows=st.lists(st.sampled_from(ROWS) | text_noise, max_size=6))
def test_mutated_label_map(tmp_path, data, rows):
    content = "\n".join(rows).encode("utf-8")
    if data.draw(st.booleans(), label="damage bytes"):
        content = damage_bytes(content, data)
    path = tmp_path / "label_map.tsv"
    path.write_bytes(content)
    table = outcome(lambda: read_label_map(path, KNOWN), path, line=True)
    if table is not None:
        assert all(entry_id in KNOWN for labels in table.values() for entry_id in labels.values())
