"""Batch prediction: many (image, question) pairs -> one JSONL row each, resumable after a kill.

Inputs are a folder (its images, recursively), a glob, one image, or a JSONL of
``{"image": ..., "question": ...}`` (paths relative to the JSONL's folder); an input without its
own question is asked every question given. The model is loaded once and each image goes through
`geostrata.inference.predict`, the same path as chat and the apps.

Each row is appended as one complete line, flushed and fsync'ed, so a kill loses at most the line
being written. The next run drops that cut line and skips every pair already answered (rows are
keyed by image + question): no duplicates, nothing missing. Missing images are refused before the
model loads, in one error naming them all. An image that exists but cannot be decoded gets an
error row and the run goes on; error rows are retried (and replaced) by the next run, so fixing
the file and running again completes the output.
"""

from __future__ import annotations

import glob
import json
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from geostrata.atomic import write_bytes_atomic, write_text_atomic
from geostrata.errors import AnnotationError, DatasetNotFoundError, ImageError, InputError
from geostrata.textio import read_jsonl

Key = tuple[str, str]  # (absolute image path, question)


@dataclass(frozen=True)
class Job:
    image: Path  # absolute
    question: str
    source: dict[str, Any] = field(
        default_factory=dict, compare=False
    )  # a JSONL row's other fields

    @property
    def key(self) -> Key:
        return str(self.image), self.question


@dataclass(frozen=True)
class BatchSummary:
    out: Path
    written: int  # rows this run appended
    skipped: int  # pairs already answered by an earlier run
    errors: int  # rows this run wrote with an "error" instead of an answer
    seconds: float


def evidence(pred: Any) -> dict[str, Any]:
    """A Prediction's evidence as JSON: cues per level, router weights, top classes."""
    return {
        "cues": {
            level: [{"id": c.id, "name": c.name, "score": round(c.score, 4)} for c in cues]
            for level, cues in pred.cues.items()
        },
        "router": {level: round(w, 4) for level, w in pred.router.items()},
        "class_probs": [{"name": n, "prob": round(p, 4)} for n, p in pred.class_probs],
    }


# ---- inputs ------------------------------------------------------------------------------------
def collect_jobs(inputs: str | Path, questions: Sequence[str] = ()) -> list[Job]:
    """The (image, question) pairs of `inputs`, first occurrence kept; every image checked to
    exist (one ImageError naming all the missing ones)."""
    from geostrata.data.images import check_image_files
    from geostrata.inference import check_question

    questions = [check_question(q) for q in questions]
    text, path = str(inputs), Path(inputs)
    if path.is_file() and path.suffix.lower() == ".jsonl":
        jobs = list(_jsonl_jobs(path, questions))
    else:
        jobs = _ask_each(_images(text), questions, text)
    unique: dict[Key, Job] = {}
    for job in jobs:
        unique.setdefault(job.key, job)
    check_image_files(job.image for job in unique.values())
    return list(unique.values())


def _images(inputs: str) -> list[Path]:
    from geostrata.data.folder import IMAGE_EXTENSIONS

    path = Path(inputs)
    if path.is_dir():
        found = [p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS]
    elif any(c in inputs for c in "*?["):
        found = [Path(p) for p in glob.glob(inputs, recursive=True) if Path(p).is_file()]
    elif path.is_file():
        found = [path]
    else:
        raise DatasetNotFoundError(f"{inputs}: not a folder, an image, a JSONL file or a glob")
    if not found:
        raise DatasetNotFoundError(f"{inputs}: no images ({', '.join(IMAGE_EXTENSIONS)})")
    return sorted(p.absolute() for p in found)


def _ask_each(images: list[Path], questions: list[str], inputs: str) -> list[Job]:
    if not questions:
        raise InputError(f"{inputs} holds images only: give the question with --question")
    return [Job(image, q) for image in images for q in questions]


def _jsonl_jobs(path: Path, questions: list[str]) -> Iterator[Job]:
    """One job per row (or per --question for a row without "question")."""
    from geostrata.inference import check_question

    for where, row in read_jsonl(path, AnnotationError):
        if not isinstance(row, dict) or not isinstance(row.get("image"), str):
            raise AnnotationError(f'{where}: expected {{"image": "<path>", "question": "..."}}')
        source = {k: v for k, v in row.items() if k not in ("image", "question")}
        image = (path.parent / row["image"]).absolute()
        asked = row.get("question")
        if asked is None and not questions:
            raise AnnotationError(f'{where}: no "question" in the row and no --question given')
        try:
            for question in [check_question(asked)] if asked is not None else questions:
                yield Job(image, question, source)
        except InputError as exc:
            raise AnnotationError(f"{where}: {exc}") from exc


# ---- output ------------------------------------------------------------------------------------
def resume_rows(out: Path, model: str) -> list[dict[str, Any]]:
    """The answered rows of an earlier run's `out`, after dropping a line a kill cut short and
    the error rows (to be retried); `out` is rewritten atomically when anything was dropped."""
    if not out.is_file():
        return []
    _drop_cut_line(out)
    rows = [_earlier_row(where, row, model) for where, row in read_jsonl(out, AnnotationError)]
    answered = [row for row in rows if "error" not in row]
    if len(answered) < len(rows):
        write_text_atomic(out, "".join(_line(row) for row in answered))
    return answered


def _drop_cut_line(out: Path) -> None:
    """A file not ending in a newline was cut mid-write: keep only its complete lines."""
    data = out.read_bytes()
    if data and not data.endswith(b"\n"):
        write_bytes_atomic(out, data[: data.rfind(b"\n") + 1])


def _earlier_row(where: str, row: Any, model: str) -> dict[str, Any]:
    """A row of an earlier run, refused when it is not ours or comes from another model."""
    if not (
        isinstance(row, dict)
        and isinstance(row.get("image"), str)
        and isinstance(row.get("question"), str)
    ):
        raise AnnotationError(f"{where}: not a prediction row (no image and question)")
    if row.get("model") != model:
        raise InputError(
            f"{where}: a prediction of another model ({row.get('model')}), not {model}: "
            "choose another --out, or delete the file to start over"
        )
    return row


def _line(row: dict[str, Any]) -> str:
    return json.dumps(row, ensure_ascii=False) + "\n"


class RowWriter:
    """Appends rows as whole lines; each is flushed and fsync'ed before the next is written."""

    def __init__(self, file: IO[str]) -> None:
        self._file = file

    def write(self, row: dict[str, Any]) -> None:
        self._file.write(_line(row))
        self._file.flush()
        os.fsync(self._file.fileno())


@contextmanager
def appending(out: Path) -> Iterator[RowWriter]:
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "a", encoding="utf-8") as file:
        yield RowWriter(file)


# ---- running -----------------------------------------------------------------------------------
def predict_row(
    loaded: Any, job: Job, model: str, classes: list[str] | None, max_new_tokens: int
) -> dict[str, Any]:
    """One output row: the answer and its evidence, or the reason the image could not be read."""
    from geostrata.inference import predict

    row: dict[str, Any] = {"image": str(job.image), "question": job.question, "model": model}
    if job.source:
        row["input"] = job.source
    start = time.perf_counter()
    try:
        pred = predict(loaded, job.image, job.question, classes, max_new_tokens)
    except ImageError as exc:
        return {**row, "error": str(exc)}
    seconds = round(time.perf_counter() - start, 4)
    return {**row, "answer": pred.answer, **evidence(pred), "seconds": seconds}


def predict_all(
    loaded: Any,
    jobs: Sequence[Job],
    out: str | Path,
    classes: list[str] | None = None,
    max_new_tokens: int = 16,
    show_progress: bool = True,
) -> BatchSummary:
    """Answer every job not already in `out`, appending one durable row per job."""
    from rich.progress import Progress

    out, model, start = Path(out), str(Path(loaded.path).absolute()), time.perf_counter()
    done = {(row["image"], row["question"]) for row in resume_rows(out, model)}
    todo = [job for job in jobs if job.key not in done]
    errors = 0
    with appending(out) as writer, Progress(disable=not show_progress) as progress:
        task = progress.add_task("Predicting", total=len(todo))
        for job in todo:
            row = predict_row(loaded, job, model, classes, max_new_tokens)
            writer.write(row)
            errors += "error" in row
            progress.advance(task)
    seconds = time.perf_counter() - start
    return BatchSummary(out, len(todo), len(jobs) - len(todo), errors, seconds)
