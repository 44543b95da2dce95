"""Semantic Augmentation Module: enrich each level's visual tokens with retrieved knowledge cues.

Per level l (docs/architecture.md, step 3):
    a_l  = normalize(P_l pool(v_l))                               (B, Dk) aligned visual embedding
    r_l  = normalize(a_l + m * tanh(b_l) * normalize(W_l q))      (B, Dk) retrieval query
    top-k entries of level l from the knowledge base              (B, k) indices
    e    = level-embedding buffer rows; s = r_l . e (recomputed in torch, so W_l gets gradient)
    v_l' = v_l + tanh(g_l) * CrossAttn(q=v_l, kv=[proj(e) * softmax(s/t); proj(q)])
The search itself is a non-differentiable top-k (on the model's device, or FAISS for very large
levels); only which entries are used comes from it. The alignment loss pulls the question-free
a_l towards the embeddings of level l's ground-truth entries (soft-label InfoNCE over all entries
of the level). Because the query is built on a_l, alignment is what makes retrieval find the right
entries (multi-level alignment drives semantic augmentation). The question steers the query
through a gated, norm-bounded offset: the gate b_l starts at 0.1 and m = QUESTION_MIX caps the
offset at half the visual part (why: the unbounded variants measured in docs/results.md,
"Earlier measurements", lost retrieval).

Relational scene retrieval (`relation_weight` w > 0): the scene level ranks its entries by
    s(e) = r_scene . e + w * match(e)
where match(e) in [0, 1] says how well the finer levels' retrieval distributions
p_l = softmax(a_l E_l^T / align_temperature) (what the alignment loss fits to the image's land
covers and objects) fit the knowledge base's relations of e (knowledge/relations.py):
    match_l(e) = min(1, p_l . M_l[e] / (|p_l| sqrt(n_l(e))))     (the cosine of p_l with e's
relations when they are distinct entries), averaged over the levels where e has relations. A
scene class no training image showed is then found through the covers and objects it is made of
(compositional zero-shot, like attribute-based prediction). The relation term is computed from
the detached a_l: it changes which scene entries are retrieved and their weights, but the
language-model loss never trains the finer levels through it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from geostrata.errors import InputError, KnowledgeBaseError
from geostrata.knowledge.protocol import Retriever
from geostrata.model.outputs import RetrievedCues
from geostrata.model.settings import AugmentationConfig

# Levels with at most this many entries are searched exactly on the model's device (a (B, N)
# matmul: 64k entries x 384 dims is ~25 MFLOP per query); larger ones go through FAISS.
EXACT_SEARCH_MAX = 65_536
QUESTION_MIX = 0.5  # the question's offset to a retrieval query is at most half its visual part


@dataclass
class LevelOutput:
    tokens: torch.Tensor  # (B, N, D) augmented tokens
    aligned: torch.Tensor  # (B, Dk) the question-free aligned embedding a_l
    retrieved: RetrievedCues | None = None
    align_loss: torch.Tensor | None = None


@dataclass
class AugmentationOutput:
    tokens: dict[str, torch.Tensor]  # level -> (B, N_l, D) augmented tokens
    retrieved: dict[str, RetrievedCues] = field(default_factory=dict)
    align_loss: torch.Tensor | None = None  # scalar, None when no level had a label


class LevelAugmentation(nn.Module):
    """One level: input projection, retrieval query, cue cross-attention, alignment."""

    def __init__(self, level: str, in_dim: int, config: AugmentationConfig) -> None:
        super().__init__()
        d, dk = config.hidden_size, config.knowledge_dim
        self.level, self.config = level, config
        self.input_proj = nn.Linear(in_dim, d)
        self.align_proj = nn.Linear(d, dk)  # P_l, question-free
        if self.active:  # retrieval off or k = 0 builds no retrieval weights at all
            self.query = nn.Linear(dk, dk)  # W_l: question -> query direction
            # b_l: starts nearly visual-only (offset 0.05) yet non-zero, so W_l learns from step 1
            # gates are shape (1,), not scalars: FSDP2 cannot shard a 0-d parameter
            self.query_gate = nn.Parameter(torch.tensor([0.1]))
            self.cue_proj = nn.Linear(dk, d)
            self.question_proj = nn.Linear(dk, d)
            self.norm = nn.LayerNorm(d)
            self.attn = nn.MultiheadAttention(d, config.num_heads, batch_first=True)
            self.gate = nn.Parameter(torch.tensor([float(config.gate_init)]))
        self.register_buffer("entries", None, persistent=False)  # (N_l, Dk), set by attach()
        self.entry_ids: tuple[str, ...] = ()
        self.retriever: Retriever | None = None

    @property
    def active(self) -> bool:
        return self.config.retrieval and self.config.top_k > 0

    def _load_from_state_dict(
        self, state_dict: dict, prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        """Model folders saved before the gates became shape (1,) hold them as scalars."""
        for name in ("query_gate", "gate"):
            saved = state_dict.get(prefix + name)
            if saved is not None and saved.dim() == 0:
                state_dict[prefix + name] = saved.reshape(1)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def attach(self, retriever: Retriever, device: torch.device) -> None:
        emb = np.asarray(retriever.level_embeddings(self.level), dtype=np.float32)  # (N_l, Dk)
        if emb.ndim != 2 or emb.shape[1] != self.config.knowledge_dim:
            raise KnowledgeBaseError(
                f"level {self.level!r}: embeddings of shape {emb.shape}, "
                f"expected (N, {self.config.knowledge_dim})"
            )
        self.entries = torch.from_numpy(emb).to(device)
        self.entry_ids = tuple(retriever.level_ids(self.level))  # row -> entry id
        self.retriever = retriever

    def embed(self, raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Level tokens v (B, N, D) and their aligned, question-free embedding a_l (B, Dk)."""
        v = self.input_proj(raw)  # (B, N, D)
        return v, F.normalize(self.align_proj(v.mean(dim=1)), dim=-1)

    def entry_probabilities(self, aligned: torch.Tensor) -> torch.Tensor:
        """softmax(a_l E_l^T / align_temperature) (B, N_l): the distribution over the level's
        entries that the alignment loss fits to the image's truth."""
        logits = aligned @ self.entries.to(aligned.dtype).T  # (B, N_l)
        return torch.softmax(logits / self.config.align_temperature, dim=-1)

    def forward(
        self,
        v: torch.Tensor,
        a: torch.Tensor,
        question: torch.Tensor,
        target: torch.Tensor | None,
        bias: torch.Tensor | None = None,
    ) -> LevelOutput:
        """Tokens and aligned embedding from `embed`; `bias` (B, N_l) is added to every entry's
        retrieval score (the relation term of relational scene retrieval)."""
        align = self._align_loss(a, target) if target is not None else None
        if not self.active:
            return LevelOutput(v, a, None, align)  # identity path: k = 0 or retrieval off
        offset = F.normalize(self.query(question), dim=-1)  # (B, Dk) unit question direction
        mix = QUESTION_MIX * torch.tanh(self.query_gate)
        r = F.normalize(a + mix * offset, dim=-1)  # (B, Dk) retrieval query
        cues, found = self._retrieve(r, bias)  # (B, k, Dk)
        valid = found.indices >= 0  # (B, k)
        weights = torch.softmax(
            found.scores.masked_fill(~valid, float("-inf")) / self.config.retrieval_temperature, -1
        )
        weights = torch.nan_to_num(weights, nan=0.0)  # (B, k); rows with no valid cue -> all zero
        kv = torch.cat(
            [
                self.cue_proj(cues) * weights.unsqueeze(-1),  # (B, k, D)
                self.question_proj(question).unsqueeze(1),
            ],
            dim=1,
        )  # (B, k+1, D)
        pad = torch.cat(
            [~valid, valid.new_zeros(valid.shape[0], 1)], dim=1
        )  # question never masked
        attended, _ = self.attn(self.norm(v), kv, kv, key_padding_mask=pad, need_weights=False)
        return LevelOutput(v + torch.tanh(self.gate) * attended, a, found, align)

    def _retrieve(
        self, r: torch.Tensor, bias: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, RetrievedCues]:
        """Top-k of query r (B, Dk) (+ `bias` (B, N_l) on every entry's score): the cue
        embeddings (B, k, Dk) and what was found."""
        if self.retriever is None or self.entries is None:
            raise KnowledgeBaseError(
                f"level {self.level!r}: retrieval is on but no knowledge base is "
                "attached; call model.attach_knowledge(retriever) (also after "
                "from_pretrained), or set retrieval=False / top_k=0"
            )
        k = min(self.config.top_k, self.entries.shape[0])
        idx = self._top_k(r.detach(), k, bias)  # (B, k)
        cues = self.entries[idx.clamp(min=0)].to(r.dtype)  # (B, k, Dk)
        scores = (r.unsqueeze(1) * cues).sum(-1)  # (B, k), recomputed so it stays differentiable
        if bias is not None:
            scores = scores + bias.to(scores.dtype).gather(1, idx.clamp(min=0))
        return cues, RetrievedCues(scores, idx, self.entry_ids)

    def _top_k(self, r: torch.Tensor, k: int, bias: torch.Tensor | None = None) -> torch.Tensor:
        """Rows of the k best entries for queries r (B, Dk), on r's device.

        Up to EXACT_SEARCH_MAX entries, or whenever a `bias` changes the scores, the search is
        one matmul and a top-k where the model runs (exact, and no round trip to the host in the
        step); beyond, the retriever's index (FAISS IVF / HNSW) on the CPU."""
        if bias is not None:
            return (r @ self.entries.to(r.dtype).T + bias.to(r.dtype)).topk(k, dim=-1).indices
        if self.entries.shape[0] <= EXACT_SEARCH_MAX:
            return (r @ self.entries.to(r.dtype).T).topk(k, dim=-1).indices  # (B, k)
        result = self.retriever.search(r.float().cpu().numpy(), self.level, k)
        return torch.as_tensor(np.asarray(result.indices), dtype=torch.long, device=r.device)

    def _align_loss(self, aligned: torch.Tensor, target: torch.Tensor) -> torch.Tensor | None:
        if self.entries is None:
            raise KnowledgeBaseError(
                f"level {self.level!r}: align_targets given but no knowledge base "
                "is attached; call model.attach_knowledge(retriever) first"
            )
        if target.shape != (aligned.shape[0], self.entries.shape[0]):
            raise InputError(
                f"align_targets[{self.level!r}] has shape {tuple(target.shape)}, expected "
                f"({aligned.shape[0]}, {self.entries.shape[0]}) (batch, entries of the level)"
            )
        labelled = target.sum(-1) > 0  # (B,) all-zero rows mean "no label"
        if not labelled.any():
            return None
        a = aligned[labelled]  # (B', Dk)
        logits = a @ self.entries.to(a.dtype).T / self.config.align_temperature  # (B', N_l)
        if self.config.align_negatives == "batch":  # only entries this batch shows compete
            logits = logits.masked_fill(target.sum(0) <= 0, float("-inf"))
        p = target[labelled].float()
        p = p / p.sum(-1, keepdim=True)  # soft labels
        log_q = torch.log_softmax(logits, dim=-1).masked_fill(p == 0, 0.0)  # no 0 * -inf
        return -(p * log_q).sum(-1).mean()


def relation_match(
    probs: dict[str, torch.Tensor],
    matrices: dict[str, torch.Tensor],
    counts: dict[str, torch.Tensor],
) -> torch.Tensor:
    """How well each image's finer-level distributions fit each entry's relations: (B, N) in
    [0, 1]. probs: level -> (B, N_l) entry probabilities; matrices: level -> (N, N_l), 1 where
    a level-l entry fits a relation of the entry; counts: level -> (N,) its relations there.

    Per level, min(1, p . M[e] / (|p| sqrt(n(e)))) (the cosine of p with e's relations when
    they are distinct entries), averaged over the levels where e has relations (0 where none)."""
    total, levels = None, None
    for level, p in probs.items():
        m, n = matrices[level].to(p.dtype), counts[level].to(p.dtype)  # (N, N_l), (N,)
        cos = (p @ m.T) / (p.norm(dim=-1, keepdim=True) * n.clamp(min=1).sqrt())  # (B, N)
        cos = cos.clamp(max=1.0) * (n > 0)
        total = cos if total is None else total + cos
        levels = (n > 0).to(p.dtype) if levels is None else levels + (n > 0)
    return total / levels.clamp(min=1)


class SemanticAugmentation(nn.Module):
    """All levels' augmentation, each with its own weights; with relational retrieval the scene
    level's ranking also reads the finer levels' retrieval (module docstring)."""

    def __init__(self, config: AugmentationConfig, in_dims: dict[str, int]) -> None:
        """`in_dims`: each level's feature width as the tower gives it."""
        super().__init__()
        self.config = config
        self.levels = nn.ModuleDict(
            {lv: LevelAugmentation(lv, in_dims[lv], config) for lv in config.levels}
        )
        self.relation_levels: tuple[str, ...] = ()  # finer levels the scene ranking reads

    @property
    def relational(self) -> bool:
        return (
            self.config.relation_weight > 0
            and "scene" in self.levels
            and any(lv != "scene" for lv in self.levels)
        )

    def attach(self, retriever: Retriever, device: torch.device) -> None:
        for module in self.levels.values():
            module.attach(retriever, device)
        self.relation_levels = ()
        if not self.relational or not self.levels["scene"].active:
            return
        self.relation_levels = tuple(lv for lv in self.levels if lv != "scene")
        for level in self.relation_levels:
            table = retriever.relations("scene", level)
            want = (len(self.levels["scene"].entry_ids), len(self.levels[level].entry_ids))
            if table.matrix.shape != want or table.counts.shape != want[:1]:
                raise KnowledgeBaseError(
                    f"relations of scene at {level!r}: shape {table.matrix.shape}, expected {want}"
                )
            matrix = torch.from_numpy(np.asarray(table.matrix, dtype=np.float32)).to(device)
            counts = torch.from_numpy(np.asarray(table.counts, dtype=np.float32)).to(device)
            self.register_buffer(f"relations_{level}", matrix, persistent=False)
            self.register_buffer(f"relation_counts_{level}", counts, persistent=False)

    def set_relation_weight(
        self, weight: float, retriever: Retriever, device: torch.device
    ) -> None:
        """Use relation weight `weight` from now on (validated like the setting; the relation
        tables are built from `retriever`). For evaluation sweeps; training reads the config."""
        self.config = dataclasses.replace(self.config, relation_weight=weight)
        self.attach(retriever, device)

    def relation_scores(self, aligned: dict[str, torch.Tensor]) -> torch.Tensor:
        """match(e) (B, N_scene) from the finer levels' detached aligned embeddings."""
        probs = {
            lv: self.levels[lv].entry_probabilities(aligned[lv].detach())
            for lv in self.relation_levels
        }
        matrices = {lv: getattr(self, f"relations_{lv}") for lv in self.relation_levels}
        counts = {lv: getattr(self, f"relation_counts_{lv}") for lv in self.relation_levels}
        return relation_match(probs, matrices, counts)

    def forward(
        self,
        features: dict[str, torch.Tensor],
        question: torch.Tensor,
        align_targets: dict[str, torch.Tensor] | None = None,
    ) -> AugmentationOutput:
        """features: level -> (B, N_l, Dv_l); question (B, Dk) -> AugmentationOutput."""
        embedded = {lv: module.embed(features[lv]) for lv, module in self.levels.items()}
        bias = None
        if self.relation_levels:
            aligned = {lv: a for lv, (_, a) in embedded.items()}
            bias = self.config.relation_weight * self.relation_scores(aligned)  # (B, N_scene)
        out = AugmentationOutput(tokens={})
        losses = []
        for level, module in self.levels.items():
            target = None if align_targets is None else align_targets.get(level)
            v, a = embedded[level]
            result = module(v, a, question, target, bias if level == "scene" else None)
            out.tokens[level] = result.tokens
            if result.retrieved is not None:
                out.retrieved[level] = result.retrieved
            if result.align_loss is not None:
                losses.append(result.align_loss)
        out.align_loss = torch.stack(losses).mean() if losses else None
        return out
