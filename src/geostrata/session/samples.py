"""Turn any supported data set into one list of VQA-style sample records.

Every format goes through the loaders of `geostrata.data`; this module only maps their records to
what training and evaluation need: image path, question, answer, question type, semantic level, and
(where known) the multi-level truth used by the alignment loss.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geostrata.boxes import Box
from geostrata.data.targets import Truth
from geostrata.errors import AnnotationError, ConfigError
from geostrata.knowledge.schema import spoken

# the task prompts of captioning, grounding (expression -> box) and region description (box ->
# text) live in geostrata.prompts (the synthetic writer needs them below this layer); they are
# re-exported here, where loaders and evaluation take them from
from geostrata.prompts import CAPTION_QUESTION as CAPTION_QUESTION
from geostrata.prompts import GROUND_TEMPLATE as GROUND_TEMPLATE
from geostrata.prompts import REGION_TEMPLATE as REGION_TEMPLATE
from geostrata.prompts import ground_question as ground_question
from geostrata.prompts import region_question as region_question
from geostrata.session.experiment import DataConfig

SCENE_QUESTION = "What type of scene is this?"


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


def scene_answer(label: str) -> str:
    """How a scene class is spoken: "parking_lot" -> "parking lot"."""
    return spoken(label)


def load_task(cfg: DataConfig) -> TaskData:
    """Read the configured data set (see DataConfig.kind) into a TaskData, keeping the records
    of the tasks `cfg.tasks` names (train and eval alike; all of them when it is None)."""
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
    if cfg.tasks is not None:
        task.train = select_tasks(task.train, cfg.tasks, "training")
        task.eval = select_tasks(task.eval, cfg.tasks, "evaluation")
    task.train = _cap(task.train, cfg.max_train)
    task.eval = _cap(task.eval, cfg.max_eval)
    return task


def record_task(record: dict[str, Any]) -> str:
    """The task a record belongs to (its "task" key; "vqa" when it has none)."""
    return str(record.get("task", "vqa"))


def select_tasks(
    records: list[dict[str, Any]], tasks: Sequence[str], what: str
) -> list[dict[str, Any]]:
    """The records of the named tasks; a ConfigError when records were there but none is of a
    named task (a config asking for what the data set does not have)."""
    kept = [r for r in records if record_task(r) in tasks]
    if records and not kept:
        found = sorted({record_task(r) for r in records})
        raise ConfigError(f"data.tasks {list(tasks)} selects none of the {len(records)} {what} "
                        f"records: this data set has the tasks {found}")  # fmt: skip
    return kept


def _cap(records: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    return records[:limit] if limit else records


SYNTHETIC_TASKS = ("ground", "region", "chat")  # beside vqa and caption: instruct/{split}_{task}
SYNTHETIC_DEFAULT = ("vqa", "caption")  # what a synthetic folder gives when data.tasks is unset


def _synthetic(cfg: DataConfig) -> TaskData:
    """A `geostrata data synth` folder: its RSVQA questions, captions and the grounding, region
    and chat entries, each read only when `cfg.tasks` names it (unset: SYNTHETIC_DEFAULT)."""
    from geostrata.data import RSVQADataset
    from geostrata.data.synthetic import Holdout, load_annotations, load_meta

    wanted = cfg.tasks if cfg.tasks is not None else SYNTHETIC_DEFAULT

    root = Path(cfg.root)
    meta = load_meta(root)
    held = Holdout.from_dict(meta.get("holdout"))
    truths: dict[str, Truth] = {}
    records: dict[str, list[dict[str, Any]]] = {}
    for split in dict.fromkeys((cfg.train_split, cfg.eval_split)):
        annotations = load_annotations(root, split).values()
        for ann in annotations:
            truths[str(root / ann["image"])] = Truth.from_annotation(ann)
        found = []
        if "vqa" in wanted:
            found += RSVQADataset(root, split, prefix="SYN").records
        if "caption" in wanted:
            found += [_caption_record(str(root / a["image"]), str(a["id"]), [a["caption"]])
                      for a in annotations]  # fmt: skip
        for name in SYNTHETIC_TASKS:
            if name in wanted:
                found += synthetic_task_records(root, split, name)
        records[split] = found
    labels = {
        "scene": meta["scene_classes"],
        "region": meta["land_covers"],
        "object": meta["object_classes"],
    }
    return TaskData(
        "synthetic",
        records[cfg.train_split],
        records[cfg.eval_split],
        truths,
        labels,
        list(meta["scene_classes"]),
        {"scene": list(held.scenes), "object": list(held.objects)},
    )


def synthetic_task_records(root: Path, split: str, task: str) -> list[dict[str, Any]]:
    """The records of one synthetic task file (instruct/{split}_{task}.json, conversations read
    by data/instruct.py): ground with `box` and `expression`, region with `box` and
    `references`, chat one record per turn with the dialogue's earlier turns as `history`."""
    from geostrata.data import InstructionDataset
    from geostrata.data.synthetic.files import load_task_entries, task_path

    entries = load_task_entries(root, split, task)
    out: list[dict[str, Any]] = []
    history: dict[str, list[list[str]]] = {}
    for sample in InstructionDataset(task_path(root, split, task), root).records:
        entry = entries[sample["id"]]
        record = {
            "image_path": sample["image_path"],
            "image_id": entry["id"].partition(":")[0],
            "question_id": sample["question_id"],
            "question": sample["question"],
            "answer": sample["answer"],
            "task": task,
            "qtype": task,
            "level": "object",
        }
        if task in ("ground", "region"):
            record["box"] = Box.of(entry["box"]).as_list()
        if task == "ground":
            record["expression"] = entry["expression"]
        elif task == "region":
            record |= {"level": entry["level"], "references": list(entry["references"])}
        else:
            turn, earlier = sample["turn"], history.setdefault(entry["id"], [])
            if turn >= min(len(entry["kinds"]), len(entry["levels"])):
                raise AnnotationError(f"{task_path(root, split, task)}: entry {entry['id']!r}: "
                                      f"kinds / levels name fewer turns than it has")  # fmt: skip
            record |= {"level": entry["levels"][turn], "kind": entry["kinds"][turn],
                       "dialogue": entry["id"], "turn": turn,
                       "history": [list(t) for t in earlier]}  # fmt: skip
            earlier.append([sample["question"], sample["answer"]])
        out.append(record)
    return out


def _caption_record(path: str, image_id: str, captions: list[str]) -> dict[str, Any]:
    return {
        "image_path": path,
        "image_id": image_id,
        "question_id": f"caption:{image_id}",
        "question": CAPTION_QUESTION,
        "answer": captions[0],
        "task": "caption",
        "references": list(captions),
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
