"""`geostrata kb ...` through Typer's CliRunner, with the hashing encoder for speed."""

import re

import pytest
from typer.testing import CliRunner

from geostrata.cli import app

from .conftest import entry


@pytest.fixture
def run(tmp_path):
    def invoke(*args):
        return CliRunner().invoke(app, ["kb", *args])

    return invoke


@pytest.fixture
def built(run, tmp_path):
    out = tmp_path / "kb"
    result = run("build", "--out", str(out), "--encoder", "hashing",
                 "--cache-dir", str(tmp_path / "cache"))
    assert result.exit_code == 0, result.output
    assert int(re.search(r"wrote (\d+) entries", result.output).group(1)) >= 200
    assert (out / "manifest.json").is_file() and (out / "index_scene.faiss").is_file()
    return out


def test_build_then_query_prints_a_ranked_table(run, built):
    result = run("query", "boats moored along piers and docks", "--level", "scene", "-k", "3",
                 "--kb", str(built))
    assert result.exit_code == 0, result.output
    assert "scene.harbor" in result.output
    assert "rank" in result.output and "score" in result.output
    assert "object." not in result.output


def test_stats_with_paraphrase_recall(run, built):
    result = run("stats", "--kb", str(built), "--paraphrase")
    assert result.exit_code == 0, result.output
    for word in ("scene", "region", "object", "attribute", "recall@5", "hashing"):
        assert word in result.output


def test_build_with_user_source_and_bad_level(run, tmp_path, write_jsonl):
    user = write_jsonl([entry("scene.quarry", "scene", "quarry", "terraced grey pit")])
    out = tmp_path / "mine"
    result = run("build", "--out", str(out), "--source", str(user), "--encoder", "hashing",
                 "--cache-dir", str(tmp_path / "c"))
    assert result.exit_code == 0, result.output
    result = run("query", "a terraced pit", "--kb", str(out), "--level", "galaxy")
    assert result.exit_code == 1
    assert "unknown level 'galaxy'" in result.output


def test_validate_accepts_good_and_rejects_bad_files(run, write_jsonl):
    good = write_jsonl([entry("scene.a", "scene", "a")], "good.jsonl")
    result = run("validate", str(good))
    assert result.exit_code == 0 and "ok: 1 entries" in result.output
    bad = write_jsonl([entry("scene.a", "scene", "a", parents=["scene.ghost"])], "bad.jsonl")
    result = run("validate", str(bad))
    assert result.exit_code == 1
    assert f"{bad}:1" in result.output and "'parents'" in result.output


def test_validate_the_shipped_folder(run):
    from geostrata.knowledge.base import default_dir

    result = run("validate", str(default_dir()))
    assert result.exit_code == 0, result.output
