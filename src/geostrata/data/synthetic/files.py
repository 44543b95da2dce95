"""The on-disk formats of a synthesized benchmark: writing them and reading the annotations back.

Layout under the output folder (the shared data contract):
meta.json, images/{id}.png, scenes/{scene}/{id}.png (hard links), splits/{split}.txt,
annotations/{split}.jsonl, rsvqa/SYN_split_{split}_{questions,answers,images}.json,
instruct/{split}.json (LLaVA/GeoChat conversations), instruct/{split}_{task}.json for the
grounding, region-description and dialogue tasks (tasks.py says what their entries hold).
"""

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from geostrata.atomic import write_text_atomic
from geostrata.data.synthetic.questions import Question
from geostrata.data.synthetic.tasks import TASK_FILES, TaskItems, task_entries
from geostrata.errors import AnnotationError, DatasetNotFoundError
from geostrata.prompts import CAPTION_QUESTION
from geostrata.textio import read_utf8

GENERATOR = "geostrata.synthetic"
VERSION = 2  # 2: objects' colour and cover, land-cover areas, the ground / region / chat files
OUTPUTS = ("images", "scenes", "splits", "annotations", "rsvqa", "instruct")


@dataclass(frozen=True)
class ImageRecord:
    """What the writer keeps of one generated image: its annotation and its questions."""

    annotation: dict
    questions: list[Question]
    tasks: TaskItems = TaskItems((), (), ())


def write_json(path: Path, obj: object, indent: int | None = None) -> None:
    """Write JSON atomically (temp file + rename), so a crash never leaves half a file."""
    write_text_atomic(path, json.dumps(obj, ensure_ascii=False, indent=indent))


def link_scene(root: Path, scene: str, image_id: int) -> str:
    """Hard-link images/{id}.png into scenes/{scene}/ (copy where links fail); returns its path."""
    rel = f"scenes/{scene}/{image_id}.png"
    target = root / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        target.unlink()
    try:
        os.link(root / "images" / f"{image_id}.png", target)
    except OSError:
        shutil.copyfile(root / "images" / f"{image_id}.png", target)
    return rel


def write_split(root: Path, split: str, records: list[ImageRecord], first_qid: int) -> int:
    """Write one split in every format; question ids continue from first_qid. Returns next id."""
    rels = [link_scene(root, r.annotation["scene"], r.annotation["id"]) for r in records]
    write_text_atomic(root / "splits" / f"{split}.txt", "".join(f"{rel}\n" for rel in rels))
    lines = [json.dumps(r.annotation, ensure_ascii=False) for r in records]
    write_text_atomic(root / "annotations" / f"{split}.jsonl", "".join(f"{ln}\n" for ln in lines))
    images, questions, answers, instruct = [], [], [], []
    entries: dict[str, list[dict]] = {task: [] for task in TASK_FILES}
    qid = first_qid
    for r in records:
        for task, made in task_entries(r.annotation, r.tasks).items():
            entries[task] += made
        img_id, qids = r.annotation["id"], []
        for q in r.questions:
            questions.append({"id": qid, "img_id": img_id, "type": q.qtype,
                              "question": q.question, "answers_ids": [qid], "active": True,
                              "level": q.level})  # fmt: skip
            answers.append({"id": qid, "question_id": qid, "answer": q.answer, "active": True})
            qids.append(qid)
            qid += 1
        images.append({"id": img_id, "active": True, "questions_ids": qids})
        instruct.append(_conversation(r))
    prefix = root / "rsvqa" / f"SYN_split_{split}"
    write_json(Path(f"{prefix}_questions.json"), {"questions": questions})
    write_json(Path(f"{prefix}_answers.json"), {"answers": answers})
    write_json(Path(f"{prefix}_images.json"), {"images": images})
    write_json(root / "instruct" / f"{split}.json", instruct)
    for task in TASK_FILES:
        write_json(task_path(root, split, task), entries[task])
    return qid


def task_path(root: str | Path, split: str, task: str) -> Path:
    """Where a split's entries of one task (ground, region, chat) are."""
    return Path(root) / "instruct" / f"{split}_{task}.json"


def _conversation(record: ImageRecord) -> dict:
    """LLaVA/GeoChat form: the questions as turns, then a caption request as the last turn."""
    turns = []
    pairs = [(q.question, q.answer) for q in record.questions]
    pairs.append((CAPTION_QUESTION, record.annotation["caption"]))
    for i, (question, answer) in enumerate(pairs):
        prompt = f"<image>\n{question}" if i == 0 else question
        turns += [{"from": "human", "value": prompt}, {"from": "gpt", "value": answer}]
    ann = record.annotation
    return {"id": str(ann["id"]), "image": ann["image"], "conversations": turns}


META_LISTS = ("scene_classes", "land_covers", "object_classes")
ANNOTATION_TYPES: dict[str, type | tuple[type, ...]] = {
    "id": int, "image": str, "scene": str, "regions": dict, "objects": list, "attributes": dict,
    "caption": str,
}


def load_meta(root: str | Path) -> dict:
    """Read DIR/meta.json of a synthesized benchmark, checking the class lists loaders use."""
    path = Path(root) / "meta.json"
    if not path.is_file():
        raise DatasetNotFoundError(f"{path} not found: is {root} a `geostrata data synth` output?")
    try:
        meta = json.loads(read_utf8(path, AnnotationError))
    except json.JSONDecodeError as e:
        raise AnnotationError(f"{path}: invalid JSON at line {e.lineno}: {e.msg}") from e
    if not isinstance(meta, dict):
        raise AnnotationError(f"{path}: expected a JSON object, got {type(meta).__name__}")
    if meta.get("generator") != GENERATOR:
        raise AnnotationError(f"{path}: key 'generator' is {meta.get('generator')!r}, "
                              f"expected {GENERATOR!r}")  # fmt: skip
    for key in META_LISTS:
        value = meta.get(key)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise AnnotationError(f"{path}: key {key!r} must be a list of strings, got {value!r}")
    return meta


def _check_annotation(ann: object, where: str) -> dict:
    """One annotation line: an object with every key the training loaders read, typed."""
    if not isinstance(ann, dict):
        raise AnnotationError(f"{where}: expected a JSON object, got {type(ann).__name__}")
    for key, kind in ANNOTATION_TYPES.items():
        if key not in ann:
            raise AnnotationError(f"{where}: missing key {key!r}")
        if not isinstance(ann[key], kind) or isinstance(ann[key], bool):
            raise AnnotationError(f"{where}: key {key!r} must be a {kind.__name__}, "
                                  f"got {ann[key]!r}")  # fmt: skip
    fractions = ann["regions"].get("fractions", {})
    if not isinstance(fractions, dict) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in fractions.values()):
        raise AnnotationError(f"{where}: key 'regions.fractions' must map land covers to numbers")
    if not all(isinstance(o, dict) and isinstance(o.get("class"), str) for o in ann["objects"]):
        raise AnnotationError(f"{where}: key 'objects' must hold objects with a string 'class'")
    return ann


def load_annotations(root: str | Path, split: str) -> dict[int, dict]:
    """Read DIR/annotations/{split}.jsonl into {image id: annotation}; ids must be unique."""
    path = Path(root) / "annotations" / f"{split}.jsonl"
    if not path.is_file():
        raise DatasetNotFoundError(f"{path} not found (split {split!r} of {root})")
    out: dict[int, dict] = {}
    # split("\n"), not splitlines(): captions are written raw (ensure_ascii=False).
    for lineno, text in enumerate(read_utf8(path, AnnotationError).split("\n"), start=1):
        if not text.strip():
            continue
        try:
            ann = json.loads(text)
        except json.JSONDecodeError as e:
            raise AnnotationError(f"{path}:{lineno}: invalid JSON: {e.msg}") from e
        ann = _check_annotation(ann, f"{path}:{lineno}")
        if ann["id"] in out:  # a second line would silently replace the first
            raise AnnotationError(f"{path}:{lineno}: key 'id': duplicate image id {ann['id']}")
        out[ann["id"]] = ann
    return out


TASK_KEYS: dict[str, dict[str, type]] = {
    "ground": {"expression": str, "box": list},
    "region": {"box": list, "level": str, "references": list},
    "chat": {"kinds": list, "levels": list},
}


def load_task_entries(root: str | Path, split: str, task: str) -> dict[str, dict]:
    """Read instruct/{split}_{task}.json into {entry id: entry}, checking the extra keys of its
    task (tasks.py); the conversations themselves are read by data/instruct.py."""
    from geostrata.boxes import Box
    from geostrata.errors import InputError

    path = task_path(root, split, task)
    if not path.is_file():
        raise DatasetNotFoundError(f"{path} not found: the benchmark in {root} predates the "
                                   "grounding / region / chat tasks (or was cut); synthesize "
                                   "it again (`geostrata data synth`)")  # fmt: skip
    try:
        document = json.loads(read_utf8(path, AnnotationError))
    except json.JSONDecodeError as e:
        raise AnnotationError(f"{path}: invalid JSON at line {e.lineno}: {e.msg}") from e
    if not isinstance(document, list):
        raise AnnotationError(f"{path}: expected a list of conversation entries")
    out: dict[str, dict] = {}
    for i, entry in enumerate(document):
        where = f"{path}: entry {i}"
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
            raise AnnotationError(f"{where}: expected an object with a string 'id'")
        for key, kind in {"task": str, **TASK_KEYS[task]}.items():
            if not isinstance(entry.get(key), kind):
                raise AnnotationError(f"{where}: key {key!r} must be a {kind.__name__}, "
                                      f"got {entry.get(key)!r:.60}")  # fmt: skip
        if entry["task"] != task:
            raise AnnotationError(f"{where}: key 'task' is {entry['task']!r}, expected {task!r}")
        if "box" in entry:
            try:
                Box.of(entry["box"])
            except InputError as e:
                raise AnnotationError(f"{where}: key 'box': {e}") from e
        lists = [entry[k] for k in ("references", "kinds", "levels") if k in entry]
        if not all(v and all(isinstance(x, str) for x in v) for v in lists):
            raise AnnotationError(f"{where}: references / kinds / levels must be non-empty "
                                  "lists of strings")  # fmt: skip
        if entry["id"] in out:
            raise AnnotationError(f"{where}: key 'id': duplicate entry id {entry['id']!r}")
        out[entry["id"]] = entry
    return out
