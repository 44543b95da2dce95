"""Atomic writes: a file or a folder appears whole or not at all.

Every writer of a result a user (or a resumed run) reads back goes through here: the content is
written under ``<name>.tmp-<pid>`` in the destination's folder, fsync'ed, then renamed into place
with ``os.replace``. A kill at any moment leaves the previous version (or nothing), never a cut
file; temp folders a killed writer left behind are recognised by their PID and removed by
:func:`remove_dead_temp_dirs`.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

_TEMP_DIR = re.compile(r"^(?P<stem>.+)\.tmp-(?P<pid>\d+)$")


def temp_path(path: str | Path) -> Path:
    """``<path>.tmp-<pid>``: beside the destination, so the final rename never crosses disks."""
    path = Path(path)
    return path.with_name(f"{path.name}.tmp-{os.getpid()}")


def fsync_dir(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: str | Path) -> None:
    """fsync every file and directory under ``root`` (e.g. written by other processes)."""
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(dirpath)


def durable_write(path: str | Path, writer: Callable[[BinaryIO], Any]) -> None:
    """Write ``path`` in place with ``writer(file)`` and fsync it (inside a temp folder)."""
    with open(path, "wb") as f:
        writer(f)
        f.flush()
        os.fsync(f.fileno())


def write_atomic(path: str | Path, writer: Callable[[BinaryIO], Any]) -> Path:
    """Create or replace the file ``path`` atomically with what ``writer(file)`` writes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        durable_write(tmp, writer)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    return write_atomic(path, lambda f: f.write(data))


def write_text_atomic(path: str | Path, text: str) -> Path:
    """UTF-8 text, atomically."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def move_into_place(tmp: Path, final: Path) -> None:
    """Rename the folder ``tmp`` to ``final``; an existing ``final`` is moved aside first (
    ``os.replace`` cannot overwrite a non-empty directory) and deleted after."""
    if not final.exists():
        os.replace(tmp, final)
        return
    aside = final.parent / f"{final.name}.tmp-{os.getpid()}-old"
    os.replace(final, aside)
    os.replace(tmp, final)
    shutil.rmtree(aside, ignore_errors=True)


@contextmanager
def staged_dir(final: str | Path) -> Iterator[Path]:
    """Build a folder in ``<final>.tmp-<pid>`` and rename it to ``final`` when the block ends
    without error; on error the temp folder is deleted and ``final`` is untouched."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_temp_dirs(final.parent, stem=re.escape(final.name))
    tmp = temp_path(final)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        fsync_tree(tmp)
        move_into_place(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def remove_dead_temp_dirs(folder: str | Path, stem: str = r"step-\d+") -> list[Path]:
    """Delete ``<stem>.tmp-<pid>`` folders whose writing process no longer exists: what a kill
    mid-save leaves behind (never a result, but possibly gigabytes). A folder whose PID is alive
    (another writer, or a reused PID) is left alone. Returns what was removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for child in folder.iterdir():
        match = _TEMP_DIR.match(child.name)
        if not (match and re.fullmatch(stem, match["stem"]) and child.is_dir()):
            continue
        if process_alive(int(match["pid"])):
            continue
        shutil.rmtree(child, ignore_errors=True)
        removed.append(child)
    return removed


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):  # someone else's, or not a PID we can judge
        return True
    return True
