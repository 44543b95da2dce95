"""A session: everything a run or a trained model holds, built where training, inference and
evaluation all use it.

`prepare` builds data, knowledge base, processor and model from an ExperimentConfig (a new run);
`load_model` opens a saved model folder (weights, processor, experiment.yaml) and `open_session`
adds the data for evaluating it; `save_session` writes the folder those two read.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from geostrata.atomic import staged_dir
from geostrata.data.targets import AlignTargetBuilder
from geostrata.device import compute_device, is_main_process
from geostrata.errors import CheckpointError, InputError
from geostrata.session.batching import FeatureCache, ImageStore, VQACollator
from geostrata.session.experiment import DataConfig, ExperimentConfig
from geostrata.session.finetune import (
    InitReport,
    load_source_weights,
    open_source,
    resolve,
    saved_text_side,
)
from geostrata.session.folder import CONFIG_FILE, saved_model_files
from geostrata.session.labels import ground_task
from geostrata.session.samples import TaskData, load_task
from geostrata.weights import hf_progress_bars_off

MODEL_DIR = "model"
PROCESSOR_DIR = "processor"
ADDED_DIR = "knowledge_added"  # in a model folder: what the run added to cfg.knowledge


@dataclass
class Session:
    """Everything a run holds: the experiment, its data, knowledge base, processor and model."""

    cfg: ExperimentConfig
    task: TaskData
    knowledge: Any  # KnowledgeBase
    processor: Any  # GeoStrataProcessor
    model: Any  # GeoStrataForConditionalGeneration
    images: ImageStore
    features: FeatureCache | None
    targets: AlignTargetBuilder | None
    added: Any = None  # knowledge.additions.Additions: what the run added to cfg.knowledge
    init: InitReport | None = None  # what `init_from` loaded and newly initialised

    def collator(self, with_answers: bool) -> VQACollator:
        targets = self.targets if with_answers else None
        return VQACollator(
            self.processor, self.images, self.features, targets, self.task.truths, with_answers
        )


@dataclass
class LoadedModel:
    model: Any  # GeoStrataForConditionalGeneration, eval mode
    processor: Any  # GeoStrataProcessor
    knowledge: Any  # KnowledgeBase
    cfg: Any  # ExperimentConfig the model was trained with
    path: Path
    extra_ids: list[str] = dataclasses.field(default_factory=list)  # entries added for this run


def load_model(
    path: str | Path,
    knowledge: Any = None,
    device: str | None = None,
    dtype: str | None = None,
    knowledge_extra: Sequence[str | Path] = (),
    decode: str = "dynamic",
) -> LoadedModel:
    """Load a saved GeoStrata model folder (weights are safetensors only) and its knowledge base.

    ``device``: None or "auto" takes this process's GPU when there is one, else the CPU.
    ``dtype``: the whole model's dtype; None keeps float32 on the CPU and uses the config's
    ``torch_dtype`` (the LLM's training dtype, bfloat16 for the real presets) on a GPU.
    ``knowledge_extra``: entry files added to the model's knowledge base for this run only.
    What training added to the base (its `--kb-extra` files, entries for labels the base
    lacked) is in the folder and comes back with it.
    ``decode``: how `generate` decodes (dynamic | static | compiled, see model/decoding.py).
    """
    from geostrata.device import resolve_device, resolve_dtype
    from geostrata.knowledge.additions import Additions
    from geostrata.model import GeoStrataForConditionalGeneration, GeoStrataProcessor
    from geostrata.model.decoding import check_decode

    path = Path(path)
    check_decode(decode)
    saved_model_files(path)  # safetensors only, experiment.yaml present
    cfg = ExperimentConfig.from_yaml(path / CONFIG_FILE)
    target = resolve_device(device)
    if knowledge is None:
        knowledge = load_knowledge(cfg.knowledge, knowledge_extra)
        Additions.restore(path / ADDED_DIR, knowledge)
    elif knowledge_extra:
        raise InputError("pass either a knowledge base or knowledge_extra files, not both")
    with _built_whole():  # after a ZeRO-3 training run, in the same process
        model = GeoStrataForConditionalGeneration.from_pretrained(path, use_safetensors=True)
    processor = GeoStrataProcessor.from_pretrained(path, question_encoder=knowledge.encode_text)
    check_processor_matches(processor, model.config, path)
    default_dtype = "float32" if target.type == "cpu" else model.config.torch_dtype
    model.to(device=target, dtype=resolve_dtype(dtype, default_dtype))
    attach_knowledge(model, processor, knowledge)  # after the move: buffers go with the model
    model.decode_mode = decode
    return LoadedModel(model.eval(), processor, knowledge, cfg, path, entry_ids(knowledge_extra))


def check_processor_matches(processor: Any, model_cfg: Any, path: Path) -> None:
    """The processor files of a model folder must fit its config.json: the same image size and
    image-token count, the same `<image>` id, and no token id beyond the LLM's vocabulary."""
    wanted = {
        "image_size": (processor.image_processor.image_size, model_cfg.image_size),
        "in_bands": (processor.image_processor.in_bands, model_cfg.in_bands),
        "num_image_tokens": (processor.num_image_tokens, model_cfg.num_image_tokens),
        "image_token_id": (processor.image_token_id, model_cfg.image_token_id),
    }
    diffs = [f"{k}: processor {a!r}, model {b!r}" for k, (a, b) in wanted.items() if a != b]
    vocab = model_cfg.text_config.vocab_size
    if len(processor.tokenizer) > vocab:
        diffs.append(f"tokenizer has {len(processor.tokenizer)} tokens, the LLM {vocab}")
    if diffs:
        raise CheckpointError(
            f"{path}: processor files do not match config.json: {'; '.join(diffs)}"
        )


def entry_ids(paths: Sequence[str | Path]) -> list[str]:
    """Ids of the entries in entry files or folders (already validated by the load)."""
    from geostrata.knowledge.schema import entry_files, read_entry_file

    return [e.id for p in paths for f in entry_files(p) for e, _ in read_entry_file(f)]


def load_knowledge(source: str, extra: Sequence[str | Path] = ()) -> Any:
    """The knowledge base named in a config ("default" or a path), with the default encoder;
    ``extra``: entry files (JSONL / YAML) added for this run, e.g. classes no training image
    showed (`--kb-extra`)."""
    from geostrata.knowledge import KnowledgeBase

    return KnowledgeBase.load(source, extra=list(extra))


def attach_knowledge(model: Any, processor: Any, knowledge: Any) -> None:
    """Attach the knowledge base, with its entry names as the processor tokenises them when the
    model writes retrieved names into the prompt (cue text)."""
    levels = processor.cue_slots.levels
    names = {lv: [knowledge.get(i).name for i in knowledge.level_ids(lv)] for lv in levels}
    model.attach_knowledge(knowledge, processor.cue_vocabulary(names) if levels else None)


def build_processor(
    cfg: ExperimentConfig,
    task: TaskData,
    knowledge: Any,
    model_cfg: Any,
    show_progress: bool,
    text: Any = None,
) -> Any:
    """Tokenizer (the pretrained LLM's own, or one trained locally on the run's text) + images
    (their band input: the 8-bit path, or band statistics measured on the training images).
    ``text``: a saved processor whose tokenizer and templates are reused (`init_from`)."""
    from geostrata.model import GeoStrataProcessor, train_tokenizer
    from geostrata.model.imaging import fit_band_input
    from geostrata.model.pretrained import chat_turn_template, prompt_template_for
    from geostrata.model.processing import PROMPT_TEMPLATE, CueSlots

    template, turn_template = PROMPT_TEMPLATE, None
    if text is not None:
        tokenizer, template, turn_template = (
            text.tokenizer,
            text.prompt_template,
            text.turn_template,
        )
    elif model_cfg.text_name_or_path:
        tokenizer = pretrained_tokenizer(model_cfg)
        template = prompt_template_for(tokenizer)  # the LLM's own chat format
        turn_template = chat_turn_template(tokenizer)
    else:
        corpus = task.corpus() + [e.name for e in knowledge.entries]
        pointers = CueSlots.from_config(model_cfg).pointer_tokens
        tokenizer = train_tokenizer(corpus, vocab_size=cfg.tokenizer_vocab, extra_tokens=pointers)
    paths = [r["image_path"] for r in task.train]
    bands = fit_band_input(
        model_cfg.in_bands, model_cfg.rgb_bands, model_cfg.band_norm, paths, show_progress
    )
    return GeoStrataProcessor(
        tokenizer,
        image_size=model_cfg.image_size,
        num_image_tokens=model_cfg.num_image_tokens,
        mean=model_cfg.image_mean,
        std=model_cfg.image_std,
        question_encoder=knowledge.encode_text,
        prompt_template=template,
        cue_slots=CueSlots.from_config(model_cfg),
        turn_template=turn_template,
        bands=bands,
    )


def pretrained_tokenizer(model_cfg: Any) -> Any:
    """The real LLM's own tokenizer (a local folder, a GGUF source's cache folder or the local HF
    cache) with `<image>` added; answers end with its chat template's end-of-turn token."""
    from geostrata.model.pretrained import llm_tokenizer

    return llm_tokenizer(model_cfg)


def prepare(cfg: ExperimentConfig, show_progress: bool = True) -> Session:
    """Build data, knowledge base (its labels resolved, entries added for labels it lacked),
    processor and model (and cache frozen-tower features).

    With `cfg.init_from` (a saved model folder, checked before any data is read) the model
    settings are the saved model's under the experiment's own, the saved tokenizer is reused and
    the saved weights are loaded where names and shapes match (`session/finetune.py`); the
    session's `cfg` is the resolved one and `init` says what was newly initialised."""
    from geostrata.knowledge.additions import Additions
    from geostrata.model import GeoStrataConfig, GeoStrataProcessor

    source = open_source(cfg.init_from) if cfg.init_from else None
    if source is not None:
        cfg = resolve(cfg, source)
    GeoStrataConfig.from_preset(cfg.preset, **cfg.model)  # HF sub-config keys, before any data
    knowledge = load_knowledge(cfg.knowledge, cfg.knowledge_extra)
    task, new_entries = ground_task(load_task(cfg.data), knowledge)  # every label problem at once
    added = Additions.of_files(cfg.knowledge_extra, knowledge).plus(new_entries)
    targets = _targets(knowledge, task)
    out = Path(cfg.output_dir)
    # The cue vectors' width comes from the knowledge base's encoder unless the config says.
    model_kwargs = {"knowledge_dim": knowledge.dim, **cfg.model}
    model_cfg = GeoStrataConfig.from_preset(cfg.preset, **model_kwargs)
    if (out / PROCESSOR_DIR).is_dir():  # a resumed run keeps its tokenizer
        processor = GeoStrataProcessor.from_pretrained(
            out / PROCESSOR_DIR, question_encoder=knowledge.encode_text
        )
    else:
        # deterministic on every rank (band statistics too: the same images, in the same order)
        text = saved_text_side(source, knowledge.encode_text) if source is not None else None
        processor = build_processor(cfg, task, knowledge, model_cfg, show_progress, text)
        if is_main_process():  # whole or absent: a kill mid-save must not block a fresh start
            with staged_dir(out / PROCESSOR_DIR) as tmp:
                processor.save_pretrained(tmp)
    if not model_cfg.text_name_or_path:  # a locally trained tokenizer sets the vocabulary
        model_cfg = GeoStrataConfig.from_preset(
            cfg.preset, vocab_size=len(processor.tokenizer), **model_kwargs
        )
    model, init = build_model(cfg, model_cfg, source)
    if init is not None and is_main_process():
        print(init.describe())
    attach_knowledge(model, processor, knowledge)
    images, features = _caches(cfg, model, processor, task, show_progress)
    return Session(cfg, task, knowledge, processor, model, images, features, targets, added, init)


def build_model(cfg: ExperimentConfig, model_cfg: Any, source: Any = None) -> tuple[Any, Any]:
    """The run's model as initialised before any training: seeded by ``cfg.seed`` (so every call
    builds the same weights), with `init_from`'s saved weights (``source``) loaded where they fit.
    Returns (model, InitReport or None)."""
    from geostrata.model import GeoStrataForConditionalGeneration

    torch.manual_seed(cfg.seed)
    with _built_whole():
        model = GeoStrataForConditionalGeneration(model_cfg)
    init = load_source_weights(model, source) if source is not None else None
    return model, init


@contextlib.contextmanager
def _built_whole() -> Iterator[None]:
    """Build the model whole even where an Accelerator with a ZeRO-3 DeepSpeed config exists (a
    later stage): transformers would otherwise create the LLM already partitioned
    (`zero.Init`), which the model's own initialisation cannot index. The first stage's model is
    built before any Accelerator, so whole too; DeepSpeed partitions both in prepare."""
    from transformers.integrations import deepspeed as hf_deepspeed

    ref = hf_deepspeed._hf_deepspeed_config_weak_ref  # set by Accelerate's DeepSpeed plugin
    config = ref() if ref is not None else None
    if config is None or not config.is_zero3():
        yield
        return
    hf_deepspeed.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        hf_deepspeed.set_hf_deepspeed_config(config)


def rebuild_model(session: Session, trained: str | Path) -> None:
    """Give ``session`` a new model, built as `prepare` built its first one, with a training
    stage's saved state (``trained``: a checkpoint's safetensors of trainable weights and
    buffers) loaded over it: the next stage then runs on a module no engine (DDP, FSDP,
    DeepSpeed) has wrapped, hooked or sharded. The old model is dropped first (on a GPU two
    copies of an LLM may not fit)."""
    import gc

    from geostrata.weights import load_safetensors_weights

    model_cfg = session.model.config
    session.model = None
    if session.features is not None:
        session.features.model = None
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    source = open_source(session.cfg.init_from) if session.cfg.init_from else None
    model, _ = build_model(session.cfg, model_cfg, source)
    result = load_safetensors_weights(model, trained, strict=False)
    if result.unexpected:
        raise CheckpointError(f"{trained} holds tensors the model lacks: {result.unexpected[:20]}")
    attach_knowledge(model, session.processor, session.knowledge)
    session.model = model
    if session.features is not None:
        session.features.model = model


def _targets(knowledge: Any, task: TaskData) -> AlignTargetBuilder | None:
    """Alignment targets of the task's labels (grounded: each at its entry's level)."""
    return AlignTargetBuilder(knowledge, task.dataset, task.labels) if task.labels else None


def _caches(
    cfg: ExperimentConfig, model: Any, processor: Any, task: TaskData, show_progress: bool
) -> tuple[ImageStore, FeatureCache | None]:
    """The decoded-image store and (frozen tower, within budget) the tower-feature cache."""
    images = ImageStore(processor.image_processor, int(cfg.image_cache_gib * 2**30))
    features = _feature_cache(model, images, task, show_progress, cfg.feature_cache_gib)
    return images, features


def cache_features(session: Session, show_progress: bool = True) -> None:
    """Cache the tower's features now if the session has none and the tower can no longer
    change (e.g. stage 2 after the band adapter in front of a frozen tower trained in stage 1)."""
    if session.features is None:
        budget = session.cfg.feature_cache_gib
        session.features = _feature_cache(
            session.model, session.images, session.task, show_progress, budget
        )


def _feature_cache(
    model: Any,
    images: ImageStore,
    task: TaskData,
    show_progress: bool,
    budget_gib: float,
) -> FeatureCache | None:
    """Cache tower features when the tower cannot change (no trainable vision parameter) and
    all of them fit ``budget_gib``; else the tower runs in every step (None)."""
    if any(p.requires_grad for p in model.vision.parameters()):
        return None
    paths = sorted({r["image_path"] for r in task.train + task.eval})
    if budget_gib <= 0 or not paths:
        return None
    cache = FeatureCache(model, images, device=compute_device())
    cache.add(paths[:1], show_progress=False)  # measures one image's features
    need = cache.bytes_per_image * len(paths) / 2**30
    if need > budget_gib:
        if is_main_process():
            print(
                f"not caching tower features: {len(paths):,} images x "
                f"{cache.bytes_per_image / 2**20:.2f} MiB = {need:.1f} GiB > feature_cache_gib="
                f"{budget_gib:g}; the frozen tower runs in every step instead"
            )
        return None
    cache.add(paths, show_progress=show_progress)
    return cache


def save_session(session: Session, state_dict: dict[str, torch.Tensor] | None = None) -> Path:
    """Write model (safetensors), processor and the experiment config into output_dir/model.

    ``state_dict``: the full weights when the model itself holds only a shard (FSDP / ZeRO-3,
    see `gather_full_state`). Staged and renamed into place: a crash mid-save must not leave
    weights without their experiment.yaml, which load_model would pair with default settings.
    """
    path = Path(session.cfg.output_dir) / MODEL_DIR
    try:
        with staged_dir(path) as tmp, hf_progress_bars_off():
            session.model.save_pretrained(tmp, state_dict=state_dict)
            session.processor.save_pretrained(tmp)
            session.cfg.save(tmp / CONFIG_FILE)
            if session.added is not None:
                session.added.save(tmp / ADDED_DIR)
    except OSError as exc:
        raise CheckpointError(f"could not write the model folder {path}: {exc}") from exc
    return path


def open_session(
    model_dir: str | Path,
    data_overrides: dict[str, str] | None = None,
    show_progress: bool = True,
    device: str | None = None,
    knowledge_extra: Sequence[str | Path] = (),
) -> Session:
    """A Session around a saved model for evaluation (data: the training data unless overridden;
    device: this process's GPU when there is one, see `load_model`; knowledge_extra: entry
    files added to the knowledge base for this evaluation)."""
    loaded = load_model(model_dir, device=device, knowledge_extra=knowledge_extra)
    cfg = loaded.cfg
    if data_overrides:
        cfg.data = DataConfig(**{**dataclasses.asdict(cfg.data), **data_overrides})
    task, new_entries = ground_task(load_task(cfg.data), loaded.knowledge)
    if new_entries:  # labels this data has and training had not: the model retrieves them too
        attach_knowledge(loaded.model, loaded.processor, loaded.knowledge)
    targets = _targets(loaded.knowledge, task)
    eval_only = dataclasses.replace(task, train=[])
    images, features = _caches(cfg, loaded.model, loaded.processor, eval_only, show_progress)
    return Session(
        cfg, task, loaded.knowledge, loaded.processor, loaded.model, images, features, targets
    )
