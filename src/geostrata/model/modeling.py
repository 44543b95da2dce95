"""GeoStrataForConditionalGeneration: the composed model.

docs/architecture.md, "One sample's way through the model":

image -> MultiLevelVisionEncoder -> SemanticAugmentation (retrieval + alignment loss)
      -> SemanticExperts (router + balance loss) -> CrossModalFusion -> spliced at <image> -> LLM.
The llava baseline skips the middle: last-layer patch tokens -> LlavaProjector -> LLM. Every
ablation is a config switch on this one code path. Components are only called through their
forward / attach methods; this file never reaches into their internals.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModelForCausalLM, PreTrainedModel

from geostrata.errors import CheckpointError, ConfigError, InputError, KnowledgeBaseError
from geostrata.knowledge.protocol import Retriever
from geostrata.levels import VISUAL_LEVELS
from geostrata.model.augmentation import SemanticAugmentation
from geostrata.model.configuration import GeoStrataConfig, load_saved_config
from geostrata.model.decoding import generation_kwargs
from geostrata.model.experts import SemanticExperts
from geostrata.model.fusion import CrossModalFusion, LlavaProjector, splice_image_tokens
from geostrata.model.outputs import GeoStrataOutput, RetrievedCues
from geostrata.model.pretrained import llm_folder, require_llm
from geostrata.model.processing import CueSlots, CueVocabulary
from geostrata.model.vision import (
    MultiLevelFeatures,
    MultiLevelVisionEncoder,
    _under_meta_device,
    load_pretrained_hf,
    require_local,
)
from geostrata.weights import (
    hf_progress_bars_off,
    load_safetensors_weights,
    require_same_shapes,
    safetensors_shapes,
    state_shapes,
)

logger = logging.getLogger(__name__)


@dataclass
class VisualTokens:
    """Image tokens ready for the LLM plus what the semantic modules report on the way."""

    tokens: torch.Tensor  # (B, T_img, D_llm)
    router_weights: torch.Tensor | None = None  # (B, L)
    retrieved: dict[str, RetrievedCues] = field(default_factory=dict)
    align_loss: torch.Tensor | None = None
    balance_loss: torch.Tensor | None = None


@dataclass
class Embedded:
    """What the LLM is given: inputs_embeds (B, T, D_llm), the ids behind them (cue names
    written, pointer answers), the labels to match, and what the visual path reported."""

    embeds: torch.Tensor
    visual: VisualTokens | None
    ids: torch.Tensor
    labels: torch.Tensor | None


def _first(token_id: int | list[int]) -> int:
    """The first of a config's eos ids (HF allows a list)."""
    return token_id[0] if isinstance(token_id, list | tuple) else token_id


class GeoStrataForConditionalGeneration(PreTrainedModel):
    """Remote-sensing VLM with semantic-augmented multi-level alignment and semantic experts."""

    config_class = GeoStrataConfig
    base_model_prefix = "geostrata"
    main_input_name = "input_ids"
    _supports_sdpa = True

    def __init__(self, config: GeoStrataConfig) -> None:
        super().__init__(config)
        if not _under_meta_device():  # fail before building anything when weights are absent
            if config.vision_name_or_path is not None:
                require_local(config.vision_name_or_path, "vision_name_or_path")
            if config.text_name_or_path is not None:
                require_llm(config.text_name_or_path)
            if config.load_in_4bit:
                check_qlora(config)
        sections = config.sections()
        self.vision = MultiLevelVisionEncoder(sections.vision)
        if config.baseline == "llava":
            self.projector = LlavaProjector(sections.fusion, self.vision.last_dim)
        else:
            self.augmentation = SemanticAugmentation(
                sections.augmentation, self.vision.feature_dims
            )
            self.experts = SemanticExperts(sections.experts)
            self.fusion = CrossModalFusion(sections.fusion)
            # Stands in for q when a batch comes without question embeddings (e.g. captions).
            self.default_question = nn.Parameter(torch.randn(config.knowledge_dim) * 0.02)
        # With pretrained weights the config-built LLM is only a placeholder until
        # _load_pretrained_llm replaces it: build it on the meta device (no memory, no random
        # init), or a 7B model would first take 28 GB of fp32 random weights on the CPU.
        placeholder = config.text_name_or_path is not None
        with torch.device("meta") if placeholder else contextlib.nullcontext():
            self.llm = AutoModelForCausalLM.from_config(config.text_config)
        self.post_init()
        self.vision.load_pretrained()  # after post_init, which would re-initialise loaded weights
        self._load_pretrained_llm()
        self._configure_trainable()
        # post_init recorded tied weights (SmolLM2's lm_head = embed_tokens) under the names they
        # had before the LLM was loaded / PEFT-wrapped; from_pretrained ties by these names.
        self.all_tied_weights_keys = self.get_expanded_tied_weights_keys(all_submodels=True)
        self.cue_pointers: list[int] = []  # pointer token ids, set by attach_knowledge
        self.decode_mode = "dynamic"  # how generate decodes (model/decoding.py): load_model sets it

    # ---- construction ------------------------------------------------------------------------
    def _load_pretrained_llm(self) -> None:
        """The LLM named by `text_name_or_path`; its architecture must be the one text_config
        describes and its folder must hold every weight (HF would initialise the rest)."""
        name = self.config.text_name_or_path
        if name is None or _under_meta_device():
            return
        path = llm_folder(name)  # a GGUF source is de-quantised into the cache once
        llm = load_pretrained_hf(AutoModelForCausalLM, path, **_pretrained_llm_kwargs(self.config))
        _check_llm_architecture(path, llm.config, self.config.text_config)
        llm.resize_token_embeddings(self.config.text_config.vocab_size)  # room for <image>
        self.llm = llm

    @classmethod
    def from_pretrained(
        cls, path: str | Path, *args: Any, **kwargs: Any
    ) -> GeoStrataForConditionalGeneration:
        """A saved model folder, verified before any weight is used: config.json must be a valid
        GeoStrataConfig, and the safetensors files must hold exactly the keys and shapes of the
        model it describes (HF would initialise missing weights randomly and drop extra ones).
        Loads without transformers' per-tensor progress bar."""
        folder = Path(path)
        config = kwargs.pop("config", None) or load_saved_config(folder)
        files = sorted(folder.glob("model*.safetensors"))
        if not files:
            raise CheckpointError(f"{folder} holds no model.safetensors: not a saved model folder")
        found: dict[str, tuple[int, ...]] = {}
        for file in files:
            found.update(safetensors_shapes(file))
        with torch.device("meta"):
            expected, tied = state_shapes(cls(config))
        where = f"{folder}: the weights do not fit the model its config.json describes"
        require_same_shapes(where, expected, found, optional=tied)
        if any(v == () != expected[k] for k, v in found.items() if k in expected):
            # saved while the retrieval gates were 0-d: transformers refuses the shapes, torch's
            # own load_state_dict takes them (LevelAugmentation reshapes them on load)
            model = cls(config)
            for file in files:
                load_safetensors_weights(model, file, strict=False)
            return model.eval()
        with hf_progress_bars_off():
            return super().from_pretrained(folder, *args, config=config, **kwargs)

    def _configure_trainable(self) -> None:
        cfg = self.config
        if cfg.freeze_llm:
            self.llm.requires_grad_(False)
        if cfg.gradient_checkpointing:  # non-reentrant: works with a frozen embedding layer
            self.llm.gradient_checkpointing_enable({"use_reentrant": False})
        if cfg.load_in_4bit:
            from peft import prepare_model_for_kbit_training

            self.llm = prepare_model_for_kbit_training(self.llm)
        if cfg.use_lora:  # PEFT freezes the base LLM and trains only the low-rank adapters
            from peft import LoraConfig, get_peft_model

            lora = LoraConfig(
                r=cfg.lora_r,
                lora_alpha=cfg.lora_alpha,
                lora_dropout=cfg.lora_dropout,
                target_modules=list(cfg.lora_target_modules),
                task_type="CAUSAL_LM",
            )
            self.llm = get_peft_model(self.llm, lora)

    def get_input_embeddings(self) -> nn.Module:
        return self.llm.get_input_embeddings()

    # ---- knowledge ---------------------------------------------------------------------------
    def attach_knowledge(self, retriever: Retriever, cues: CueVocabulary | None = None) -> None:
        """Use `retriever` for top-k search; copy its level embeddings into non-persistent buffers.

        ``cues``: with cue text on, the token ids of each entry's name
        (`processor.cue_vocabulary`), written into the prompt for retrieved entries.
        Buffers are not saved, so call this again after from_pretrained.
        """
        cfg = self.config
        if retriever.dim != cfg.knowledge_dim:
            raise KnowledgeBaseError(
                f"knowledge base embeddings have dim {retriever.dim}, the model "
                f"was built for knowledge_dim={cfg.knowledge_dim}"
            )
        if cfg.knowledge_encoder not in (None, retriever.encoder_name):
            raise KnowledgeBaseError(
                f"knowledge base uses encoder {retriever.encoder_name!r}, the "
                f"model was trained with {cfg.knowledge_encoder!r}"
            )
        if cfg.baseline != "llava" and cfg.retrieval and cfg.top_k > 0:
            _check_entries_to_retrieve(retriever, list(cfg.levels), cfg.top_k)
        cfg.knowledge_encoder = retriever.encoder_name
        if cfg.baseline != "llava":
            self.augmentation.attach(retriever, self.llm.get_input_embeddings().weight.device)
        self._attach_cues(retriever, cues)

    def set_relation_weight(self, weight: float, retriever: Retriever) -> None:
        """Relational scene retrieval with weight `weight` (0: off) from now on, e.g. to compare
        weights on a validation fold without retraining; the config records it, so a model saved
        afterwards keeps it."""
        if self.config.baseline == "llava":
            raise ConfigError("the llava baseline retrieves nothing: no relation weight to set")
        self.augmentation.set_relation_weight(
            weight, retriever, self.llm.get_input_embeddings().weight.device
        )
        self.config.relation_weight = self.augmentation.config.relation_weight

    def _attach_cues(self, retriever: Retriever, cues: CueVocabulary | None) -> None:
        slots = CueSlots.from_config(self.config)
        self.cue_pointers = []
        if not slots.total:
            return
        if cues is None:
            raise KnowledgeBaseError(
                "cue_text is on: attach_knowledge(kb, processor.cue_vocabulary(names)) needs the "
                "token ids of the entries' names"
            )
        device = self.llm.get_input_embeddings().weight.device
        for level in slots.levels:
            table = cues.slot.get(level)
            want = (len(retriever.level_ids(level)), slots.name_tokens)
            if table is None or tuple(table.shape) != want or level not in cues.answer:
                got = None if table is None else tuple(table.shape)
                raise KnowledgeBaseError(f"cue names of {level!r}: shape {got}, expected {want}")
            self.register_buffer(f"cue_names_{level}", table.to(device), persistent=False)
            self.register_buffer(f"cue_answers_{level}", cues.answer[level], persistent=False)
        self.cue_pointers = list(cues.pointers)

    # ---- image path --------------------------------------------------------------------------
    def encode_images(self, pixel_values: torch.Tensor) -> MultiLevelFeatures:
        """(B, C, S, S) -> tower features; cache these when the tower is frozen."""
        features = self.vision(pixel_values)
        if self.config.baseline != "llava":  # only the LLaVA projector reads the last layer
            features = dataclasses.replace(features, last=None)
        return features

    def visual_tokens(
        self,
        features: MultiLevelFeatures,
        question_embeds: torch.Tensor | None = None,
        align_targets: dict[str, torch.Tensor] | None = None,
    ) -> VisualTokens:
        """Features -> LLM-width image tokens, through augmentation, experts and fusion."""
        head = self.projector if self.config.baseline == "llava" else self.fusion
        features = features.to(dtype=next(head.parameters()).dtype)  # cached fp32 -> bf16 model
        if self.config.baseline == "llava":
            return VisualTokens(self.projector(features.last))
        batch = features.batch_size
        q = (
            question_embeds
            if question_embeds is not None
            else self.default_question.expand(batch, -1)
        )
        q = q.to(self.default_question.dtype)  # (B, Dk)
        aug = self.augmentation(features.levels, q, align_targets)
        exp = self.experts(aug.tokens, q)
        return VisualTokens(
            self.fusion(exp.tokens),
            exp.router_weights,
            aug.retrieved,
            aug.align_loss,
            exp.balance_loss,
        )

    @torch.no_grad()
    def route_questions(self, question_embeds: torch.Tensor) -> torch.Tensor | None:
        """The router's weights (B, L) over `config.levels` for question embeddings (B, Dk): the
        router reads the question only, so no image is needed. None for the llava baseline."""
        if self.config.baseline == "llava":
            return None
        q = question_embeds.to(self.default_question.device, self.default_question.dtype)
        return self.experts.route(q)

    def _embed(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor | None,
        features: MultiLevelFeatures | None,
        question_embeds: torch.Tensor | None,
        align_targets: dict[str, torch.Tensor] | None,
        cue_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> Embedded:
        """The LLM's input: the retrieved entries' names written into the cue slots, answers
        that name a retrieved entry turned into its pointer, image tokens spliced in."""
        if features is None and pixel_values is not None:
            features = self.encode_images(pixel_values)
        if features is None:
            return Embedded(self.get_input_embeddings()(input_ids), None, input_ids, labels)
        visual = self.visual_tokens(features, question_embeds, align_targets)
        if cue_mask is not None:
            input_ids = self._write_cues(input_ids, cue_mask.to(input_ids.device), visual)
            if labels is not None and self.cue_pointers:
                answers = self.slot_answers(visual.retrieved)
                input_ids, labels = self._point_labels(input_ids, labels, answers)
        embeds = self.get_input_embeddings()(input_ids)  # (B, T, D_llm)
        mask = input_ids == self.config.image_token_id  # (B, T)
        return Embedded(splice_image_tokens(embeds, mask, visual.tokens), visual, input_ids, labels)

    def slot_answers(self, retrieved: Mapping[str, RetrievedCues]) -> list[list[list[int]]]:
        """B x P: the answer-form ids of the entry written in each cue slot (level-major)."""
        slots = CueSlots.from_config(self.config)
        rows: list[list[list[int]]] = []
        for level in slots.levels:
            table = getattr(self, f"cue_answers_{level}").tolist()  # (N_l, A), -1 padded
            idx = retrieved[level].indices[:, : slots.per_level].tolist()  # (B, k)
            for b, entries in enumerate(idx):
                if b == len(rows):
                    rows.append([])
                rows[b] += [[t for t in table[e] if t >= 0] if e >= 0 else [] for e in entries]
        return rows

    def _point_labels(
        self, input_ids: torch.Tensor, labels: torch.Tensor, answers: list[list[list[int]]]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """An answer equal to the name in cue slot i is learned as [<cue i>, </s>] (inputs and
        labels alike, the rest of the answer padded out), so naming what was retrieved is one
        decision the LLM can make for any entry, including ones no training answer named."""
        eos = _first(self.config.text_config.eos_token_id)
        pad = self.config.text_config.pad_token_id
        input_ids, labels = input_ids.clone(), labels.clone()
        for b, row in enumerate(labels.tolist()):
            at = [t for t, v in enumerate(row) if v != -100]
            answer = [row[t] for t in at]
            answer = answer[:-1] if answer and answer[-1] == eos else answer
            slot = next((i for i, a in enumerate(answers[b]) if a and a == answer), None)
            if slot is None:
                continue
            first, end = at[0], at[-1] + 1
            labels[b, first:end], input_ids[b, first:end] = -100, pad
            labels[b, first], input_ids[b, first] = self.cue_pointers[slot], self.cue_pointers[slot]
            labels[b, first + 1], input_ids[b, first + 1] = eos, eos
        return input_ids, labels

    def expand_pointers(self, ids: list[int], answers: list[list[int]]) -> list[int]:
        """Generated ids with each pointer replaced by the name of the entry in its slot."""
        where = {p: i for i, p in enumerate(self.cue_pointers)}
        out: list[int] = []
        for t in ids:
            out += answers[where[t]] if t in where else [t]
        return out

    def _write_cues(
        self, input_ids: torch.Tensor, cue_mask: torch.Tensor, visual: VisualTokens
    ) -> torch.Tensor:
        """input_ids (B, T) with each level's top cue_text_k entry names in the cue slots."""
        slots = CueSlots.from_config(self.config)
        per_row = cue_mask.sum(dim=1)  # (B,)
        if not slots.total or bool((per_row != slots.total).any()):
            raise ValueError(
                f"cue slots do not match: the prompt has {per_row.tolist()} per row, the model "
                f"fills {slots.total} ({len(slots.levels)} levels x {slots.per_level} entries x "
                f"{slots.name_tokens} tokens)"
            )
        names = []
        for level in slots.levels:
            idx = visual.retrieved[level].indices[:, : slots.per_level]  # (B, k)
            table = getattr(self, f"cue_names_{level}")  # (N_l, m)
            rows = table[idx.clamp(min=0)]  # (B, k, m)
            pad = self.config.text_config.pad_token_id
            names.append(rows.masked_fill((idx < 0).unsqueeze(-1), pad).flatten(1))
        return input_ids.masked_scatter(cue_mask, torch.cat(names, dim=1))  # (B, T)

    @staticmethod
    def _position_ids(attention_mask: torch.Tensor | None, length: int) -> torch.Tensor | None:
        """Positions that skip left padding, so padded and unpadded prompts decode the same."""
        if attention_mask is None:
            return None
        pos = attention_mask.long().cumsum(-1) - 1  # (B, T_total)
        return pos.clamp(min=0)[:, -length:]

    # ---- forward -----------------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        features: MultiLevelFeatures | None = None,
        question_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        align_targets: dict[str, torch.Tensor] | None = None,
        past_key_values: object | None = None,
        use_cache: bool | None = None,
        question_levels: torch.Tensor | None = None,
        cue_mask: torch.Tensor | None = None,
    ) -> GeoStrataOutput:
        emb = self._embed(
            input_ids, pixel_values, features, question_embeds, align_targets, cue_mask, labels
        )
        embeds, visual, labels = emb.embeds, emb.visual, emb.labels
        if use_cache is None:  # no KV cache unless asked for: in training, a cache the LLM fills
            use_cache = past_key_values is not None  # in forward would fill again when
            # activation checkpointing recomputes a layer (FSDP's, or gradient_checkpointing)
        out = self.llm(
            inputs_embeds=embeds,
            attention_mask=attention_mask,
            position_ids=self._position_ids(attention_mask, embeds.shape[1]),
            cache=past_key_values,
            use_cache=use_cache,
        )
        result = GeoStrataOutput(logits=out.logits, past_key_values=out.cache, input_ids=emb.ids)
        if visual is not None:
            result.router_weights = visual.router_weights
            result.retrieved = None if self.config.baseline == "llava" else visual.retrieved
            result.align_loss, result.balance_loss = visual.align_loss, visual.balance_loss
            result.router_loss = self._router_loss(visual.router_weights, question_levels)
        if labels is not None:
            result.lm_loss = self._lm_loss(out.logits, labels)
            result.loss = self._total_loss(result)
        return result

    @staticmethod
    def _lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Next-token cross-entropy on answer tokens only (labels -100 elsewhere)."""
        shift_logits = logits[:, :-1].float()  # (B, T-1, V)
        shift_labels = labels[:, 1:].to(logits.device)  # (B, T-1)
        return F.cross_entropy(
            shift_logits.reshape(-1, shift_logits.shape[-1]),
            shift_labels.reshape(-1),
            ignore_index=-100,
        )

    def _router_loss(
        self, weights: torch.Tensor | None, question_levels: torch.Tensor | None
    ) -> torch.Tensor | None:
        """Cross-entropy of the router's weights (B, L) against each question's level (B,)
        (indices into VISUAL_LEVELS, -1 unknown); None when off or no question has a level
        the model has."""
        if self.config.lambda_router <= 0 or not self.config.experts or weights is None:
            return None
        if question_levels is None:
            return None
        lookup = torch.tensor(
            [self.config.levels.index(lv) if lv in self.config.levels else -1
             for lv in VISUAL_LEVELS],
            device=weights.device,
        )  # fmt: skip
        levels = question_levels.to(weights.device)
        target = torch.where(levels >= 0, lookup[levels.clamp(min=0)], -1)  # (B,)
        known = target >= 0
        if not known.any():
            return None
        log_w = torch.log(weights[known].float().clamp(min=1e-9))  # (B', L)
        return F.nll_loss(log_w, target[known])

    def _total_loss(self, out: GeoStrataOutput) -> torch.Tensor:
        loss = out.lm_loss
        if out.align_loss is not None and self.config.lambda_align > 0:
            loss = loss + self.config.lambda_align * out.align_loss
        if out.balance_loss is not None and self.config.lambda_balance > 0:
            loss = loss + self.config.lambda_balance * out.balance_loss
        if out.router_loss is not None:
            loss = loss + self.config.lambda_router * out.router_loss
        return loss

    # ---- inference ---------------------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        features: MultiLevelFeatures | None = None,
        question_embeds: torch.Tensor | None = None,
        max_new_tokens: int = 8,
        do_sample: bool = False,
        cue_mask: torch.Tensor | None = None,
        **kwargs: object,
    ) -> torch.Tensor:
        """Greedy/sampled decoding with KV cache from spliced inputs_embeds -> new ids (B, n)."""
        emb = self._embed(input_ids, pixel_values, features, question_embeds, None, cue_mask)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        text = self.config.text_config
        decoding = generation_kwargs(self.decode_mode, emb.embeds.device)  # model/decoding.py
        new = self.llm.generate(
            inputs_embeds=emb.embeds,
            attention_mask=attention_mask,
            max_new_tokens=max_new_tokens,
            do_sample=do_sample,
            pad_token_id=text.pad_token_id,
            eos_token_id=text.eos_token_id,
            bos_token_id=text.bos_token_id,
            **{**decoding, **kwargs},
        )
        if not self.cue_pointers or emb.visual is None:
            return new
        answers = self.slot_answers(emb.visual.retrieved)
        rows = [self.expand_pointers(r, a) for r, a in zip(new.tolist(), answers, strict=True)]
        width = max(len(r) for r in rows)
        return torch.tensor([r + [text.pad_token_id] * (width - len(r)) for r in rows])

    @torch.no_grad()
    def score_candidates(
        self, batch: dict[str, torch.Tensor], candidates: list[list[int]]
    ) -> torch.Tensor:
        """Sum log-prob of each candidate's token ids after each prompt: (B, C).

        `batch` is a processor output without answers (left-padded prompts); `candidates` are
        token id lists as the model should emit them, e.g. `processor.answer_ids(name)` (which
        ends in </s>). The image path runs once; only the LLM runs per candidate.
        """
        _check_candidates(candidates)
        mask = batch["attention_mask"]
        emb = self._embed(
            batch["input_ids"],
            batch.get("pixel_values"),
            batch.get("features"),
            batch.get("question_embeds"),
            None,
            batch.get("cue_mask"),
        )
        prompt = emb.embeds  # (B, T, D)
        scores = torch.stack([self._candidate_logprob(prompt, mask, c) for c in candidates], 1)
        if self.cue_pointers and emb.visual is not None and "cue_mask" in batch:
            scores = self._add_pointer_scores(scores, prompt, mask, candidates, emb.visual)
        return scores  # (B, C)

    def _add_pointer_scores(
        self,
        scores: torch.Tensor,
        prompt: torch.Tensor,
        mask: torch.Tensor,
        candidates: list[list[int]],
        visual: VisualTokens,
    ) -> torch.Tensor:
        """A candidate named by a cue slot may also be said as that slot's pointer: its score is
        the log of the summed probability of both ways."""
        eos = _first(self.config.text_config.eos_token_id)
        by_pointer = torch.stack(
            [self._candidate_logprob(prompt, mask, [p, eos]) for p in self.cue_pointers], 1
        )  # (B, P)
        answers = self.slot_answers(visual.retrieved)
        out = scores.clone()
        for b, slots in enumerate(answers):
            for c, cand in enumerate(candidates):
                hits = [i for i, a in enumerate(slots) if a and a == cand[:-1]]
                if hits:
                    both = torch.cat([scores[b, c : c + 1], by_pointer[b, hits]])
                    out[b, c] = torch.logsumexp(both, dim=0)
        return out

    def _candidate_logprob(
        self, prompt: torch.Tensor, mask: torch.Tensor, cand: list[int]
    ) -> torch.Tensor:
        b, t = prompt.shape[:2]
        cand_ids = torch.tensor(cand, device=prompt.device).expand(b, -1)  # (B, Lc)
        embeds = torch.cat([prompt, self.get_input_embeddings()(cand_ids)], dim=1)  # (B, T+Lc, D)
        full_mask = torch.cat([mask, torch.ones_like(cand_ids)], dim=1)
        logits = self.llm(
            inputs_embeds=embeds,
            attention_mask=full_mask,
            position_ids=self._position_ids(full_mask, embeds.shape[1]),
        ).logits
        logp = torch.log_softmax(logits[:, t - 1 : -1].float(), dim=-1)  # (B, Lc, V), predicts cand
        return logp.gather(-1, cand_ids.unsqueeze(-1)).squeeze(-1).sum(-1)  # (B,)


def _check_candidates(candidates: list[list[int]]) -> None:
    if not candidates:
        raise InputError("score_candidates: no candidates given")
    for i, cand in enumerate(candidates):
        if isinstance(cand, str) or not cand or not all(isinstance(t, int) for t in cand):
            raise InputError(
                f"candidate {i}: expected a non-empty list of token ids (e.g. "
                f"processor.answer_ids(text)), got {cand!r}"
            )


def check_qlora(config: GeoStrataConfig) -> None:
    """QLoRA (load_in_4bit) can run here, or a ConfigError naming what is missing: a pretrained
    LLM to quantise as it loads, the bitsandbytes package, a CUDA GPU (its 4-bit kernels)."""
    if config.text_name_or_path is None:
        raise ConfigError(
            "load_in_4bit=True quantises a pretrained LLM while it loads "
            "(model.text_name_or_path); this model's LLM is built from its config, so there is "
            "nothing to quantise"
        )
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as exc:
        raise ConfigError(
            "load_in_4bit=True needs the bitsandbytes package and a CUDA GPU "
            "(pip install bitsandbytes on the GPU machine)"
        ) from exc
    if not torch.cuda.is_available():
        raise ConfigError(
            "load_in_4bit=True needs a CUDA GPU (bitsandbytes' NF4 kernels), and none is visible; "
            "train with LoRA in 16 bits here (load_in_4bit=false)"
        )


def _pretrained_llm_kwargs(config: GeoStrataConfig) -> dict[str, object]:
    """dtype and (QLoRA) 4-bit quantisation for loading a real LLM."""
    kwargs: dict[str, object] = {"dtype": getattr(torch, config.torch_dtype)}
    if config.load_in_4bit:
        check_qlora(config)
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
    return kwargs


# The architecture a pretrained LLM folder must share with text_config (vocab may grow: <image>).
LLM_ARCHITECTURE = (
    "model_type", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads",
)


def _check_llm_architecture(path: str, found: object, wanted: object) -> None:
    """CheckpointError naming the folder and each architecture field that differs."""
    diffs = [
        f"{key}={getattr(found, key, None)!r} (text_config: {getattr(wanted, key, None)!r})"
        for key in LLM_ARCHITECTURE
        if getattr(found, key, None) != getattr(wanted, key, None)
    ]
    if found.vocab_size > wanted.vocab_size:
        diffs.append(f"vocab_size={found.vocab_size} > text_config.vocab_size={wanted.vocab_size}")
    if diffs:
        raise CheckpointError(
            f"pretrained LLM {path} is not the model text_config describes: {', '.join(diffs)}"
        )


def count_parameters(config: GeoStrataConfig) -> dict[str, object]:
    """Trainable / frozen parameter counts from the config alone (built on the meta device)."""
    with torch.device("meta"):
        model = GeoStrataForConditionalGeneration(config)
    counts: dict[str, object] = {"trainable": 0, "frozen": 0, "components": {}}
    for name, param in model.named_parameters():
        kind = "trainable" if param.requires_grad else "frozen"
        comp = counts["components"].setdefault(name.split(".")[0], {"trainable": 0, "frozen": 0})
        comp[kind] += param.numel()
        counts[kind] += param.numel()
    return counts


def _check_entries_to_retrieve(retriever: Retriever, levels: list[str], top_k: int) -> None:
    """A model that retrieves needs entries to retrieve: an empty base would answer silently
    without any cue, so it is refused; a level without entries only warns."""
    empty = [level for level in levels if not retriever.level_ids(level)]
    if len(empty) == len(levels):
        raise KnowledgeBaseError(
            f"the knowledge base has no entries at any level the model retrieves from "
            f"({', '.join(levels)}; retrieval on, top_k={top_k}), so every answer would come "
            "without cues: attach the base the model was trained with (the 'knowledge' of its "
            "experiment.yaml) or one that has entries"
        )
    if empty:
        logger.warning(
            "the knowledge base has no entries at level(s) %s: no cues are retrieved there",
            ", ".join(empty),
        )
