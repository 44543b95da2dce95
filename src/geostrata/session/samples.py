"""Turn any supported data set into one list of VQA-style sample records.

Every format goes through the loaders of `geostrata.data`; this module only maps their records to
what training and evaluation need: image path, question, answer, question type, semantic level, and
(where known) the multi-level truth used by the alignment loss.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geostrata.boxes import Box
from geostrata.data.targets import Truth
from geostrata.knowledge.schema import spoken
from geostrata.session.experiment import DataConfig

SCENE_QUESTION = "What type of scene is this?"
CAPTION_QUESTION = "Describe this image in one sentence."
# the task prompts of grounding (expression -> box) and region description (box -> text); boxes
# are written as geostrata.boxes has them, {<x1><y1><x2><y2>} in 0-100 (GeoChat / VRSBench)
GROUND_TEMPLATE = "[refer] Where is {expression}? Answer with a box."
REGION_TEMPLATE = "[region] Describe the area {box}."


@dataclass
class TaskData:
    """Train and evaluation records of one data set, plus what is known about its images."""

    dataset: str | None  # label-map table in the knowledge base ("synthetic", ...); None: none
    train: list[dict[str, Any]]
    eval: list[dict[str, Any]]
    truths: dict[str, Truth] = field(default_factory=dict)  # image_path -> truth
    # level -> class names; as loaded, the level each is declared at (a class folder's labels
    # are scene labels), after `session.labels.ground_task` the level its entry lives at
    labels: dict[str, list[str]] = field(default_factory=dict)
    scene_classes: list[str] = field(default_factory=list)
    unseen: dict[str, list[str]] = field(default_factory=dict)  # level -> classes never trained on

    def corpus(self) -> list[str]:
        """Every question and answer text, for training a local tokenizer."""
        texts = [r["question"] for r in self.train] + [r["answer"] for r in self.train]
        return texts + [scene_answer(c) for c in self.scene_classes]


def ground_question(expression: str) -> str:
    """The grounding prompt for a referring expression ("the small red car left of the pond")."""
    return GROUND_TEMPLATE.format(expression=expression.strip().rstrip("?."))


def region_question(box: Box) -> str:
    """The region-description prompt for a box."""
    return REGION_TEMPLATE.format(box=box.text())


def scene_answer(label: str) -> str:
    """How a scene class is spoken: "parking_lot" -> "parking lot"."""
    return spoken(label)


def load_task(cfg: DataConfig) -> TaskData:
    """Read the configured data set (see DataConfig.kind) into a TaskData."""
    loaders = {
        "synthetic": _synthetic,
        "rsvqa": _rsvqa,
        "folder": _folder,
        "instruct": _instruct,
        "geochat_bench": _geochat_bench,
        "karpathy_captions": _karpathy_captions,
        "dior_rsvg": _dior_rsvg,
        "vrsbench": _vrsbench,
    }
    task = loaders[cfg.kind](cfg)
    task.train = _cap(task.train, cfg.max_train)
    task.eval = _cap(task.eval, cfg.max_eval)
    return task


def _cap(records: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    return records[:limit] if limit else records


def _synthetic(cfg: DataConfig) -> TaskData:
    from geostrata.data import RSVQADataset
    from geostrata.data.synthetic import Holdout, load_annotations, load_meta

    root = Path(cfg.root)
    meta = load_meta(root)
    held = Holdout.from_dict(meta.get("holdout"))
    truths: dict[str, Truth] = {}
    captions: dict[str, list[dict[str, Any]]] = {}
    for split in (cfg.train_split, cfg.eval_split):
        for ann in load_annotations(root, split).values():
            path = str(root / ann["image"])
            truths[path] = Truth.from_annotation(ann)
            captions.setdefault(split, []).append(
                _caption_record(path, str(ann["id"]), ann["caption"])
            )
    train = list(RSVQADataset(root, cfg.train_split, prefix="SYN").records)
    test = list(RSVQADataset(root, cfg.eval_split, prefix="SYN").records)
    if cfg.captions:  # trained on, and scored against their references (evaluate/captioning)
        train += captions.get(cfg.train_split, [])
        test += captions.get(cfg.eval_split, [])
    labels = {
        "scene": meta["scene_classes"],
        "region": meta["land_covers"],
        "object": meta["object_classes"],
    }
    return TaskData(
        "synthetic",
        train,
        test,
        truths,
        labels,
        list(meta["scene_classes"]),
        {"scene": list(held.scenes), "object": list(held.objects)},
    )


def _caption_record(path: str, image_id: str, caption: str) -> dict[str, Any]:
    """A caption turn in the record convention: `answer` one reference, `references` all."""
    return {
        "image_path": path,
        "image_id": image_id,
        "question_id": f"caption:{image_id}",
        "question": CAPTION_QUESTION,
        "answer": caption,
        "references": [caption],
        "task": "caption",
        "qtype": "caption",
        "level": "scene",
    }


def _rsvqa(cfg: DataConfig) -> TaskData:
    from geostrata.data import RSVQADataset

    def split(name: str) -> list[dict[str, Any]]:
        return list(
            RSVQADataset(
                cfg.root, name, prefix=cfg.prefix, image_dir=cfg.image_dir, image_ext=cfg.image_ext
            ).records
        )

    return TaskData(None, split(cfg.train_split), split(cfg.eval_split))


def _folder(cfg: DataConfig) -> TaskData:
    """Class folders (UCMerced / AID / NWPU / WHU-RS19, or any user's own labels): one scene
    question per image, answered with its label; the label-map table only when data.dataset
    names one (labels resolve by entry name and synonym otherwise, see session/labels.py)."""
    from geostrata.data import SceneFolderDataset

    def split(name: str) -> SceneFolderDataset:
        return SceneFolderDataset(cfg.root, split_file=Path(cfg.root) / name if name else None)

    train_ds, eval_ds = split(cfg.train_split), split(cfg.eval_split)
    truths = {r["image_path"]: Truth(scene=r["label"]) for r in train_ds.records + eval_ds.records}
    return TaskData(
        cfg.dataset or None,
        _scene_records(train_ds.records),
        _scene_records(eval_ds.records),
        truths,
        {"scene": list(train_ds.classes)},
        list(train_ds.classes),
    )


def _scene_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "image_path": r["image_path"],
            "image_id": r["image_path"],
            "question_id": r["image_path"],
            "question": SCENE_QUESTION,
            "answer": scene_answer(r["label"]),
            "qtype": "scene",
            "level": "scene",
        }
        for r in records
    ]


def _instruct(cfg: DataConfig) -> TaskData:
    from geostrata.data import InstructionDataset

    def split(name: str) -> list[dict[str, Any]]:
        return list(InstructionDataset(Path(cfg.root) / name, cfg.image_dir or cfg.root).records)

    return TaskData(None, split(cfg.train_split), split(cfg.eval_split))


def _geochat_bench(cfg: DataConfig) -> TaskData:
    from geostrata.data import GeoChatBenchDataset

    records = list(
        GeoChatBenchDataset(Path(cfg.root) / cfg.eval_split, cfg.image_dir or cfg.root).records
    )
    return TaskData(None, [], with_questions(records))


def _karpathy_captions(cfg: DataConfig) -> TaskData:
    """UCM-Captions / Sydney-Captions / RSICD: one training record per sentence, one evaluation
    record per image holding every sentence as its references."""
    from geostrata.data import CaptionDataset

    def split(name: str) -> list[dict[str, Any]]:
        return with_questions(CaptionDataset(cfg.root, name, image_dir=cfg.image_dir).records)

    return TaskData(
        cfg.dataset or None, per_reference(split(cfg.train_split)), split(cfg.eval_split)
    )


def _dior_rsvg(cfg: DataConfig) -> TaskData:
    """DIOR-RSVG referring expressions -> grounding records (the annotations are walked once)."""
    from geostrata.data.rsvg import RSVGDataset, index_objects

    index = index_objects(cfg.root)

    def split(name: str) -> list[dict[str, Any]]:
        dataset = RSVGDataset(cfg.root, name, image_dir=cfg.image_dir, index=index)
        return with_questions(dataset.records)

    return TaskData(None, split(cfg.train_split), split(cfg.eval_split))


def _vrsbench(cfg: DataConfig) -> TaskData:
    """VRSBench's evaluation files (caption, ground, vqa; evaluation only). eval_split "test"
    reads every file present; a task name (caption, ground or vqa) reads that one."""
    from geostrata.data import VRSBenchDataset

    tasks = None if cfg.eval_split == "test" else (cfg.eval_split,)
    records = VRSBenchDataset(cfg.root, tasks, image_dir=cfg.image_dir).records
    return TaskData(None, [], with_questions(records))


def with_questions(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Give grounding and region records their task prompt, and captions the caption question
    when the file has none; other records keep the question they have."""
    return [_with_question(record) for record in records]


def _with_question(record: dict[str, Any]) -> dict[str, Any]:
    task = record.get("task", "vqa")
    if task == "ground":
        return {**record, "question": ground_question(record["expression"])}
    if task == "region":
        return {**record, "question": region_question(Box.of(record["box"]))}
    if task == "caption" and not record.get("question"):
        return {**record, "question": CAPTION_QUESTION}
    return record


def per_reference(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Training view of caption / region records: one record per reference, as its answer."""
    out = []
    for record in records:
        references = record.get("references") or [record["answer"]]
        for number, reference in enumerate(references):
            suffix = f":{number}" if len(references) > 1 else ""
            question_id = f"{record['question_id']}{suffix}"
            out.append({**record, "answer": reference, "question_id": question_id})
    return out
