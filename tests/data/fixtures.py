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


# ------------------------------------------------------------- captioning / grounding / region
SPLIT_CYCLE = ("train", "val", "test")


def karpathy_document(n_images: int = 3, sentences: int = 2) -> dict[str, Any]:
    """A Karpathy caption file: image i is `{i}.png`, split train/val/test in turn, with
    `sentences` captions "image i caption k"."""
    images = [
        {
            "filename": f"{index}.png",
            "imgid": index,
            "split": SPLIT_CYCLE[index % 3],
            "sentences": [
                {"raw": f"image {index} caption {k} .", "tokens": ["image"], "imgid": index,
                 "sentid": index * sentences + k}
                for k in range(sentences)
            ],
        }
        for index in range(n_images)
    ]
    return {"images": images, "dataset": "rsicd"}


def write_karpathy(
    root: Path, document: Any, name: str = "dataset_rsicd.json", image_dir: str = "RSICD_images"
) -> Path:
    """`root/name` (str documents are written verbatim) plus one image per entry's filename."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / name
    path.write_text(document if isinstance(document, str) else json.dumps(document, indent=1),
                    encoding="utf-8")
    images = document.get("images", []) if isinstance(document, dict) else []
    for index, entry in enumerate(images):
        if isinstance(entry, dict) and isinstance(entry.get("filename"), str):
            write_image(root / image_dir / entry["filename"], rgb_array(index))
    return path


def voc_xml(filename: str, objects: list[dict[str, Any]], size: tuple[int, int] | None) -> str:
    """A DIOR-RSVG annotation: objects {"name", "box": (x1, y1, x2, y2) or None, "text"}."""
    parts = ["<?xml version='1.0' encoding='utf-8'?>", "<annotation>",
             f"  <filename>{filename}</filename>"]
    if size is not None:
        parts.append(f"  <size><width>{size[0]}</width><height>{size[1]}</height>"
                     "<depth>3</depth></size>")
    for obj in objects:
        parts.append(f"  <object>\n    <name>{obj['name']}</name>\n    <pose>Unspecified</pose>")
        if obj.get("box") is not None:
            x1, y1, x2, y2 = obj["box"]
            parts.append(f"    <bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax>"
                         f"<ymax>{y2}</ymax></bndbox>")
        if obj.get("text") is not None:
            parts.append(f"    <description>{obj['text']}</description>")
        parts.append("  </object>")
    parts.append("</annotation>")
    return "\n".join(parts) + "\n"


def rsvg_files() -> dict[str, dict[str, Any]]:
    """Three annotation files, 5 objects in walk order 0-4; 00002 states no <size> (its image is
    40 x 20, so its box comes from the image header)."""
    return {
        "00001": {"size": (200, 100), "objects": [
            {"name": "ship", "box": (20, 10, 60, 50), "text": "the ship on the left"},
            {"name": "ship", "box": (100, 50, 200, 100), "text": "the ship at the bottom right"},
        ]},
        "00002": {"size": None, "objects": [
            {"name": "vehicle", "box": (0, 0, 20, 10), "text": "a small car"},
        ]},
        "00010": {"size": (100, 100), "objects": [
            {"name": "dam", "box": (0, 0, 100, 100), "text": "the large dam"},
            {"name": "windmill", "box": (5, 5, 15, 25), "text": "a windmill"},
        ]},
    }  # fmt: skip


RSVG_IMAGE_SIZES = {"00001": (200, 100), "00002": (40, 20), "00010": (100, 100)}


def write_dior_rsvg(
    root: Path,
    files: dict[str, dict[str, Any]],
    splits: dict[str, list[Any]],
    with_images: bool = True,
) -> Path:
    """`root/Annotations/<stem>.xml`, `root/JPEGImages/<stem>.jpg`, `root/<split>.txt`."""
    for number, (stem, spec) in enumerate(files.items()):
        path = root / "Annotations" / f"{stem}.xml"
        path.parent.mkdir(parents=True, exist_ok=True)
        text = spec if isinstance(spec, str) else voc_xml(f"{stem}.jpg", spec["objects"],
                                                          spec["size"])
        path.write_text(text, encoding="utf-8")
        if with_images:
            width, height = RSVG_IMAGE_SIZES.get(stem, (16, 16))
            write_image(root / "JPEGImages" / f"{stem}.jpg", rgb_array(number, height, width))
    for split, lines in splits.items():
        (root / f"{split}.txt").write_text("".join(f"{line}\n" for line in lines), "utf-8")
    return root


def vrsbench_documents() -> dict[str, list[dict[str, Any]]]:
    """The three VRSBench EVAL lists over images P0000.png and P0001.png."""
    cap = [
        {"image_id": f"P000{i}.png", "ground_truth": f"A detailed caption of image {i}.",
         "question": "Describe the image in detail", "dataset": "RSBench", "question_id": i,
         "type": "caption"}
        for i in range(2)
    ]
    ref = [
        {"image_id": "P0000.png", "question": "the red car near the road",
         "ground_truth": "{<25><40><33><60>}", "dataset": "RSBench", "question_id": 0,
         "type": "ref", "unique": True, "obj_corner": [0.25, 0.4, 0.33, 0.4, 0.33, 0.6, 0.25, 0.6],
         "obj_cls": "vehicle", "obj_ids": [0], "size_group": "small"},
        {"image_id": "P0001.png", "question": "the large ship", "ground_truth": [10, 20, 50, 80],
         "dataset": "RSBench", "question_id": 1, "type": "ref", "unique": False,
         "obj_cls": "ship", "obj_ids": [0], "size_group": "large"},
    ]
    vqa = [
        {"image_id": "P0000.png", "question": "Is there a car?", "ground_truth": "Yes",
         "dataset": "RSBench", "question_id": 0, "type": "object existence"},
        {"image_id": "P0001.png", "question": "What type of scene is this?",
         "ground_truth": "harbor", "dataset": "RSBench", "question_id": 1, "type": "scene type"},
    ]
    return {"caption": cap, "ground": ref, "vqa": vqa}  # fmt: skip


VRSBENCH_FILES = {
    "caption": "VRSBench_EVAL_Cap.json",
    "ground": "VRSBench_EVAL_referring.json",
    "vqa": "VRSBench_EVAL_vqa.json",
}


def write_vrsbench(root: Path, documents: dict[str, Any], with_images: bool = True) -> Path:
    """The EVAL files named by task (str documents verbatim) and `Images_val/P000{i}.png`."""
    root.mkdir(parents=True, exist_ok=True)
    for task, document in documents.items():
        text = document if isinstance(document, str) else json.dumps(document, indent=1)
        (root / VRSBENCH_FILES[task]).write_text(text, encoding="utf-8")
    if with_images:
        for index in range(2):
            write_image(root / "Images_val" / f"P000{index}.png", rgb_array(index))
    return root


def geochat_task_lines() -> list[dict[str, Any]]:
    """GeoChat-Bench referring / region-captioning lines over images/train_0.png (50 x 100)."""
    corners = [[10.0, 20.0], [30.0, 20.0], [30.0, 60.0], [10.0, 60.0]]
    return [
        {"question_id": "fast_1", "image_id": "train_0", "question": "2 airplanes at the left",
         "ground_truth": [corners, [[0.0, 0.0], [50.0, 0.0], [50.0, 100.0], [0.0, 100.0]]],
         "type": "ref", "dataset": "FAST", "obj_ids": [1, 2], "size_group": "small"},
        {"question_id": "sior_2", "image_id": "train_0", "question": "{<10><20><30><40>|<45>}",
         "ground_truth": "a white storage tank", "type": "region", "dataset": "SIOR",
         "obj_ids": [3], "size_group": "medium"},
    ]  # fmt: skip


def write_geochat_tasks(root: Path, lines: list[Any], with_images: bool = True) -> Path:
    """`root/referring.jsonl` (str lines verbatim) and the 50 x 100 image `train_0.png`."""
    path = root / "referring.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines)
    path.write_text(text + "\n", encoding="utf-8")
    if with_images:
        write_image(root / "images" / "train_0.png", rgb_array(0, height=100, width=50))
    return path
