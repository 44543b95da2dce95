"""Training chips from a georeferenced raster and labels (`geostrata data chips`, docs/geo.md).

Labels are polygons (any vector format GDAL reads, through pyogrio) with a class field, or a
class raster. Vector labels are reprojected to the raster's CRS and rasterised window by window
(pixel centres; where polygons overlap the later one wins); a class raster is warped onto the
raster's grid (nearest neighbour). A chip is kept when one class covers at least `min_purity`
of its pixels and none of its pixels is nodata. Chips are GeoTIFFs with every band, the sample
type and the georeference of the source, one folder per class: the layout `SceneFolderDataset`
reads, with `train.txt` / `test.txt` split files and a GeoJSON index of the footprints. The
folder is written whole or not at all (`staged_dir`).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geostrata.atomic import staged_dir
from geostrata.data.raster import (
    aligned,
    bounds_in,
    bounds_text,
    feature_collection,
    footprint,
    invalid_pixels,
    open_raster,
    overlaps,
    raster_env,
    require_crs,
)
from geostrata.errors import AnnotationError, ConfigError

INDEX_NAME = "chips.geojson"
SPLIT_FILES = {"train": "train.txt", "test": "test.txt"}
UNLABELLED = -1  # label code of pixels no polygon / class value covers
UNSAFE_NAME = re.compile(r"[\x00-\x1f/\\:*?\"<>|]+")  # not allowed in a folder or file name


@dataclass(frozen=True)
class ChipSettings:
    size: int  # chip side in pixels
    field: str | None = None  # the vector labels' class attribute (None for a class raster)
    min_purity: float = 0.8  # fraction of the chip's pixels its class must cover
    stride: int | None = None  # pixels between chip origins (None: size, chips do not overlap)
    split: float = 0.8  # fraction of each class's chips listed in train.txt
    seed: int = 0  # the split's shuffle
    layer: str | None = None  # vector layer (None: the first)
    names: dict[int, str] = dataclasses.field(
        default_factory=dict
    )  # class raster value -> class name

    def __post_init__(self) -> None:
        if type(self.size) is not int or self.size < 1:
            raise ConfigError(f"chip size must be an integer >= 1, got {self.size!r}")
        if self.stride is not None and (type(self.stride) is not int or self.stride < 1):
            raise ConfigError(f"chip stride must be an integer >= 1, got {self.stride!r}")
        if not 0.0 < self.min_purity <= 1.0:
            raise ConfigError(f"min purity must be in (0, 1], got {self.min_purity!r}")
        if not 0.0 < self.split <= 1.0:
            raise ConfigError(f"split must be in (0, 1] (train fraction), got {self.split!r}")


@dataclass
class ChipSummary:
    out: Path
    counts: dict[str, dict[str, int]]  # class -> {"train": n, "test": m}
    windows: int  # chip windows looked at
    skipped: dict[str, int]  # "impure" / "nodata" -> windows not kept

    @property
    def total(self) -> int:
        return sum(sum(by_split.values()) for by_split in self.counts.values())


@dataclass
class Chip:
    row: int
    col: int
    name: str  # class
    purity: float
    path: str = ""  # relative to the data set root, once written
    split: str = ""


# ---- labels ------------------------------------------------------------------------------------
class VectorLabels:
    """Polygons in the raster's CRS with their class codes, rasterised one window at a time."""

    def __init__(self, geometries: list[Any], codes: list[int], classes: list[str]) -> None:
        import shapely

        self.geometries, self.codes, self.classes = geometries, codes, classes
        self.tree = shapely.STRtree(geometries)

    def window_codes(self, transform: Any, window: Any) -> np.ndarray:
        """(H, W) int32 class codes of the window's pixel centres (UNLABELLED outside);
        `transform` is the window's own (its top-left pixel at (0, 0))."""
        import shapely
        from rasterio.features import rasterize
        from rasterio.transform import array_bounds

        shape = (int(window.height), int(window.width))
        hits = sorted(self.tree.query(shapely.box(*array_bounds(*shape, transform))))
        if not hits:
            return np.full(shape, UNLABELLED, dtype=np.int32)
        return rasterize(
            ((self.geometries[i], self.codes[i]) for i in hits),
            out_shape=shape,
            transform=transform,
            fill=UNLABELLED,
            dtype="int32",
        )


class RasterLabels:
    """A class raster on the scene's grid; codes are its values, names from `names` or the
    value itself."""

    def __init__(self, reader: Any, unlabelled: float | None, names: dict[int, str]) -> None:
        self.reader, self.unlabelled, self.names = reader, unlabelled, names
        self.classes: dict[int, str] = {}

    def window_codes(self, transform: Any, window: Any) -> np.ndarray:
        values = self.reader.read(1, window=window)  # (H, W)
        codes = values.astype(np.int64)
        if self.unlabelled is not None:
            codes[values == self.unlabelled] = UNLABELLED
        return codes

    def name(self, code: int) -> str:
        return self.classes.setdefault(code, self.names.get(code, str(code)))


def read_vector_labels(path: Path, scene: Any, settings: ChipSettings) -> VectorLabels:
    """The polygons of `path` that reach the raster, in its CRS, coded by sorted class name."""
    import pyogrio
    import shapely
    from rasterio.warp import transform_geom

    info = _vector_info(path, settings.layer)
    fields = [str(f) for f in info["fields"]]
    if settings.field not in fields:
        raise AnnotationError(
            f"{path}: no field {settings.field!r}; its fields are: {', '.join(fields) or 'none'}"
        )
    if not info.get("crs"):
        raise AnnotationError(f"{path}: the labels have no coordinate reference system (CRS)")
    crs = info["crs"]
    reach = bounds_in(scene, crs)  # the raster's extent in the labels' CRS
    _, _, wkb, values = pyogrio.raw.read(
        path, layer=settings.layer, columns=[settings.field], bbox=reach
    )
    labelled = [
        (g, str(v).strip())
        for g, v in zip(shapely.from_wkb(wkb), values[0], strict=True)
        if g is not None and not g.is_empty and v is not None and str(v).strip()
    ]
    if not labelled:
        total = info.get("total_bounds")
        extent = bounds_text(total) if total is not None else "unknown"
        raise AnnotationError(
            f"{path} and {scene.name} do not overlap: no labelled geometry within the raster's "
            f"extent {bounds_text(reach)} ({crs}); the labels cover {extent}"
        )
    geometries = [g for g, _ in labelled]
    if str(crs) != str(scene.crs):
        mapped = transform_geom(crs, scene.crs, [shapely.geometry.mapping(g) for g in geometries])
        geometries = [shapely.geometry.shape(g) for g in mapped]
    classes = sorted({name for _, name in labelled})
    code = {name: i for i, name in enumerate(classes)}
    return VectorLabels(geometries, [code[name] for _, name in labelled], classes)


def _vector_info(path: Path, layer: str | None) -> dict[str, Any]:
    import pyogrio
    from pyogrio.errors import DataLayerError, DataSourceError

    try:
        return pyogrio.read_info(path, layer=layer, force_total_bounds=True)
    except (DataSourceError, DataLayerError) as exc:
        raise AnnotationError(f"{path}: cannot read vector labels: {exc}") from exc


def is_vector(path: Path) -> bool:
    """Whether GDAL opens `path` as vector data (else it is taken as a class raster)."""
    import pyogrio
    from pyogrio.errors import DataSourceError

    try:
        return bool(pyogrio.list_layers(path).size)
    except DataSourceError:
        return False


@contextmanager
def open_labels(path: Path, scene: Any, settings: ChipSettings) -> Iterator[Any]:
    """VectorLabels or RasterLabels for `path`, checked against the raster."""
    if not path.is_file():
        raise AnnotationError(f"{path}: label file not found")
    if is_vector(path):
        if settings.field is None:
            fields = [str(f) for f in _vector_info(path, settings.layer)["fields"]]
            raise AnnotationError(
                f"{path}: vector labels need --field, the class attribute: one of "
                f"{', '.join(fields) or 'none'}"
            )
        yield read_vector_labels(path, scene, settings)
        return
    with open_raster(path, AnnotationError) as src:
        require_crs(src, AnnotationError)
        if not overlaps(bounds_in(src, scene.crs), scene.bounds):
            raise AnnotationError(
                f"{path} and {scene.name} do not overlap: the class raster covers "
                f"{bounds_text(bounds_in(src, scene.crs))}, the raster {bounds_text(scene.bounds)} "
                f"({scene.crs})"
            )
        unlabelled = src.nodata if src.nodata is not None else 0
    with aligned(path, scene, AnnotationError, nodata=unlabelled) as reader:
        yield RasterLabels(reader, unlabelled, settings.names)


# ---- chips -------------------------------------------------------------------------------------
def chip_windows(width: int, height: int, size: int, stride: int) -> Iterator[Any]:
    """Full-size windows only: a strip narrower than `size` at the edge is left out."""
    from rasterio.windows import Window

    for row in range(0, height - size + 1, stride):
        for col in range(0, width - size + 1, stride):
            yield Window(col, row, size, size)


def purest(codes: np.ndarray) -> tuple[int, float]:
    """The most frequent labelled code and the fraction of all pixels it covers."""
    labelled = codes[codes != UNLABELLED]
    if not labelled.size:
        return UNLABELLED, 0.0
    values, counts = np.unique(labelled, return_counts=True)
    best = int(np.argmax(counts))
    return int(values[best]), float(counts[best]) / codes.size


def make_chips(
    raster: str | Path,
    labels: str | Path,
    out: str | Path,
    settings: ChipSettings,
    show_progress: bool = True,
) -> ChipSummary:
    """Cut, label and write the chips of `raster`; see the module docstring."""
    raster, labels, out = Path(raster), Path(labels), Path(out)
    with raster_env(), open_raster(raster) as src:
        require_crs(src)
        with open_labels(labels, src, settings) as source, staged_dir(out) as tmp:
            chips, windows, skipped, best = _cut(src, source, tmp, settings, show_progress)
            if not chips:
                raise AnnotationError(
                    f"{raster}: no {settings.size}x{settings.size} chip reaches min purity "
                    f"{settings.min_purity} (best {best:.2f} of {windows} windows; "
                    f"{skipped['nodata']} with nodata): lower --min-purity or --size"
                )
            _assign_splits(chips, settings.split, settings.seed)
            _write_index(tmp, chips, src, settings.size)
    counts: dict[str, dict[str, int]] = {}
    for chip in chips:
        counts.setdefault(chip.name, {"train": 0, "test": 0})[chip.split] += 1
    return ChipSummary(out, dict(sorted(counts.items())), windows, dict(skipped))


def _cut(
    src: Any, source: Any, tmp: Path, settings: ChipSettings, show_progress: bool
) -> tuple[list[Chip], int, Counter[str], float]:
    """Look at every window; write the pure, fully valid ones under tmp/<class>/."""
    from rich.progress import Progress

    size = settings.size
    windows = list(chip_windows(src.width, src.height, size, settings.stride or size))
    chips: list[Chip] = []
    skipped: Counter[str] = Counter({"impure": 0, "nodata": 0})
    best, folders = 0.0, _FolderNames()
    indexes = list(range(1, src.count + 1))
    with Progress(disable=not show_progress) as progress:
        task = progress.add_task("Cutting chips", total=len(windows))
        for window in windows:
            progress.advance(task)
            code, purity = purest(source.window_codes(src.window_transform(window), window))
            best = max(best, purity)
            if purity < settings.min_purity:
                skipped["impure"] += 1
                continue
            data = src.read(window=window)  # (C, size, size)
            if invalid_pixels(src, data, indexes, window=window).any():
                skipped["nodata"] += 1
                continue
            name = _class_name(source, code)
            chip = Chip(int(window.row_off), int(window.col_off), name, purity)
            chip.path = f"{folders(name)}/{_stem(src.name)}_r{chip.row}_c{chip.col}.tif"
            write_chip(tmp / chip.path, src, window, data)
            chips.append(chip)
    return chips, len(windows), skipped, best


def _class_name(source: Any, code: int) -> str:
    return source.classes[code] if isinstance(source, VectorLabels) else source.name(code)


class _FolderNames:
    """Class name -> folder name: unsafe characters become "_", and two classes that would
    share a folder are refused."""

    def __init__(self) -> None:
        self.by_class: dict[str, str] = {}

    def __call__(self, name: str) -> str:
        if name in self.by_class:
            return self.by_class[name]
        folder = UNSAFE_NAME.sub("_", name).strip().lstrip(".") or "_"
        other = next((c for c, f in self.by_class.items() if f == folder), None)
        if other is not None:
            raise AnnotationError(
                f"classes {other!r} and {name!r} would share the folder {folder!r}; rename one"
            )
        self.by_class[name] = folder
        return folder


def _stem(path: str) -> str:
    return UNSAFE_NAME.sub("_", Path(path).stem).replace(" ", "_")


def write_chip(path: Path, src: Any, window: Any, data: np.ndarray) -> None:
    """A GeoTIFF of every band of `window`: the source's sample type, CRS, nodata and band
    descriptions; deflate (with the integer predictor for integer samples)."""
    import rasterio

    profile = {
        "driver": "GTiff",
        "width": int(window.width),
        "height": int(window.height),
        "count": src.count,
        "dtype": data.dtype.name,
        "crs": src.crs,
        "transform": src.window_transform(window),
        "nodata": src.nodata,
        "compress": "deflate",
    }
    if np.issubdtype(data.dtype, np.integer):
        profile["predictor"] = 2
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        for band, description in enumerate(src.descriptions, start=1):
            if description:
                dst.set_band_description(band, description)


def _assign_splits(chips: list[Chip], train_fraction: float, seed: int) -> None:
    """Per class, a seeded shuffle: the first round(n * fraction) (at least one) train."""
    rng = np.random.default_rng(seed)
    by_class: dict[str, list[Chip]] = {}
    for chip in chips:
        by_class.setdefault(chip.name, []).append(chip)
    for name in sorted(by_class):
        members = by_class[name]
        n_train = max(1, round(len(members) * train_fraction))
        for rank, i in enumerate(rng.permutation(len(members))):
            members[i].split = "train" if rank < n_train else "test"


def _write_index(root: Path, chips: list[Chip], src: Any, size: int) -> None:
    """The split files (one class/file per line) and the GeoJSON index of the chips."""
    from rasterio.windows import Window

    for split, name in SPLIT_FILES.items():
        lines = [chip.path for chip in chips if chip.split == split]
        (root / name).write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    features = [
        {
            "type": "Feature",
            "geometry": footprint(src.transform, Window(c.col, c.row, size, size)),
            "properties": {
                "path": c.path,
                "class": c.name,
                "purity": round(c.purity, 4),
                "split": c.split,
                "row": c.row,
                "col": c.col,
            },
        }
        for c in chips
    ]
    index = feature_collection(features, src.crs, raster=str(Path(src.name).absolute()))
    (root / INDEX_NAME).write_text(json.dumps(index, ensure_ascii=False), encoding="utf-8")
