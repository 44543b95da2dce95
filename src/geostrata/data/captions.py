"""Image captions in the Karpathy-split JSON: UCM-Captions, Sydney-Captions, RSICD (NWPU too).

One `dataset*.json` (`dataset.json` for UCM / Sydney, `dataset_rsicd.json` for RSICD) holds
`{"images": [{"filename", "imgid", "split", "sentences": [{"raw", "tokens", ...}, ...]}, ...]}`;
the images lie in a folder beside it (`images/`, `imgs/` or `RSICD_images/` in the releases, or
the `image_dir` given). Each image is one record whose `references` are all its sentences (what
a predicted caption is scored against) and whose `answer` is the first; training expands them to
one record per sentence (`geostrata.session.samples`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from geostrata.data.fields import is_id, is_relative_name, is_text
from geostrata.data.images import BandPolicy, ImageRecords
from geostrata.data.problems import Problems, attempt
from geostrata.data.rsvqa import load_json, require_key
from geostrata.errors import AnnotationError, DatasetNotFoundError

SPLITS = ("train", "val", "test", "restval")  # restval: Karpathy's COCO leftovers
IMAGE_DIRS = ("images", "imgs", "RSICD_images")
JSON_GLOB = "dataset*.json"
CAPTION_TYPE = "caption"
CAPTION_LEVEL = "scene"

Sample = dict[str, Any]
Transform = Callable[[Sample], Sample]


def find_caption_json(root: str | Path) -> Path:
    """`root` itself when it is a file, else the one `dataset*.json` in the folder `root`."""
    root = Path(root)
    if root.is_file():
        return root
    if not root.is_dir():
        raise DatasetNotFoundError(f"{root}: caption data set not found (nothing is downloaded)")
    found = sorted(root.glob(JSON_GLOB))
    if len(found) != 1:
        names = ", ".join(p.name for p in found) or "none"
        raise DatasetNotFoundError(
            f"{root}: expected one {JSON_GLOB} (Karpathy caption file), found {names}; "
            "give the file itself as the root"
        )
    return found[0]


def find_image_dir(json_path: Path, image_dir: str | None) -> Path:
    """`image_dir` relative to the JSON's folder, or the first release folder name that exists."""
    base = json_path.parent
    if image_dir is not None:
        return base / image_dir
    for name in IMAGE_DIRS:
        if (base / name).is_dir():
            return base / name
    raise DatasetNotFoundError(
        f"{base}: no image folder ({', '.join(IMAGE_DIRS)}) beside {json_path.name}; "
        "set data.image_dir (or --image-dir) to the folder holding the images"
    )


class CaptionDataset(ImageRecords, Dataset[Sample]):
    """Karpathy caption JSON: one record per image of `split` (None: every split).

    Record keys: image_path, image_id (file name), question_id ("caption:{imgid}"), task
    ("caption"), answer (the first sentence), references (every sentence), qtype ("caption"),
    level ("scene"), split. A malformed entry is an AnnotationError naming the file and
    `images[i]`; with `problems` it is listed there and skipped.
    """

    def __init__(
        self,
        root: str | Path,
        split: str | None = None,
        image_dir: str | None = None,
        bands: BandPolicy | None = None,
        transform: Transform | None = None,
        problems: Problems | None = None,
    ) -> None:
        self.json_path = find_caption_json(root)
        self.image_root = find_image_dir(self.json_path, image_dir)
        self.split = split
        self.bands = bands
        self.transform = transform
        entries = _image_entries(self.json_path)
        seen: dict[str, int] = {}
        records = [r for i, e in entries if (r := attempt(problems, self._record, i, e, seen))]
        present = sorted({r["split"] for r in records})
        if split is not None and split not in present:
            raise DatasetNotFoundError(
                f"{self.json_path}: no images in split {split!r} (splits: {', '.join(present)})"
            )
        self.records = [r for r in records if split in (None, r["split"])]

    def _record(self, index: int, entry: Any, seen: dict[str, int]) -> Sample:
        where = f"{self.json_path}: images[{index}]"
        if not isinstance(entry, dict):
            raise AnnotationError(f"{where}: expected an object, got {entry!r:.80}")
        filename = require_key(entry, "filename", is_relative_name, "a file name", where)
        where = f"{where} ({filename})"
        image_id = str(require_key(entry, "imgid", is_id, "an integer or string", where))
        split = require_key(entry, "split", lambda v: v in SPLITS, f"one of {SPLITS}", where)
        if image_id in seen:
            raise AnnotationError(
                f"{where}: duplicate imgid {image_id} (also images[{seen[image_id]}])"
            )
        seen[image_id] = index
        sentences = require_key(entry, "sentences", _is_nonempty_list, "a non-empty list", where)
        references = [_sentence(s, f"{where}, sentences[{k}]") for k, s in enumerate(sentences)]
        return {
            "image_path": str(self.image_root / filename),
            "image_id": filename,
            "question_id": f"caption:{image_id}",
            "task": "caption",
            "answer": references[0],
            "references": references,
            "qtype": CAPTION_TYPE,
            "level": CAPTION_LEVEL,
            "split": split,
        }


def _image_entries(path: Path) -> list[tuple[int, Any]]:
    document = load_json(path)
    if not isinstance(document, dict) or not isinstance(document.get("images"), list):
        raise AnnotationError(f"{path}: expected an object with a list under key 'images'")
    return list(enumerate(document["images"]))


def _sentence(sentence: Any, where: str) -> str:
    if not isinstance(sentence, dict):
        raise AnnotationError(f"{where}: expected an object with key 'raw', got {sentence!r:.80}")
    raw = require_key(sentence, "raw", is_text, "a non-empty string", where)
    return raw.strip()


def _is_nonempty_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value)
