import pytest

from geostrata.errors import KnowledgeBaseError
from geostrata.knowledge.schema import load_entries, read_label_map

from .conftest import entry

GOOD = entry("scene.a", "scene", "a")


@pytest.mark.parametrize(
    ("bad_line", "expected"),
    [
        ("{not json", "invalid JSON"),
        ({"id": "x", "level": "scene", "name": "x"}, "missing field 'description'"),
        (entry("x", "galaxy", "x"), "field 'level' has unknown value 'galaxy'"),
        (entry("x", "scene", "x", synonyms="oops"), "field 'synonyms' must be a list"),
        (entry("x", "scene", "x", colour="red"), "unknown field 'colour'"),
        (entry("scene.a", "scene", "again"), "field 'id': duplicate id 'scene.a'"),
        (entry("x", "scene", "x", parents=["nope"]), "field 'parents': unknown entry id 'nope'"),
        (entry("x", "scene", "x", related=["gone"]), "field 'related': unknown entry id 'gone'"),
        (entry("x", "scene", "x", "d" * 2001), "field 'description' has 2001 characters"),
        (entry("x", "scene", "n" * 201), "field 'name' has 201 characters; the limit is 200"),
        (entry("x", "scene", "x", synonyms=["s"] * 101), "field 'synonyms' has 101 items"),
        (entry("x", "scene", "x", datasets=["d" * 201]), "an item of 201 characters"),
    ],
)
def test_errors_name_file_line_and_field(write_jsonl, bad_line, expected):
    path = write_jsonl([GOOD, "", bad_line])  # the bad row is on line 3
    with pytest.raises(KnowledgeBaseError) as info:
        load_entries([path])
    assert f"{path}:3" in str(info.value)
    assert expected in str(info.value)


def test_a_50_mb_description_is_refused_before_parsing(tmp_path, write_jsonl):
    """`kb build` on such a line took 135 s and 6 GB; now it is refused at file:line at once."""
    import time

    huge = entry("scene.huge", "scene", "huge", "x" * 50_000_000)
    path = write_jsonl([GOOD, huge])
    start = time.perf_counter()
    with pytest.raises(KnowledgeBaseError, match=rf"{path}:2: line of 500000\d\d characters"):
        load_entries([path])
    yaml_path = tmp_path / "huge.yaml"
    yaml_path.write_text(
        f"- id: scene.huge\n  level: scene\n  name: h\n  description: {'x' * 10**6}\n"
    )
    with pytest.raises(KnowledgeBaseError, match=rf"{yaml_path}:4: line of 10000\d\d characters"):
        load_entries([yaml_path])
    assert time.perf_counter() - start < 10


def test_duplicate_across_files_names_both_places(write_jsonl):
    first = write_jsonl([GOOD], "a.jsonl")
    second = write_jsonl([GOOD], "b.jsonl")
    with pytest.raises(KnowledgeBaseError, match=r"b\.jsonl:1.*first defined at .*a\.jsonl:1"):
        load_entries([first, second])


def test_yaml_entries_and_yaml_line_numbers(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(
        "- id: scene.a\n  level: scene\n  name: a\n  description: flat\n"
        "- id: object.b\n  level: object\n  name: b\n  description: small\n  parents: [scene.a]\n"
        "- id: object.c\n  level: planet\n  name: c\n  description: odd\n"
    )
    with pytest.raises(KnowledgeBaseError, match=rf"{path}:10: field 'level'"):
        load_entries([path])
    path.write_text(path.read_text().replace("planet", "object"))
    entries = load_entries([path])
    assert [e.id for e in entries] == ["scene.a", "object.b", "object.c"]
    assert entries[1].parents == ["scene.a"]


def test_folder_loads_user_files_and_skips_paraphrases(tmp_path, write_jsonl):
    write_jsonl([GOOD], "mine.jsonl")
    write_jsonl(['{"id": "scene.a", "texts": ["not an entry"]}'], "paraphrases.jsonl")
    assert [e.id for e in load_entries([tmp_path])] == ["scene.a"]


def test_entries_may_point_to_known_ids(write_jsonl):
    path = write_jsonl([entry("object.x", "object", "x", parents=["scene.old"])])
    with pytest.raises(KnowledgeBaseError):
        load_entries([path])
    assert load_entries([path], known_ids={"scene.old"})[0].parents == ["scene.old"]


def test_label_map_rows_must_name_entries(tmp_path):
    path = tmp_path / "label_map.tsv"
    path.write_text("dataset\tlabel\tentry_id\nucm\tforest\tscene.a\nucm\tsea\tscene.zzz\n")
    with pytest.raises(KnowledgeBaseError, match=rf"{path}:3: field 'entry_id'.*'scene.zzz'"):
        read_label_map(path, ["scene.a"])
    path.write_text("ucm\tforest\n")
    with pytest.raises(KnowledgeBaseError, match=rf"{path}:1: expected 3"):
        read_label_map(path, ["scene.a"])


def test_entry_built_in_code_is_checked_and_round_trips(tmp_path):
    from geostrata.knowledge.schema import Entry, Level, write_entries

    with pytest.raises(KnowledgeBaseError, match="unknown level 'moon'"):
        Entry(id="x", level="moon", name="x", description="y")
    with pytest.raises(KnowledgeBaseError, match="'description' is empty"):
        Entry(id="x", level="scene", name="x", description=" ")
    entry_ = Entry(id="scene.x", level="scene", name="x", description="flat", synonyms=["ex"])
    assert entry_.level is Level.SCENE and entry_.text == "x (ex): flat"
    write_entries([entry_], tmp_path / "out.jsonl")
    assert load_entries([tmp_path / "out.jsonl"]) == [entry_]
