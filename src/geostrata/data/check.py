"""`geostrata data check`: read a data set as training would and report every problem at once.

Each kind is read through its own loader (the same code training uses) with a problems list, so
a bad entry is named (file:line, or file and entry / object) and skipped rather than raised; a
file that cannot be read at all (missing, not JSON) is one problem and the other files go on.
The report counts records per split and task, levels, question types, classes where the format
has them, and the images that are referenced but missing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from geostrata.data.images import missing_files
from geostrata.data.problems import Problems
from geostrata.errors import ConfigError, DatasetNotFoundError, GeoStrataError

T = TypeVar("T")
Records = list[dict[str, Any]]


@dataclass(frozen=True)
class CheckOptions:
    """What `geostrata data check` may be told besides the folder and the kind."""

    splits: tuple[str, ...] = ()  # empty: every split (or file) the layout has
    prefix: str = "LR"  # RSVQA file prefix
    image_dir: str | None = None
    image_ext: str | None = None


@dataclass
class CheckReport:
    """Counts and problems of one data set; `ok` when nothing is wrong."""

    root: str
    kind: str
    records: dict[str, dict[str, int]] = field(default_factory=dict)  # split -> task -> count
    images: int = 0  # distinct image files referenced
    missing_images: list[str] = field(default_factory=list)
    levels: dict[str, int] = field(default_factory=dict)
    qtypes: dict[str, int] = field(default_factory=dict)
    classes: dict[str, list[str]] = field(default_factory=dict)  # what -> class names
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and not self.missing_images

    def lines(self) -> list[str]:
        """The report as text lines (what the command prints)."""
        out = [f"{self.root} (kind {self.kind})"]
        for split, tasks in self.records.items():
            counts = ", ".join(f"{task} {n}" for task, n in tasks.items())
            out.append(f"  {split or 'all'}: {sum(tasks.values())} records ({counts or 'none'})")
        out.append(f"  images: {self.images} referenced, {len(self.missing_images)} missing")
        out += [f"  levels: {_counts(self.levels)}", f"  question types: {_counts(self.qtypes)}"]
        out += [
            f"  {what}: {len(names)} ({', '.join(names)})" for what, names in self.classes.items()
        ]
        out += _section("problems", self.problems) + _section("missing images", self.missing_images)
        verdict = "OK" if self.ok else "FAILED"
        out.append(
            f"{verdict}: {len(self.problems)} problems, {len(self.missing_images)} missing images"
        )
        return out


@dataclass
class _Loaded:
    """What a kind's reader found: records per split, the task of records without one, classes."""

    splits: dict[str, Records] = field(default_factory=dict)
    task: str = "vqa"
    classes: dict[str, list[str]] = field(default_factory=dict)


Reader = Callable[[Path, CheckOptions, Problems], _Loaded]


def check_dataset(root: str | Path, kind: str, options: CheckOptions | None = None) -> CheckReport:
    """Read `root` as a data set of `kind` and report everything found wrong with it."""
    if kind not in READERS:
        raise ConfigError(f"unknown data kind {kind!r}; known: {', '.join(READERS)}")
    root = Path(root)
    if not root.exists():
        raise DatasetNotFoundError(f"{root}: not found (nothing is downloaded)")
    problems: Problems = []
    loaded = READERS[kind](root, options or CheckOptions(), problems)
    return _report(root, kind, loaded, problems)


def _report(root: Path, kind: str, loaded: _Loaded, problems: Problems) -> CheckReport:
    every = [record for records in loaded.splits.values() for record in records]
    paths = list(dict.fromkeys(record["image_path"] for record in every))
    return CheckReport(
        root=str(root),
        kind=kind,
        records={
            split: dict(Counter(r.get("task", loaded.task) for r in records))
            for split, records in loaded.splits.items()
        },
        images=len(paths),
        missing_images=missing_files(paths),
        levels=dict(Counter(r["level"] for r in every if "level" in r)),
        qtypes=dict(Counter(r["qtype"] for r in every if "qtype" in r)),
        classes=loaded.classes,
        problems=problems,
    )


def _whole(sink: Problems, read: Callable[..., T], /, *args: Any, **kwargs: Any) -> T | None:
    """read(...) of a whole file or folder; any GeoStrataError is one problem in `sink`."""
    try:
        return read(*args, **kwargs)
    except GeoStrataError as err:
        sink.append(str(err))
        return None


def _records(dataset: Any) -> Records:
    return list(dataset.records) if dataset is not None else []


# ------------------------------------------------------------------ one reader per kind
def _synthetic(root: Path, options: CheckOptions, problems: Problems) -> _Loaded:
    from geostrata.data.rsvqa import RSVQADataset
    from geostrata.data.synthetic import load_annotations, load_meta

    loaded = _Loaded()
    meta = _whole(problems, load_meta, root)
    if meta is not None:
        loaded.classes = {f"{key} classes": list(meta[key]) for key in _META_CLASSES}
    for split in options.splits or ("train", "test"):
        dataset = _whole(problems, RSVQADataset, root, split, prefix="SYN", problems=problems)
        annotations = _whole(problems, load_annotations, root, split) or {}
        captions = [
            {"image_path": str(root / a["image"]), "task": "caption", "level": "scene"}
            for a in annotations.values()
        ]
        loaded.splits[split] = _records(dataset) + captions
    return loaded


_META_CLASSES = ("scene_classes", "land_covers", "object_classes")


def _rsvqa(root: Path, options: CheckOptions, problems: Problems) -> _Loaded:
    from geostrata.data.rsvqa import JSON_DIRS, RSVQADataset

    found = [
        p.name.removeprefix(f"{options.prefix}_split_").removesuffix("_questions.json")
        for folder in JSON_DIRS
        for p in sorted((root / folder).glob(f"{options.prefix}_split_*_questions.json"))
    ]
    splits = options.splits or tuple(dict.fromkeys(found))
    if not splits:
        problems.append(f"{root}: no {options.prefix}_split_*_questions.json (RSVQA) files")
    read = {
        split: _whole(
            problems, RSVQADataset, root, split, prefix=options.prefix,
            image_dir=options.image_dir, image_ext=options.image_ext, problems=problems,
        )
        for split in splits
    }  # fmt: skip
    return _Loaded({split: _records(dataset) for split, dataset in read.items()})


def _folder(root: Path, options: CheckOptions, problems: Problems) -> _Loaded:
    from geostrata.data.folder import SceneFolderDataset

    whole = _whole(problems, SceneFolderDataset, root)
    loaded = _Loaded({"": _records(whole)}, task="cls")
    if whole is not None:
        loaded.classes = {"scene classes": list(whole.classes)}
    for split in options.splits:
        dataset = _whole(
            problems, SceneFolderDataset, root, split_file=root / split, problems=problems
        )
        loaded.splits[split] = _records(dataset)
    return loaded


def _instruct(root: Path, options: CheckOptions, problems: Problems) -> _Loaded:
    from geostrata.data.instruct import InstructionDataset

    image_root = options.image_dir or root  # as data.image_dir: a folder of its own
    return _per_file(root, options, "*.json", problems, InstructionDataset, image_root, "vqa")


def _geochat_bench(root: Path, options: CheckOptions, problems: Problems) -> _Loaded:
    from geostrata.data.instruct import GeoChatBenchDataset

    image_root = options.image_dir or root
    return _per_file(root, options, "*.jsonl", problems, GeoChatBenchDataset, image_root, "vqa")


def _per_file(
    root: Path, options: CheckOptions, pattern: str, problems: Problems, loader: Callable[..., Any],
    image_root: str | Path, task: str,
) -> _Loaded:  # fmt: skip
    """Formats of one file per split: the files named, else every `pattern` file in `root`."""
    names = options.splits or tuple(p.name for p in sorted(root.glob(pattern)))
    if not names:
        problems.append(f"{root}: no {pattern} files (name them with --split)")
    splits = {
        name: _records(_whole(problems, loader, root / name, image_root, problems=problems))
        for name in names
    }
    return _Loaded(splits, task=task)


def _karpathy_captions(root: Path, options: CheckOptions, problems: Problems) -> _Loaded:
    from geostrata.data.captions import CaptionDataset

    dataset = _whole(problems, CaptionDataset, root, image_dir=options.image_dir, problems=problems)
    splits: dict[str, Records] = {}
    for record in _records(dataset):
        splits.setdefault(record["split"], []).append(record)
    wanted = options.splits or tuple(splits)
    return _Loaded({split: splits.get(split, []) for split in wanted}, task="caption")


def _dior_rsvg(root: Path, options: CheckOptions, problems: Problems) -> _Loaded:
    from geostrata.data.rsvg import SPLITS, RSVGDataset, index_objects

    index = _whole(problems, index_objects, root, problems)
    if index is None:
        return _Loaded(task="ground")
    splits = options.splits or tuple(s for s in SPLITS if (root / f"{s}.txt").is_file())
    if not splits:
        problems.append(f"{root}: no split files ({', '.join(f'{s}.txt' for s in SPLITS)})")
    read = {
        split: _whole(
            problems, RSVGDataset, root, split, image_dir=options.image_dir, index=index,
            problems=problems,
        )
        for split in splits
    }  # fmt: skip
    names = sorted({obj.name for _, _, obj in index.objects if obj.name})
    return _Loaded(
        {split: _records(dataset) for split, dataset in read.items()},
        task="ground",
        classes={"object classes": names},
    )


def _vrsbench(root: Path, options: CheckOptions, problems: Problems) -> _Loaded:
    from geostrata.data.vrsbench import VRSBenchDataset

    tasks = options.splits or None  # --split names the tasks: caption, ground, vqa
    dataset = _whole(
        problems, VRSBenchDataset, root, tasks, image_dir=options.image_dir, problems=problems
    )
    return _Loaded({"eval": _records(dataset)})


READERS: dict[str, Reader] = {
    "synthetic": _synthetic,
    "rsvqa": _rsvqa,
    "folder": _folder,
    "instruct": _instruct,
    "geochat_bench": _geochat_bench,
    "karpathy_captions": _karpathy_captions,
    "dior_rsvg": _dior_rsvg,
    "vrsbench": _vrsbench,
}


def _counts(counter: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counter.items())) or "none"


def _section(title: str, items: Iterable[str]) -> list[str]:
    items = list(items)
    return [f"{title} ({len(items)}):", *(f"  {item}" for item in items)] if items else []
