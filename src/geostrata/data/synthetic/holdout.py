"""Classes held out of the training split: what a model can only name from the knowledge base.

A held-out scene class has no training image; a held-out object class is never drawn in a
training image and no training question names it. The test split keeps every class, so
evaluation can report seen and unseen classes apart. The knowledge base keeps the entries of held-
out classes: recognising them is what retrieved knowledge is for.

Folds rotate: with F folds, fold k holds out every F-th class of a seeded permutation, so each
scene class (and each class of `OBJECT_POOL`) is held out in exactly one fold (with F above the
pool's size some folds hold no object out).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from geostrata.data.synthetic.vocab import COUNTABLE, SCENE_CLASSES
from geostrata.errors import ConfigError

# Objects that may be held out: countable, and none of building / tree, which nearly every scene
# draws (holding those out would change almost every training image).
OBJECT_POOL: tuple[str, ...] = tuple(c for c in COUNTABLE if c not in ("building", "tree"))


@dataclass(frozen=True)
class Holdout:
    scenes: tuple[str, ...] = ()
    objects: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in self.scenes:
            if name not in SCENE_CLASSES:
                raise ConfigError(f"holdout scene {name!r}: not a scene class {SCENE_CLASSES}")
        for name in self.objects:
            if name not in OBJECT_POOL:
                raise ConfigError(f"holdout object {name!r}: expected one of {OBJECT_POOL}")
        if len(set(self.scenes)) >= len(SCENE_CLASSES) - 1:
            raise ConfigError("holdout: at least two scene classes must stay in training")

    @classmethod
    def fold(cls, fold: int, folds: int, seed: int = 0) -> Holdout:
        """Fold ``fold`` of ``folds``: every folds-th class of a permutation seeded by ``seed``."""
        if not 2 <= folds <= len(SCENE_CLASSES) or not 0 <= fold < folds:
            raise ConfigError(
                f"holdout fold {fold} of {folds}: need 2 <= folds <= {len(SCENE_CLASSES)} "
                "and 0 <= fold < folds"
            )
        rng = np.random.default_rng([seed, 7919])
        scenes = [SCENE_CLASSES[i] for i in rng.permutation(len(SCENE_CLASSES))]
        objects = [OBJECT_POOL[i] for i in rng.permutation(len(OBJECT_POOL))]
        return cls(tuple(sorted(scenes[fold::folds])), tuple(sorted(objects[fold::folds])))

    @classmethod
    def parse(cls, text: str, seed: int = 0) -> Holdout:
        """``"K/F"`` (fold K of F) or ``"scene:a,b;object:c"`` (explicit classes); "" is none."""
        text = text.strip()
        if not text:
            return cls()
        if "/" in text and ":" not in text:
            fold, _, folds = text.partition("/")
            if not (fold.strip().isdigit() and folds.strip().isdigit()):
                raise ConfigError(f"holdout {text!r}: expected K/F, e.g. 0/3")
            return cls.fold(int(fold), int(folds), seed)
        parts: dict[str, tuple[str, ...]] = {"scene": (), "object": ()}
        for part in text.split(";"):
            kind, sep, names = part.partition(":")
            if not sep or kind.strip() not in parts:
                raise ConfigError(f"holdout {text!r}: expected K/F or scene:a,b;object:c")
            parts[kind.strip()] = tuple(n.strip() for n in names.split(",") if n.strip())
        return cls(parts["scene"], parts["object"])

    @property
    def seen_scenes(self) -> tuple[str, ...]:
        return tuple(s for s in SCENE_CLASSES if s not in self.scenes)

    def to_dict(self) -> dict[str, list[str]]:
        return {"scenes": list(self.scenes), "objects": list(self.objects)}

    @classmethod
    def from_dict(cls, data: Any) -> Holdout:
        """From meta.json's ``holdout`` (absent in older folders: nothing held out)."""
        if data is None:
            return cls()
        if not isinstance(data, dict):
            raise ConfigError(f"meta.json holdout: expected a mapping, got {data!r:.80}")
        return cls(tuple(data.get("scenes", ())), tuple(data.get("objects", ())))
