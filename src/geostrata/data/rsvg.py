"""DIOR-RSVG visual grounding: referring expressions with their boxes in Pascal-VOC XML.

Layout of the release: `JPEGImages/*.jpg`, `Annotations/*.xml` (one per image, every `<object>`
with `<name>`, `<bndbox>` and `<description>`, the referring expression) and `train.txt`,
`val.txt`, `test.txt` beside them, one integer per line. An integer indexes the objects of all
annotation files counted in one walk: files in sorted order (numeric stems by number, which for
the zero-padded `00001.xml` ... is also name order), objects in document order. This is how the
authors' loader (RSVG-pytorch `data_loader.py`) and later ones (mmdetection's
`DIORRSVGDataset`) read the splits, so the walk must see every object, usable or not: an
unparseable annotation file makes every later index unplaceable and stops the split.

Records are in walk order: task "ground", `box` 0-100 relative (the pixel box over the image
size from `<size>`, else from the image header), `answer` its box text, `expression` the
description, `object_class` the `<name>`. An object without a description is skipped (warned
once; listed by a check); every other defect is an AnnotationError naming the file and object.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from geostrata.boxes import from_pixels
from geostrata.data.images import BandPolicy, ImageRecords, image_size
from geostrata.data.problems import Problems, attempt, skipped
from geostrata.data.voc import VocAnnotation, VocObject, read_voc
from geostrata.errors import AnnotationError, DatasetNotFoundError
from geostrata.textio import read_utf8

logger = logging.getLogger(__name__)

IMAGE_DIR = "JPEGImages"
ANNOTATION_DIR = "Annotations"
SPLITS = ("train", "val", "test")
GROUND_TYPE = "ground"
GROUND_LEVEL = "object"

Sample = dict[str, Any]
Transform = Callable[[Sample], Sample]


@dataclass
class ObjectIndex:
    """Every object of the annotation files in walk order (what the split files index)."""

    objects: list[tuple[VocAnnotation, int, VocObject]]  # (file, object number in it, object)
    complete: bool  # False when an unreadable file stopped the walk
    files: int


def index_objects(root: str | Path, problems: Problems | None = None) -> ObjectIndex:
    """Walk `root/Annotations`; an unreadable file raises, or with `problems` ends the walk."""
    folder = Path(root) / ANNOTATION_DIR
    if not folder.is_dir():
        raise DatasetNotFoundError(f"{folder}: DIOR-RSVG annotation folder not found")
    paths = sorted(folder.glob("*.xml"), key=_walk_key)
    objects: list[tuple[VocAnnotation, int, VocObject]] = []
    for path in paths:
        annotation = attempt(problems, read_voc, path)
        if annotation is None:
            problems.append(f"{path}: the split indices of later objects cannot be placed; "
                            "the walk stops here")  # fmt: skip
            return ObjectIndex(objects, False, len(paths))
        objects.extend((annotation, k, obj) for k, obj in enumerate(annotation.objects))
    return ObjectIndex(objects, True, len(paths))


def _walk_key(path: Path) -> tuple[int, int, str]:
    stem = path.stem
    return (0, int(stem), stem) if stem.isdigit() else (1, 0, stem)


class RSVGDataset(ImageRecords, Dataset[Sample]):
    """The referring expressions of one DIOR-RSVG split (`root/{split}.txt`), as ground records.

    `index` is a walk already made (so several splits read the annotations once); `image_dir`
    overrides `JPEGImages`. With `problems`, each bad split line or object is listed there and
    skipped instead of raised.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        image_dir: str | None = None,
        index: ObjectIndex | None = None,
        bands: BandPolicy | None = None,
        transform: Transform | None = None,
        problems: Problems | None = None,
    ) -> None:
        self.root = Path(root)
        self.split = split
        self.image_root = self.root / (image_dir or IMAGE_DIR)
        self.bands = bands
        self.transform = transform
        self.split_file = self.root / f"{split}.txt"
        self.index = index if index is not None else index_objects(self.root, problems)
        listed = self._listed(problems)
        no_text: list[str] = []
        self.records = []
        for position, (annotation, number, obj) in enumerate(self.index.objects):
            if position not in listed:
                continue
            where = f"{annotation.path}: object {number} (index {position})"
            if obj.problem is None and obj.description is None:
                no_text.append(f"{where}: no <description> (referring expression); skipped")
                continue
            record = attempt(problems, self._record, position, annotation, obj, where)
            if record is not None:
                self.records.append(record)
        skipped(problems, no_text, logger)

    def _listed(self, problems: Problems | None) -> set[int]:
        """The split file's indices; bad lines are errors naming split file:line."""
        if not self.split_file.is_file():
            raise DatasetNotFoundError(
                f"{self.split_file}: DIOR-RSVG split file not found (splits: {', '.join(SPLITS)})"
            )
        lines = read_utf8(self.split_file, AnnotationError).split("\n")
        first_line: dict[int, int] = {}
        repeated: list[str] = []
        for number, line in enumerate(lines, start=1):
            if line.strip():
                attempt(problems, self._index, number, line.strip(), first_line, repeated)
        skipped(problems, repeated, logger)
        return set(first_line)

    def _index(
        self, number: int, text: str, first_line: dict[int, int], repeated: list[str]
    ) -> None:
        where = f"{self.split_file}:{number}"
        if not (text.isascii() and text.isdigit()):
            raise AnnotationError(
                f"{where}: expected an object index (integer >= 0), got {text!r:.40}"
            )
        value = int(text)
        if value in first_line:  # harmless (a set of indices), but a sign of a broken split
            repeated.append(f"{where}: index {value} listed again (first on line "
                            f"{first_line[value]}); read once")  # fmt: skip
            return
        if self.index.complete and value >= len(self.index.objects):
            raise AnnotationError(
                f"{where}: index {value} out of range: the {self.index.files} annotation files "
                f"hold {len(self.index.objects)} objects (indices 0-{len(self.index.objects) - 1})"
            )
        first_line[value] = number

    def _record(
        self, position: int, annotation: VocAnnotation, obj: VocObject, where: str
    ) -> Sample:
        if obj.problem is not None:
            raise AnnotationError(f"{obj.problem} (index {position})")
        image_path = self.image_root / annotation.filename
        width, height = annotation.size or image_size(image_path)
        box = from_pixels(*obj.box, width, height)
        return {
            "image_path": str(image_path),
            "image_id": annotation.filename,
            "question_id": f"rsvg:{position}",
            "task": "ground",
            "box": box.as_list(),
            "answer": box.text(),
            "expression": obj.description,
            "object_class": obj.name,
            "qtype": GROUND_TYPE,
            "level": GROUND_LEVEL,
        }
