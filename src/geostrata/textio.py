"""Reading user-written text files (JSON, JSONL, YAML, TSV, split lists) with errors that name them.

One place decides how GeoStrata decodes a user's file: UTF-8, a leading byte-order mark tolerated,
newlines left as written (callers split on "\\n" only, since JSON strings may hold U+2028), and
undecodable bytes reported as the caller's own error type with the file, line and byte.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from geostrata.errors import ConfigError, GeoStrataError


def read_utf8(path: str | Path, error: type[GeoStrataError]) -> str:
    """The file as text; bad bytes raise `error("<path>:<line>: not UTF-8 text ...")`.

    OSError (missing, unreadable) propagates: callers map it to their own "not found" error.
    """
    path = Path(path)
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise error(
            f"{path}:{line}: not UTF-8 text (byte {data[err.start]:#04x} at offset {err.start}): "
            f"{err.reason}"
        ) from err


def read_yaml_mapping(path: str | Path, what: str) -> dict[str, Any]:
    """A YAML file holding a mapping (empty file -> {}); every problem is a ConfigError naming
    `what` and the file (and the line of a syntax error)."""
    import yaml

    path = Path(path)
    try:
        text = read_utf8(path, ConfigError)
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"malformed YAML in {path}{where}: {exc}") from exc
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of field: value, got {type(data).__name__}")
    return data


def check_known_keys(data: Mapping[Any, Any], known: Iterable[str], where: str) -> None:
    """ConfigError for the first key of `data` not in `known`, naming it, `where` it is (a file
    and section) and the closest known key, so a typo reads `did you mean 'retrieval'?`."""
    known = sorted(known)
    for key in data:
        if key in known:
            continue
        close = difflib.get_close_matches(str(key), known, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(known)}"
        raise ConfigError(f"unknown key {key!r} in {where}; {hint}")


def read_json(path: str | Path, error: type[GeoStrataError]) -> Any:
    """One JSON document; bad bytes or syntax raise `error` naming file:line and column.

    OSError (missing, unreadable) propagates, as in `read_utf8`.
    """
    text = read_utf8(path, error)
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise error(f"{path}:{err.lineno}, column {err.colno}: invalid JSON: {err.msg}") from err
    except (ValueError, RecursionError) as err:
        raise error(f"{path}: unreadable JSON: {err}") from err


def read_jsonl(
    path: str | Path,
    error: type[GeoStrataError],
    skip_bad: bool = False,
    comments: bool = False,
    max_line_chars: int | None = None,
) -> Iterator[tuple[str, Any]]:
    """("<path>:<line>", value) for each non-blank line of a JSONL file.

    A line that is not JSON raises `error` naming file:line and column, or is skipped with
    ``skip_bad`` (a log a kill may have cut short). ``comments``: lines starting with ``#`` are
    skipped. A line over ``max_line_chars`` is refused before it is parsed. Lines split on
    "\\n" only: U+2028 may sit raw inside a JSON string.
    """
    for number, line in enumerate(read_utf8(path, error).split("\n"), start=1):
        where = f"{path}:{number}"
        if max_line_chars is not None and len(line) > max_line_chars:
            raise error(f"{where}: line of {len(line)} characters; the limit is {max_line_chars}")
        if not line.strip() or (comments and line.lstrip().startswith("#")):
            continue
        try:
            yield where, json.loads(line)
        except json.JSONDecodeError as err:
            if not skip_bad:
                raise error(f"{where}, column {err.colno}: invalid JSON: {err.msg}") from err
        except (ValueError, RecursionError) as err:
            if not skip_bad:
                raise error(f"{where}: unreadable JSON: {err}") from err
