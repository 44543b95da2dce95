"""Shared pieces of the reliability fuzz tests: settings, value strategies, mutators, the check.

Every parser gets the same contract: an input either loads, or raises a GeoStrataError whose
message names the file (and line or key where there is one). `outcome` enforces it; the other
helpers build damaged versions of valid documents, at the level of values (a field deleted or
retyped) and of bytes (text cut, garbage spliced in, a non-UTF-8 byte).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st

from geostrata.errors import GeoStrataError

T = TypeVar("T")

FUZZ = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Scalars a YAML or JSON file can hold; small, but every type a parser might trip over.
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-3, 40)
    | st.integers()
    | st.floats()
    | st.text(max_size=8)
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)
# YAML also allows non-string keys (ints, bools, null), which JSON cannot express.
yaml_keys = st.text(max_size=8) | st.integers(-2, 5) | st.booleans() | st.none()
yaml_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(yaml_keys, inner, max_size=3),
    max_leaves=6,
)
text_noise = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)
BAD_BYTES = [b"\xff", b"\xc3\x28", b"\x80", b"\xed\xa0\x80", b"\x00"]


def mutate_tree(document: Any, data: st.DataObject, values: st.SearchStrategy = json_values) -> Any:
    """Delete or replace one node found by a short random walk (the root itself sometimes)."""
    document = copy.deepcopy(document)
    parent, key, node = None, None, document
    for _ in range(data.draw(st.integers(0, 4), label="depth")):
        if not isinstance(node, dict | list) or not node:
            break
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        key = data.draw(st.sampled_from(keys), label="key")
        parent, node = node, node[key]
    if parent is None:
        return data.draw(values, label="root")
    if data.draw(st.booleans(), label="delete"):
        del parent[key]
    else:
        parent[key] = data.draw(values, label="value")
    return document


def damage_bytes(content: bytes, data: st.DataObject) -> bytes:
    """Cut the text short, splice in noise, or insert a byte that is not UTF-8."""
    how = data.draw(st.sampled_from(["cut", "splice", "non_utf8", "random"]), label="damage")
    at = data.draw(st.integers(0, len(content)), label="at")
    if how == "cut":
        return content[:at]
    if how == "splice":
        noise = data.draw(text_noise, label="noise").encode("utf-8")
        return content[:at] + noise + content[at + 1 :]
    if how == "non_utf8":
        return content[:at] + data.draw(st.sampled_from(BAD_BYTES), label="byte") + content[at:]
    return data.draw(st.binary(max_size=200), label="bytes")


def outcome(load: Callable[[], T], path: Path, *, line: bool = False,
            names: tuple[str, ...] = ()) -> T | None:
    """Run `load`; a GeoStrataError must name `path` (with `:LINE` when `line`), and one of
    `names` when given. Any other exception type propagates and fails the test."""
    try:
        result = load()
    except GeoStrataError as error:
        event(f"rejected: {type(error).__name__}")  # --hypothesis-show-statistics counts these
        message = str(error)
        assert str(path) in message, f"error does not name {path}: {message}"
        if line:
            assert re.search(re.escape(str(path)) + r"(:\d+| line \d+)", message), message
        if names:
            assert any(str(name) in message for name in names), f"names none of {names}: {message}"
        return None
    event("loaded")
    return result
