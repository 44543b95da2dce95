"""Retrieval quality check: can a visual description that never names a class find its entry?

`default/paraphrases.jsonl` holds, for each scene and object class the benchmarks use, a few
descriptions written without the class name or any synonym (`name_violations` enforces that).
`evaluate_paraphrases` encodes them, searches the class's level, and reports recall@1 / @5, which
is what the Semantic Augmentation Module relies on when a question describes instead of names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from geostrata.errors import KnowledgeBaseError
from geostrata.knowledge.base import KnowledgeBase, default_dir
from geostrata.textio import read_jsonl

PARAPHRASE_FILE = "paraphrases.jsonl"
# Data sets whose scene / object classes must have paraphrases (see docs/knowledge.md).
COVERED_DATASETS: dict[str, tuple[str, ...]] = {
    "scene": ("synthetic", "ucmerced", "aid", "nwpu_resisc45"),
    "object": ("synthetic", "dota_v2"),
}


@dataclass(frozen=True)
class ParaphraseRecall:
    """Recall of one level over all its paraphrases."""

    recall_at_1: float
    recall_at_5: float
    n: int


def load_paraphrases(path: str | Path | None = None) -> dict[str, list[str]]:
    """{entry id: [description, ...]} from a JSONL file of {"id": ..., "texts": [...]}."""
    path = Path(path) if path is not None else default_dir() / PARAPHRASE_FILE
    table: dict[str, list[str]] = {}
    for where, row in read_jsonl(path, KnowledgeBaseError):
        if (
            not isinstance(row, dict)
            or not isinstance(row.get("id"), str)
            or not isinstance(row.get("texts"), list)
        ):
            raise KnowledgeBaseError(f"{where}: need fields 'id' (str) and 'texts' (list)")
        table[row["id"]] = [str(text) for text in row["texts"]]
    return table


def required_ids(kb: KnowledgeBase) -> dict[str, set[str]]:
    """Entry ids per level that `COVERED_DATASETS` map to (the classes needing paraphrases)."""
    return {level: {entry_id for dataset in datasets
                    for entry_id in kb.label_map.get(dataset, {}).values()
                    if kb.get(entry_id).level.value == level}
            for level, datasets in COVERED_DATASETS.items()}


def _mentions(text: str, phrase: str) -> bool:
    """Whole-word match of `phrase` in `text`, plural tolerated, `_`/`-` as spaces."""
    words = re.split(r"[\s_\-]+", phrase.lower().strip())
    pattern = r"\b" + r"[\s_\-]+".join(map(re.escape, words)) + r"(?:s|es)?\b"
    return re.search(pattern, text.lower()) is not None


def name_violations(kb: KnowledgeBase, paraphrases: dict[str, list[str]]) -> list[str]:
    """Paraphrases that give the answer away by naming their class or one of its synonyms."""
    problems = []
    for entry_id, texts in paraphrases.items():
        entry = kb.get(entry_id)
        for text in texts:
            problems += [f"{entry_id}: {text!r} contains {phrase!r}"
                         for phrase in (entry.name, *entry.synonyms) if _mentions(text, phrase)]
    return problems


def evaluate_paraphrases(kb: KnowledgeBase, paraphrases: dict[str, list[str]] | None = None,
                         ) -> dict[str, ParaphraseRecall]:
    """Recall@1 and @5 per level: each paraphrase is a query; a hit is its own entry in top-k."""
    paraphrases = paraphrases if paraphrases is not None else load_paraphrases()
    results: dict[str, ParaphraseRecall] = {}
    for level in ("scene", "region", "object", "attribute"):
        pairs = [(entry_id, text) for entry_id, texts in paraphrases.items()
                 if kb.get(entry_id).level.value == level for text in texts]
        if not pairs:
            continue
        found = kb.search(kb.encode_text([text for _, text in pairs]), level, 5).ids
        top1 = sum(ids[:1] == [entry_id] for (entry_id, _), ids in zip(pairs, found, strict=True))
        top5 = sum(entry_id in ids for (entry_id, _), ids in zip(pairs, found, strict=True))
        results[level] = ParaphraseRecall(top1 / len(pairs), top5 / len(pairs), len(pairs))
    return results
