"""`synthesize`: generate a whole benchmark folder, optionally on several processes.

Images are rendered and saved by workers (each image only needs its own spec); the parent then
writes the per-split files in id order, so the output is byte-identical for any worker count.
"""

import json
import multiprocessing
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from geostrata.data.synthetic.files import (
    GENERATOR,
    OUTPUTS,
    VERSION,
    ImageRecord,
    write_json,
    write_split,
)
from geostrata.data.synthetic.holdout import Holdout
from geostrata.data.synthetic.questions import AnswerBalancer, make_questions
from geostrata.data.synthetic.scene import ImageSpec, generate_image, plan_split
from geostrata.data.synthetic.tasks import make_tasks
from geostrata.data.synthetic.vocab import (
    AREA_BINS,
    COUNT_BINS,
    LAND_COVERS,
    OBJECT_CLASSES,
    QUESTION_LEVELS,
    SCENE_CLASSES,
    answer_vocab,
)
from geostrata.errors import ConfigError, InputError

SPLITS = ("train", "test")
IN_PROGRESS = ".synthesis-in-progress"  # written first, removed after meta.json (written last)


@dataclass(frozen=True)
class SynthConfig:
    """How much to generate and how: validated on construction."""

    n_train: int
    n_test: int
    size: int = 96
    seed: int = 0
    grid: int = 4
    workers: int = 1
    holdout: Holdout = field(default_factory=Holdout)

    def __post_init__(self) -> None:
        if self.n_train < 0 or self.n_test < 0 or self.n_train + self.n_test == 0:
            raise ConfigError(f"n_train={self.n_train}, n_test={self.n_test}: need >= 0 each "
                              "and at least one image")  # fmt: skip
        if not 32 <= self.size <= 1024:
            raise ConfigError(f"size={self.size}: must be in [32, 1024] pixels")
        if self.grid < 2 or self.grid % 2 or self.grid > self.size // 8:
            raise ConfigError(f"grid={self.grid}: must be even, >= 2 and <= size // 8")
        if self.workers < 1:
            raise ConfigError(f"workers={self.workers}: must be >= 1")


def _render(job: tuple[str, ImageSpec]) -> dict:
    """Worker: render one image, save its PNG, return its annotation."""
    root, spec = job
    generated = generate_image(spec)
    Image.fromarray(generated.image).save(Path(root) / "images" / f"{spec.image_id}.png")
    return generated.annotation


def _prepare(root: Path) -> None:
    """Claim the folder: replace an earlier or unfinished synthesis, never anything else.

    The IN_PROGRESS marker is written before anything else and removed only after meta.json,
    the last file. So a folder holding the marker is ours whatever a kill left in it (it is
    cleared and written again), and meta.json without the marker means a finished synthesis.
    Earlier outputs are removed meta.json first, so a kill while clearing cannot leave a
    meta.json beside half the images.
    """
    if root.exists() and any(root.iterdir()):
        if not ((root / "meta.json").is_file() or (root / IN_PROGRESS).is_file()):
            raise InputError(f"{root} is not empty and holds neither meta.json nor {IN_PROGRESS} "
                             "from an earlier synthesis; refusing to write into it (choose an "
                             "empty or new folder)")  # fmt: skip
    root.mkdir(parents=True, exist_ok=True)
    (root / IN_PROGRESS).write_text(json.dumps({"pid": os.getpid()}) + "\n")
    (root / "meta.json").unlink(missing_ok=True)
    (root / "meta.json.tmp").unlink(missing_ok=True)  # a kill inside write_json leaves it
    for name in OUTPUTS:
        shutil.rmtree(root / name, ignore_errors=True)
    for name in OUTPUTS:
        (root / name).mkdir(parents=True, exist_ok=True)


def _render_all(root: Path, specs: list[ImageSpec], workers: int, progress: bool) -> list[dict]:
    columns = (TextColumn("synthesizing"), BarColumn(), MofNCompleteColumn(),
               TimeRemainingColumn())  # fmt: skip
    jobs = [(str(root), spec) for spec in specs]
    annotations = []
    with Progress(*columns, disable=not progress) as bar:
        task = bar.add_task("images", total=len(jobs))
        if workers == 1:
            for job in jobs:
                annotations.append(_render(job))
                bar.advance(task)
            return annotations
        # spawn, not fork: the caller may hold threads (torch, the progress bar) that fork
        # would copy mid-lock.
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            for ann in pool.imap(_render, jobs, chunksize=16):
                annotations.append(ann)
                bar.advance(task)
    return annotations


def ask(
    seed: int, annotations: list[dict], size: int, hidden: frozenset[str] = frozenset()
) -> list[ImageRecord]:
    """Questions and task items (grounding, regions, dialogues) for one split, image by image in
    id order, the questions through one balancer (``size``: the image side in pixels;
    ``hidden``: object classes no question names)."""
    balancer = AnswerBalancer()
    records = []
    for ann in annotations:
        rng = np.random.default_rng([seed, ann["id"], 1])  # independent of the render stream
        questions = make_questions(rng, ann, balancer, hidden)
        tasks = make_tasks(np.random.default_rng([seed, ann["id"], 2]), ann, size, hidden)
        records.append(ImageRecord(ann, questions, tasks))
    return records


def meta(cfg: SynthConfig) -> dict:
    """meta.json: the contract's keys, plus `notes` documenting the answer rules."""
    return {
        "generator": GENERATOR,
        "version": VERSION,
        "seed": cfg.seed,
        "size": cfg.size,
        "n_train": cfg.n_train,
        "n_test": cfg.n_test,
        "scene_classes": list(SCENE_CLASSES),
        "land_covers": list(LAND_COVERS),
        "object_classes": list(OBJECT_CLASSES),
        "question_levels": dict(QUESTION_LEVELS),
        "answer_vocab": answer_vocab(),
        "grid": cfg.grid,
        "holdout": cfg.holdout.to_dict(),
        "notes": {
            "count": "exact digits 0..10, else 'more than 10'; binned variant: "
            + ", ".join(COUNT_BINS),
            "area": "percent of pixels, rounded up, binned: " + ", ".join(AREA_BINS),
            "box": "[x0, y0, x1, y1] in pixels, x1 and y1 exclusive; shadows excluded",
            "grid": "grid[row][col], row 0 at the top: majority land cover of each cell",
        },
    }


def synthesize(
    out_dir: str | Path,
    n_train: int,
    n_test: int,
    size: int = 96,
    seed: int = 0,
    *,
    grid: int = 4,
    workers: int = 1,
    progress: bool = False,
    holdout: Holdout | None = None,
) -> Path:
    """Generate the synthetic RS benchmark into out_dir (see files.py for the layout).

    Image ids run 0..n_train-1 for train, then n_train.. for test; same arguments give the same
    bytes whatever `workers` is. ``holdout``: classes kept out of the training split (holdout.py).
    A synthesis killed part-way is started again by the next call into the same folder (see
    `_prepare`).
    """
    holdout = holdout or Holdout()
    cfg = SynthConfig(n_train, n_test, size, seed, grid, workers, holdout)
    root = Path(out_dir)
    _prepare(root)
    specs = {
        "train": plan_split(
            seed, "train", 0, n_train, size, grid, holdout.seen_scenes, holdout.objects
        ),
        "test": plan_split(seed, "test", n_train, n_test, size, grid),
    }
    annotations = _render_all(root, specs["train"] + specs["test"], workers, progress)
    qid = 0
    hidden = {"train": frozenset(holdout.objects), "test": frozenset()}
    for split, part in (("train", annotations[:n_train]), ("test", annotations[n_train:])):
        qid = write_split(root, split, ask(seed, part, size, hidden[split]), qid)
    write_json(root / "meta.json", meta(cfg), indent=2)
    (root / IN_PROGRESS).unlink()
    return root
