"""An experiment: which model preset, which data, which knowledge base, and the two stages.

One YAML file describes a whole run (`geostrata train CONFIG.yaml`); flag overrides use dotted
keys (`--set stage2.max_steps=300 --set model.retrieval=false`). The resolved config is saved
next to the weights so a run can be reproduced and resumed.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from geostrata.atomic import write_text_atomic
from geostrata.errors import ConfigError
from geostrata.model.settings import MODEL_KEYS, check_model_section
from geostrata.session.train_config import TrainConfig
from geostrata.textio import check_known_keys, read_yaml_mapping

DATA_KINDS = (
    "synthetic",
    "rsvqa",
    "folder",
    "instruct",
    "geochat_bench",
    "karpathy_captions",
    "dior_rsvg",
    "vrsbench",
)
# The tasks a sample record may belong to (its "task" key, "vqa" when absent): VQA questions,
# scene classification, captions, grounding (expression -> box), region description (box ->
# text) and multi-turn chat (turns with their earlier turns as history).
TASKS = ("vqa", "cls", "caption", "ground", "region", "chat")


@dataclass
class DataConfig:
    """Where the training and evaluation samples come from (one loader path for all formats).

    kind: synthetic (a `geostrata data synth` folder, read through its RSVQA files plus its
    annotations) | rsvqa (RSVQA LR/HR) | folder (UCMerced/AID/NWPU/WHU scene folders, turned into
    "What type of scene is this?" questions) | instruct (LLaVA/GeoChat JSON) | geochat_bench
    (GeoChat-Bench JSONL, VQA / scene / referring / region lines) | karpathy_captions
    (UCM-Captions / Sydney-Captions / RSICD `dataset*.json`; splits train / val / test) |
    dior_rsvg (DIOR-RSVG grounding; splits are its train / val / test.txt) | vrsbench (VRSBench
    EVAL files, evaluation only; eval_split "test" = all three, or caption / ground / vqa).
    """

    kind: str = "synthetic"
    root: str = "runs/demo/data"
    prefix: str = "SYN"  # RSVQA file prefix: LR, USGS or SYN
    train_split: str = "train"  # split name, or for folder / instruct kinds a split or JSON file
    eval_split: str = "test"
    # image folder: relative to root for rsvqa (default per prefix), karpathy_captions (images/,
    # imgs/ or RSICD_images/), dior_rsvg (JPEGImages) and vrsbench (Images_val); for instruct
    # and geochat_bench a folder of its own (default: root)
    image_dir: str | None = None
    image_ext: str | None = None  # RSVQA image extension (default .tif, .png for SYN)
    max_train: int = 0  # 0: all samples
    max_eval: int = 0
    # label-map table of the knowledge base (ucmerced, aid, nlcd, ...) for the folder kind; empty:
    # labels resolve by entry name and synonym (any label set trains, see docs/data.md)
    dataset: str = ""
    # which tasks (TASKS) the train and eval records hold; None: every task the data set has,
    # except that a synthetic folder then gives vqa and caption (name ground / region / chat)
    tasks: list[str] | None = None

    def __post_init__(self) -> None:
        if self.kind not in DATA_KINDS:
            raise ConfigError(f"data.kind must be one of {DATA_KINDS}, got {self.kind!r}")
        for name in ("root", "prefix", "train_split", "eval_split"):
            setattr(self, name, _text(f"data.{name}", getattr(self, name)))
        for name in ("image_dir", "image_ext"):
            if getattr(self, name) is not None:
                setattr(self, name, _text(f"data.{name}", getattr(self, name)))
        for name in ("max_train", "max_eval"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"data.{name} must be an integer >= 0, got {value!r}")
        if self.tasks is not None:
            self.tasks = check_tasks(self.tasks)


def check_tasks(tasks: object) -> list[str]:
    """`data.tasks` as a list of known, distinct task names, or a ConfigError saying why not."""
    if isinstance(tasks, str) or not isinstance(tasks, list | tuple) or not tasks:
        raise ConfigError(f"data.tasks must be a non-empty list of task names {list(TASKS)}, "
                          f"got {tasks!r}")  # fmt: skip
    for name in tasks:
        if name not in TASKS:
            close = difflib.get_close_matches(str(name), TASKS, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"known tasks: {', '.join(TASKS)}"
            raise ConfigError(f"data.tasks: unknown task {name!r}; {hint}")
    if len(set(tasks)) != len(tasks):
        raise ConfigError(f"data.tasks names a task twice: {list(tasks)}")
    return list(tasks)


def legacy_data(data: object) -> object:
    """A data section of a config saved before `data.tasks`: `captions: false` meant a synthetic
    folder's questions without its captions (other kinds had none to leave out)."""
    if not isinstance(data, dict) or "captions" not in data:
        return data
    data = dict(data)
    captions = data.pop("captions")
    synthetic = data.get("kind", "synthetic") == "synthetic"
    if captions is False and data.get("tasks") is None and synthetic:
        data["tasks"] = ["vqa"]
    return data


def _stage1_default() -> TrainConfig:
    return TrainConfig(max_steps=60, batch_size=32, lr=2e-3, warmup_steps=5, log_every=5)


def _stage2_default() -> TrainConfig:
    return TrainConfig(max_steps=300, batch_size=32, lr=1e-3, warmup_steps=20, log_every=10)


@dataclass
class ExperimentConfig:
    """A whole run. `model` holds GeoStrataConfig overrides on top of `preset`."""

    preset: str = "tiny-effnet"
    model: dict[str, Any] = field(default_factory=dict)
    data: DataConfig = field(default_factory=DataConfig)
    knowledge: str = "default"  # "default", or a path to a knowledge-base file / folder
    # entry files / folders (with an optional label_map.tsv) added to it (`--kb-extra`); the
    # saved model keeps what they added, so evaluation does not need them again
    knowledge_extra: list[str] = field(default_factory=list)
    tokenizer_vocab: int = 1500  # vocab of the locally trained BPE tokenizer (tiny presets)
    stage1: TrainConfig = field(default_factory=_stage1_default)
    stage2: TrainConfig = field(default_factory=_stage2_default)
    output_dir: str = "runs/experiment"
    # a saved model folder (what `train` / `demo` write, OUTPUT_DIR/model) to fine-tune: its model
    # settings under this file's `model`, its tokenizer, its weights where shapes match
    # (session/finetune.py); checked when the run is prepared, not here (a saved fine-tuned
    # model stays loadable when its source is gone)
    init_from: str | None = None
    seed: int = 0
    eval_batch_size: int = 64
    # Frozen-tower features are cached in RAM when all of them fit this many GiB (0: never);
    # beyond it the tower runs in every step. Decoded images are kept up to image_cache_gib.
    feature_cache_gib: float = 8.0
    image_cache_gib: float = 2.0

    def __post_init__(self) -> None:
        if not isinstance(self.model, dict) or not all(isinstance(k, str) for k in self.model):
            raise ConfigError(f"model must be a mapping of field name -> value, got {self.model!r}")
        for name in ("preset", "knowledge", "output_dir"):
            setattr(self, name, _text(name, getattr(self, name)))
        if not isinstance(self.knowledge_extra, list | tuple):
            raise ConfigError(
                f"knowledge_extra must be a list of paths, got {self.knowledge_extra!r}"
            )
        self.knowledge_extra = [_text("knowledge_extra", p) for p in self.knowledge_extra]
        if self.init_from is not None:
            self.init_from = _text("init_from", self.init_from)
        for name, minimum in (("seed", 0), ("eval_batch_size", 1), ("tokenizer_vocab", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
        for name in ("feature_cache_gib", "image_cache_gib"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
                raise ConfigError(f"{name} must be a number of GiB >= 0, got {value!r}")
            setattr(self, name, float(value))
        check_model_section(self.preset, self.model)  # names model.<key>; builds nothing

    def stage(self, name: str) -> TrainConfig:
        """The TrainConfig of a stage, writing into `output_dir/<stage>` with the run's seed."""
        base = {"stage1": self.stage1, "stage2": self.stage2}[name]
        out = str(Path(self.output_dir) / name)
        return dataclasses.replace(base, output_dir=out, seed=self.seed)

    # ---------------------------------------------------------------- (de)serialisation
    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<dict>") -> ExperimentConfig:
        """Build from a nested mapping; unknown keys raise ConfigError naming the key and source."""
        kwargs = dict(data)
        try:
            check_known_keys(data, section_keys(""), source)
            if "data" in kwargs:
                section = legacy_data(kwargs["data"])
                kwargs["data"] = _build(DataConfig, section, f"{source}: data")
            for stage in ("stage1", "stage2"):
                if stage in kwargs:
                    defaults = getattr(cls(), stage).to_dict()
                    stage_data = _mapping(kwargs[stage], f"{source}: {stage}")
                    kwargs[stage] = TrainConfig.from_dict(
                        {**defaults, **stage_data}, f"{source}: {stage}"
                    )
            return cls(**kwargs)
        except ConfigError as exc:
            if source in str(exc):
                raise
            raise ConfigError(f"{source}: {exc}") from exc

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
        """Read a YAML experiment file, then apply `key.sub=value` overrides (values are YAML).

        Everything is validated here, model settings included, before any data or weights are
        touched. A file must at least say where its data is (`data.root`): every other field has
        a default, but running on the demo's data by default would hide an empty or cut file.
        """
        data = apply_overrides(read_yaml_mapping(path, "experiment config"), overrides or [])
        cfg = cls.from_dict(data, source=str(path))
        if not isinstance(data.get("data"), dict) or "root" not in data["data"]:
            raise ConfigError(
                f"{path}: an experiment must say where its data is: set data.root (and "
                "data.kind unless it is a `geostrata data synth` folder)"
            )
        return cfg

    def to_dict(self) -> dict[str, Any]:
        """A plain nested mapping, the inverse of `from_dict`."""
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        """Write the resolved config as YAML."""
        write_text_atomic(path, yaml.safe_dump(self.to_dict(), sort_keys=False))


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of `data` with each `a.b.c=value` override applied (value parsed as YAML)."""
    out = _deep_copy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} must look like key.sub=value")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: value is not valid YAML ({exc})") from exc
        node = out
        parts = key.strip().split(".")
        for depth, part in enumerate(parts[:2]):  # sections and their fields; HF sub-configs later
            known = section_keys(parts[0] if depth else "")
            if known is not None:
                check_known_keys({part: None}, known, f"override {item!r}")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a mapping")
        node[parts[-1]] = value
    return out


def section_keys(section: str) -> frozenset[str] | None:
    """The keys a section of an experiment file may hold ("" is the top level; None: free)."""
    fields = {"": ExperimentConfig, "data": DataConfig, "stage1": TrainConfig,
              "stage2": TrainConfig}
    if section == "model":
        return MODEL_KEYS | {"vocab_size"}  # vocab_size: refused later with what to set instead
    if section not in fields:
        return None
    return frozenset(f.name for f in dataclasses.fields(fields[section]))


def _text(name: str, value: object) -> str:
    """A non-empty string field (a Path is accepted and stored as its string)."""
    if not isinstance(value, str | Path) or not str(value).strip():
        raise ConfigError(f"{name} must be a non-empty string, got {value!r}")
    return str(value)


def _deep_copy(data: dict[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in data.items()}


def _mapping(value: object, where: str) -> dict[str, Any]:
    if isinstance(value, TrainConfig):
        return value.to_dict()
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a mapping, got {value!r}")
    return value


def _build(cls: type, value: object, where: str) -> Any:
    if isinstance(value, cls):
        return value
    data = _mapping(value, where)
    check_known_keys(data, {f.name for f in dataclasses.fields(cls)}, where)
    return cls(**data)
