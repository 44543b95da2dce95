"""Scene-classification data sets stored one folder per class.

UCMerced (`Images/<class>/*.tif`), AID, NWPU-RESISC45 and WHU-RS19 (`<class>/*.jpg`), and our
synthetic `scenes/<class>/*.png` all share this layout, so one loader covers them. Classes are
the sorted folder names (or the `classes` the caller gives, in that order), so label indices
are stable across machines. Stray files (readme.txt, .DS_Store, Thumbs.db) are skipped with a
warning because real downloads contain them; problems in a split file are errors naming the
file and line, because a silently shorter split changes reported accuracy.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path, PurePath
from typing import Any

from torch.utils.data import Dataset

from geostrata.data.images import MISSING_LISTED, BandPolicy, ImageRecords, missing_files
from geostrata.data.problems import Problems, attempt
from geostrata.errors import AnnotationError, DatasetNotFoundError
from geostrata.textio import read_utf8

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".tif", ".tiff", ".jpg", ".jpeg", ".png", ".bmp")
NESTED_ROOT = "Images"  # UCMerced keeps its class folders one level down
WARN_EXAMPLES = 5  # skipped files named in the warning before summarising

Sample = dict[str, Any]
Transform = Callable[[Sample], Sample]


class SceneFolderDataset(ImageRecords, Dataset[Sample]):
    """Folder-per-class scenes: samples {"image", "image_path", "label", "label_index"}.

    `split_file` lists one image per line, either a path (relative to the root, the class-folder
    root, or the split file's folder or its parent; a bare file name is looked up among the
    scanned images) or `path label`. `transform` maps a sample dict to a sample dict.
    """

    def __init__(
        self,
        root: str | Path,
        split_file: str | Path | None = None,
        classes: Sequence[str] | None = None,
        extensions: Iterable[str] = IMAGE_EXTENSIONS,
        transform: Transform | None = None,
        bands: BandPolicy | None = None,
        problems: Problems | None = None,
    ) -> None:
        self.root = Path(root)
        self.class_root = _find_class_root(self.root)
        self.classes = _find_classes(self.class_root, classes)
        self.class_to_index = {name: index for index, name in enumerate(self.classes)}
        self.extensions = tuple(ext.lower() for ext in extensions)
        self.transform = transform
        self.bands = bands
        scanned = self._scan()
        if split_file is None:
            self.records = [
                _scene_record(path, path.parent.name, self.class_to_index) for path in scanned
            ]
        else:
            self.records = _SplitReader(self, Path(split_file), scanned).read(problems)

    def _scan(self) -> list[Path]:
        """Every image file in the class folders, sorted; others skipped with one warning."""
        images: list[Path] = []
        skipped: list[str] = []
        empty: list[str] = []  # class folders that exist but hold no image
        for name in self.classes:
            folder = self.class_root / name
            found = len(images)
            for path in sorted(folder.iterdir()) if folder.is_dir() else []:
                hidden = path.name.startswith(".")
                if not hidden and path.is_file() and path.suffix.lower() in self.extensions:
                    images.append(path)
                else:
                    skipped.append(f"{name}/{path.name}")
            if folder.is_dir() and len(images) == found:
                empty.append(str(folder))
        if skipped:
            logger.warning(
                "%s: skipped %d hidden, non-image or nested entries (e.g. %s)",
                self.class_root, len(skipped), ", ".join(skipped[:WARN_EXAMPLES]),
            )
        if empty and images:
            logger.warning(
                "%d class folder(s) hold no image files with extensions %s, so their classes "
                "get no samples: %s",
                len(empty), self.extensions, ", ".join(empty[:WARN_EXAMPLES])
                + (f" and {len(empty) - WARN_EXAMPLES} more" if len(empty) > WARN_EXAMPLES else ""),
            )
        if not images:
            raise DatasetNotFoundError(
                f"{self.class_root}: no image files with extensions {self.extensions} in the "
                f"class folders {self.classes[:WARN_EXAMPLES]}"
            )
        return images


def _scene_record(path: Path, label: str, class_to_index: dict[str, int]) -> Sample:
    return {"image_path": str(path), "label": label, "label_index": class_to_index[label]}


def _find_class_root(root: Path) -> Path:
    if not root.is_dir():
        raise DatasetNotFoundError(f"{root}: data set folder not found (nothing is downloaded)")
    nested = root / NESTED_ROOT
    return nested if nested.is_dir() else root


def _find_classes(class_root: Path, classes: Sequence[str] | None) -> list[str]:
    """The given classes, in order, or every non-hidden sub-folder, sorted.

    A given class without a folder only warns: a small split (or our synthetic set) may lack a
    class, and keeping it in the list keeps label indices equal across splits.
    """
    if classes is not None:
        classes = list(classes)
        missing = [name for name in classes if not (class_root / name).is_dir()]
        if len(missing) == len(classes):
            raise DatasetNotFoundError(f"{class_root}: no folder for any of the classes {classes}")
        if missing:
            logger.warning("%s: no folder (no images) for class(es) %s", class_root, missing)
        return classes
    found = sorted(
        p.name for p in class_root.iterdir() if p.is_dir() and not p.name.startswith(".")
    )
    if not found:
        raise DatasetNotFoundError(
            f"{class_root}: no class folders; expected <root>/<class>/*.jpg "
            f"or <root>/{NESTED_ROOT}/<class>/*.tif"
        )
    return found


class _SplitReader:
    """Turns a split file into records, naming the file and line of every problem."""

    def __init__(self, dataset: SceneFolderDataset, split_file: Path, scanned: list[Path]) -> None:
        self.dataset = dataset
        self.split_file = split_file
        self.by_class_and_name = {(p.parent.name, p.name): p for p in scanned}
        self.by_name: dict[str, list[Path]] = {}
        for path in scanned:
            self.by_name.setdefault(path.name, []).append(path)
        parent = split_file.parent
        bases = [dataset.root, dataset.class_root, parent, parent.parent]
        self.bases = list(dict.fromkeys(bases))  # unique, in order

    def read(self, problems: Problems | None = None) -> list[Sample]:
        """The listed images' records; with `problems`, bad lines are listed there and skipped,
        without, every bad line (unknown class, missing or ambiguous file) is in one
        AnnotationError, so one pass over the file fixes them all."""
        found: Problems = [] if problems is None else problems
        start, records = len(found), []
        for number, line in enumerate(self._lines(), start=1):
            entry = line.strip()
            if entry and not entry.startswith("#"):
                records.append(attempt(found, self._parse, entry, number))
        bad = found[start:]
        if problems is None and len(bad) == 1:
            raise AnnotationError(bad[0])
        if problems is None and bad:
            more = len(bad) - MISSING_LISTED
            listed = bad[:MISSING_LISTED] + ([f"... and {more} more"] if more > 0 else [])
            raise AnnotationError(
                f"{len(bad)} bad lines in {self.split_file}:\n  " + "\n  ".join(listed)
            )
        return [record for record in records if record is not None]

    def _lines(self) -> list[str]:
        if not self.split_file.is_file():
            raise DatasetNotFoundError(f"{self.split_file}: split file not found")
        return read_utf8(self.split_file, AnnotationError).split("\n")  # lines are stripped

    def _parse(self, entry: str, number: int) -> Sample:
        where = f"{self.split_file}, line {number}"
        path, listed, label = self._resolve(entry, where), entry, None
        tokens = entry.rsplit(maxsplit=1)
        if path is None and len(tokens) == 2:  # "path label"
            listed, label = tokens
            path = self._resolve(listed, where)
        if label is None:
            label = path.parent.name if path is not None else PurePath(listed).parent.name
        if label not in self.dataset.class_to_index:
            known = ", ".join(self.dataset.classes[:20])
            raise AnnotationError(f"{where}: unknown class {label!r} (known: {known})")
        if path is None:
            raise AnnotationError(
                f"{where}: listed file {listed!r} not found (looked in "
                f"{', '.join(str(base) for base in self.bases)})"
            )
        return _scene_record(path, label, self.dataset.class_to_index)

    def _resolve(self, listed: str, where: str) -> Path | None:
        parts = PurePath(listed).parts
        if len(parts) >= 2 and (parts[-2], parts[-1]) in self.by_class_and_name:
            return self.by_class_and_name[(parts[-2], parts[-1])]
        if len(parts) == 1 and listed in self.by_name:
            matches = self.by_name[listed]
            if len(matches) > 1:
                raise AnnotationError(
                    f"{where}: file name {listed!r} is ambiguous, it exists in "
                    f"{sorted(p.parent.name for p in matches)}; list it as <class>/{listed}"
                )
            return matches[0]
        for base in self.bases:
            candidate = base / listed
            if not missing_files([candidate]):
                return candidate
        return None
