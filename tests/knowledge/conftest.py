"""Fixtures of the knowledge-base tests: a fast hashing encoder and tiny entry files."""

import json

import pytest

from geostrata.knowledge.encoder import HashingEncoder


@pytest.fixture(scope="session")
def minilm():
    """The packaged MiniLM, loaded once (offline: nothing is downloaded)."""
    from geostrata.knowledge.encoder import MiniLMEncoder

    return MiniLMEncoder()


@pytest.fixture
def hashing() -> HashingEncoder:
    return HashingEncoder(dim=64)


def entry(id_, level, name, description="seen from above", **extra):
    return {"id": id_, "level": level, "name": name, "description": description, **extra}


@pytest.fixture
def write_jsonl(tmp_path):
    """Write rows (dicts or raw strings) to a JSONL file and return its path."""

    def write(rows, name="user.jsonl"):
        path = tmp_path / name
        lines = [row if isinstance(row, str) else json.dumps(row) for row in rows]
        path.write_text("\n".join(lines) + "\n")
        return path

    return write
