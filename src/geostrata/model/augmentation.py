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
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
            self.query_gate = nn.Parameter(torch.tensor(0.1))
            self.cue_proj = nn.Linear(dk, d)
            self.question_proj = nn.Linear(dk, d)
            self.norm = nn.LayerNorm(d)
            self.attn = nn.MultiheadAttention(d, config.num_heads, batch_first=True)
            self.gate = nn.Parameter(torch.tensor(float(config.gate_init)))
        self.register_buffer("entries", None, persistent=False)  # (N_l, Dk), set by attach()
        self.entry_ids: tuple[str, ...] = ()
        self.retriever: Retriever | None = None

    @property
    def active(self) -> bool:
        return self.config.retrieval and self.config.top_k > 0

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

    def forward(
        self, raw: torch.Tensor, question: torch.Tensor, target: torch.Tensor | None
    ) -> tuple[torch.Tensor, RetrievedCues | None, torch.Tensor | None]:
        v = self.input_proj(raw)  # (B, N, D)
        a = F.normalize(self.align_proj(v.mean(dim=1)), dim=-1)  # (B, Dk) aligned, question-free
        align = self._align_loss(a, target) if target is not None else None
        if not self.active:
            return v, None, align  # identity path: k = 0 or retrieval off
        offset = F.normalize(self.query(question), dim=-1)  # (B, Dk) unit question direction
        mix = QUESTION_MIX * torch.tanh(self.query_gate)
        r = F.normalize(a + mix * offset, dim=-1)  # (B, Dk) retrieval query
        cues, found = self._retrieve(r)  # (B, k, Dk)
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
        return v + torch.tanh(self.gate) * attended, found, align

    def _retrieve(self, r: torch.Tensor) -> tuple[torch.Tensor, RetrievedCues]:
        """Top-k of query r (B, Dk): the cue embeddings (B, k, Dk) and what was found."""
        if self.retriever is None or self.entries is None:
            raise KnowledgeBaseError(
                f"level {self.level!r}: retrieval is on but no knowledge base is "
                "attached; call model.attach_knowledge(retriever) (also after "
                "from_pretrained), or set retrieval=False / top_k=0"
            )
        k = min(self.config.top_k, self.entries.shape[0])
        idx = self._top_k(r.detach(), k)  # (B, k)
        cues = self.entries[idx.clamp(min=0)].to(r.dtype)  # (B, k, Dk)
        scores = (r.unsqueeze(1) * cues).sum(-1)  # (B, k), recomputed so it stays differentiable
        return cues, RetrievedCues(scores, idx, self.entry_ids)

    def _top_k(self, r: torch.Tensor, k: int) -> torch.Tensor:
        """Rows of the k best entries for queries r (B, Dk), on r's device.

        Up to EXACT_SEARCH_MAX entries the search is one matmul and a top-k where the model runs
        (exact, and no round trip to the host in the step); beyond, the retriever's index (FAISS
        IVF / HNSW) on the CPU."""
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


class SemanticAugmentation(nn.Module):
    """All levels' augmentation; levels are independent, so each has its own weights."""

    def __init__(self, config: AugmentationConfig, in_dims: dict[str, int]) -> None:
        """`in_dims`: each level's feature width as the tower gives it."""
        super().__init__()
        self.config = config
        self.levels = nn.ModuleDict(
            {lv: LevelAugmentation(lv, in_dims[lv], config) for lv in config.levels}
        )

    def attach(self, retriever: Retriever, device: torch.device) -> None:
        for module in self.levels.values():
            module.attach(retriever, device)

    def forward(
        self,
        features: dict[str, torch.Tensor],
        question: torch.Tensor,
        align_targets: dict[str, torch.Tensor] | None = None,
    ) -> AugmentationOutput:
        """features: level -> (B, N_l, Dv_l); question (B, Dk) -> AugmentationOutput."""
        out = AugmentationOutput(tokens={})
        losses = []
        for level, module in self.levels.items():
            target = None if align_targets is None else align_targets.get(level)
            tokens, retrieved, align = module(features[level], question, target)
            out.tokens[level] = tokens
            if retrieved is not None:
                out.retrieved[level] = retrieved
            if align is not None:
                losses.append(align)
        out.align_loss = torch.stack(losses).mean() if losses else None
        return out
