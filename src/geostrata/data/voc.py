"""Pascal-VOC-style annotation XML (DIOR, DIOR-RSVG), parsed safely.

`<annotation>` holds `<filename>`, an optional `<size>` (`<width>`, `<height>`) and `<object>`s,
each with `<name>`, `<bndbox>` (`<xmin> <ymin> <xmax> <ymax>`, pixels) and, in DIOR-RSVG, a
`<description>` (the referring expression). Files are read as local data, but a DTD or entity
declaration is refused (entity expansion is how an XML file turns into gigabytes); `defusedxml`
does the parsing when it is installed. Syntax errors name file:line:column.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from geostrata.errors import AnnotationError, DatasetNotFoundError
from geostrata.textio import read_utf8

BOX_TAGS = ("xmin", "ymin", "xmax", "ymax")
_DECLARATION = re.compile(r"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)


@dataclass(frozen=True)
class VocObject:
    """One `<object>`: its problems are kept, not raised, so a walk can still count it."""

    name: str | None
    box: tuple[float, float, float, float] | None  # xmin, ymin, xmax, ymax in pixels
    description: str | None
    problem: str | None  # why the object cannot be used (missing or bad bndbox, ...)


@dataclass(frozen=True)
class VocAnnotation:
    path: Path
    filename: str
    size: tuple[int, int] | None  # (width, height) when the file states a usable one
    objects: list[VocObject]


def read_voc(path: Path) -> VocAnnotation:
    """Parse one annotation file; an unreadable file or one without <filename> is an error."""
    root = _parse(path)
    if root.tag != "annotation":
        raise AnnotationError(f"{path}: root element is <{root.tag}>, expected <annotation>")
    filename = (root.findtext("filename") or "").strip()
    if not filename or Path(filename).is_absolute() or ".." in Path(filename).parts:
        raise AnnotationError(f"{path}: <filename> must name the image file, got {filename!r}")
    objects = [_object(path, number, node) for number, node in enumerate(root.iter("object"))]
    return VocAnnotation(path, filename, _size(root), objects)


def _parse(path: Path) -> ET.Element:
    try:
        text = read_utf8(path, AnnotationError)
    except OSError as err:
        raise DatasetNotFoundError(f"{path}: cannot read annotation file: {err}") from err
    declaration = _DECLARATION.search(text)
    if declaration:
        line = text[: declaration.start()].count("\n") + 1
        raise AnnotationError(
            f"{path}:{line}: <!{declaration.group(1)}> declarations are refused (entity "
            "expansion can blow up memory); annotation files need none"
        )
    try:
        return _fromstring(text)
    except ET.ParseError as err:
        line, column = err.position
        raise AnnotationError(f"{path}:{line}:{column}: malformed XML: {err.msg}") from err


@functools.cache
def _has_defusedxml() -> bool:
    return importlib.util.find_spec("defusedxml") is not None


def _fromstring(text: str) -> ET.Element:
    if _has_defusedxml():
        from defusedxml.ElementTree import fromstring

        return fromstring(text)
    return ET.fromstring(text)


def _size(root: ET.Element) -> tuple[int, int] | None:
    """(width, height) from <size>, or None when absent or not two positive integers."""
    size = root.find("size")
    if size is None:
        return None
    try:
        width, height = int(size.findtext("width", "")), int(size.findtext("height", ""))
    except ValueError:
        return None
    return (width, height) if width > 0 and height > 0 else None


def _object(path: Path, number: int, node: ET.Element) -> VocObject:
    name = (node.findtext("name") or "").strip() or None
    description = (node.findtext("description") or "").strip() or None
    box, problem = _bndbox(node.find("bndbox"))
    if problem is not None:
        problem = f"{path}: object {number} ({name or 'no <name>'}): {problem}"
    return VocObject(name, box, description, problem)


def _bndbox(node: ET.Element | None) -> tuple[tuple[float, float, float, float] | None, str | None]:
    if node is None:
        return None, "missing <bndbox>"
    values = []
    for tag in BOX_TAGS:
        text = (node.findtext(tag) or "").strip()
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            return None, f"<bndbox><{tag}> must be a number, got {text!r:.40}"
        values.append(value)
    xmin, ymin, xmax, ymax = values
    if xmin > xmax or ymin > ymax:
        return None, f"<bndbox> {values} needs xmin <= xmax and ymin <= ymax"
    return (xmin, ymin, xmax, ymax), None
