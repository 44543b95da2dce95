"""Writers of tiny fake data sets in the real formats (in the style of torchgeo's tests/data).

Each helper writes into a folder the test owns (tmp_path) and returns what the test needs to
check the round trip. Images are a few pixels wide so the whole suite stays fast.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

SIZE = 8


def rgb_array(seed: int, height: int = SIZE, width: int = SIZE) -> np.ndarray:
    """A random (H, W, 3) uint8 image."""
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def write_image(path: Path, array: np.ndarray, **save_options: Any) -> Path:
    """Save in the format the suffix names (Pillow picks it), creating folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **save_options)
    return path


def write_png16(path: Path, array: np.ndarray) -> Path:
    """A 16-bit colour PNG (Pillow cannot write one): (H, W, 3) or (H, W, 4) uint16."""
    height, width, channels = array.shape
    colour_type = {3: 2, 4: 6}[channels]
    rows = [b"\x00" + array[y].astype(">u2").tobytes() for y in range(height)]

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"".join(rows)))
        + chunk(b"IEND", b"")
    )
    return path


def write_scene_folder(
    root: Path, classes: list[str], per_class: int, ext: str = ".png", nested: bool = False
) -> list[Path]:
    """`root/<class>/<class>NN<ext>` (or `root/Images/...` like UCMerced); returns the files."""
    class_root = root / "Images" if nested else root
    paths = []
    for index, name in enumerate(classes):
        for item in range(per_class):
            path = class_root / name / f"{name}{item:02d}{ext}"
            write_image(path, rgb_array(seed=100 * index + item))
            paths.append(path)
    return paths


def rsvqa_documents(
    n_images: int = 3, types: tuple[str, ...] = ("presence", "count", "area")
) -> dict[str, dict[str, Any]]:
    """RSVQA questions/answers/images documents: each image gets one question per type.

    The last image is inactive (another split's), with its questions and answers, as in the
    real release where inactive entries keep the ids dense.
    """
    images, questions, answers = [], [], []
    for img_id in range(n_images):
        active = img_id < n_images - 1
        question_ids = []
        for qtype in types:
            qid = len(questions)
            question_ids.append(qid)
            question = f"{qtype} question {qid}?"
            questions.append(
                {"id": qid, "img_id": img_id, "type": qtype, "question": question,
                 "answers_ids": [qid], "active": active}
            )
            answers.append(
                {"id": qid, "question_id": qid, "answer": f"answer {qid}", "active": active}
            )
        images.append({"id": img_id, "active": active, "questions_ids": question_ids})
    return {"questions": {"questions": questions}, "answers": {"answers": answers},
            "images": {"images": images}}


def write_rsvqa(
    root: Path,
    documents: dict[str, dict[str, Any]],
    prefix: str = "SYN",
    split: str = "train",
    image_dir: str = "images",
    image_ext: str = ".png",
) -> dict[str, Path]:
    """Write the three JSON files and one image per image entry; returns the JSON paths."""
    paths = {}
    for kind, document in documents.items():
        paths[kind] = root / f"{prefix}_split_{split}_{kind}.json"
        paths[kind].parent.mkdir(parents=True, exist_ok=True)
        paths[kind].write_text(json.dumps(document, indent=1), encoding="utf-8")
    for img_id in range(len(documents["images"]["images"])):  # ids as written, before mutation
        write_image(root / image_dir / f"{img_id}{image_ext}", rgb_array(img_id))
    return paths


def instruct_records(n: int = 2) -> list[dict[str, Any]]:
    """LLaVA/GeoChat records: record i has i + 1 (human, gpt) turns and image images/i.png."""
    records = []
    for index in range(n):
        turns = []
        for turn in range(index + 1):
            prefix = "<image>\n" if turn == 0 else ""
            turns.append({"from": "human", "value": f"{prefix}Question {index}.{turn}?"})
            turns.append({"from": "gpt", "value": f"Answer {index}.{turn}"})
        records.append({"id": f"rec{index}", "image": f"images/{index}.png",
                        "conversations": turns})
    return records


def write_instruct(root: Path, records: list[dict[str, Any]], with_images: bool = True) -> Path:
    """`root/instruct.json` plus the images the records name (under root)."""
    path = root / "instruct.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records), encoding="utf-8")
    if with_images:
        for index, record in enumerate(records):
            if isinstance(record, dict) and isinstance(record.get("image"), str):
                write_image(root / record["image"], rgb_array(index))
    return path


def bench_lines(n: int = 3) -> list[dict[str, Any]]:
    return [
        {"question_id": index, "image": f"images/{index}.png", "text": f"<image>\nQ{index}?",
         "ground_truth": f"A{index}"}
        for index in range(n)
    ]


def write_bench(root: Path, lines: list[Any], with_images: bool = True) -> Path:
    """`root/bench.jsonl`, one JSON value per line (str items are written verbatim)."""
    path = root / "bench.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines)
    path.write_text(text + "\n", encoding="utf-8")
    if with_images:
        for index in range(len(lines)):
            write_image(root / "images" / f"{index}.png", rgb_array(index))
    return path


def bomb_values(
    band: int, rows: np.ndarray, cols: np.ndarray, height: int, width: int
) -> np.ndarray:
    """The hostile TIFFs' pixel values at (rows, cols) of a height x width image: the band's
    index, + 10 in the lower half, + 100 in the right half."""
    lower, right = rows[:, None] >= height // 2, cols[None, :] >= width // 2
    return band + 10 * lower + 100 * right  # (rows, cols)


def write_bomb_tiff(
    path: Path,
    bands: int,
    height: int,
    width: int,
    dtype: str,
    layout: str = "pages",
    compression: str | None = "zlib",
) -> Path:
    """A multispectral TIFF far larger decoded than on disk (`bomb_values`, in four blocks).

    layout: "pages" (one page per band, tifffile's default for (C, H, W)), "planar" (one page,
    one sample plane per band) or "interleaved" ((H, W, C)). Compressed strips are compressed
    once per distinct content and written from an iterator, so a 5 GB image takes well under a
    second and a few MB; uncompressed images are written empty (a sparse file of zeros).
    """
    kind = np.dtype(dtype)
    shape = (height, width, bands) if layout == "interleaved" else (bands, height, width)
    planar = {"pages": None, "planar": "separate", "interleaved": "contig"}[layout]
    options: dict[str, Any] = {
        "shape": shape, "dtype": kind, "photometric": "minisblack", "planarconfig": planar,
        "metadata": None,
    }
    if compression is None:
        import tifffile

        tifffile.imwrite(path, **options)
        return path
    samples = bands if layout == "interleaved" else 1
    per_strip = max(1, 262144 // (width * samples * kind.itemsize))
    cols, middle = np.arange(width), height // 2
    cache: dict[tuple[int, int, int], bytes] = {}

    def strip(band: int, top: int) -> bytes:
        rows = np.arange(top, min(top + per_strip, height))
        key = (band, rows.size, int(np.clip(middle - top, 0, rows.size)))
        if key not in cache:
            if layout == "interleaved":
                block = np.stack(
                    [bomb_values(b, rows, cols, height, width) for b in range(bands)], axis=-1
                ).astype(kind)  # (rows, W, C)
            else:
                block = bomb_values(band, rows, cols, height, width).astype(kind)  # (rows, W)
            cache[key] = zlib.compress(block.tobytes(), 6)
        return cache[key]

    def strips():
        for band in range(1 if layout == "interleaved" else bands):
            for top in range(0, height, per_strip):
                yield strip(band, top)

    import tifffile

    tifffile.imwrite(path, strips(), compression=compression, rowsperstrip=per_strip, **options)
    return path
