"""Map a georeferenced scene: tile it, classify each tile, write the tiles as GeoJSON and an
overlay of the classes on a preview of the scene (`geostrata map`, docs/geo.md).

Tiles are read window by window (`geostrata.data.raster`) and classified in batches through
`geostrata.inference.classify`, the path `predict` takes for its class scores: each tile goes
through the processor's one image path (band policy, or every band for a multispectral model;
band statistics or stretch; letterbox), so a tile is seen as a chip of the same size cut from the
scene (`geostrata data chips`) would be in training.
Memory is one batch of tiles, the preview and a few hundred bytes of result per tile, whatever
the scene's size. Tiles mostly nodata or mostly under the cloud mask are skipped, not guessed.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from geostrata.atomic import write_atomic, write_text_atomic
from geostrata.data.images import BandPolicy
from geostrata.data.raster import (
    Preview,
    Tile,
    band_indexes,
    cloud_mask,
    feature_collection,
    footprint,
    open_raster,
    raster_env,
    read_preview,
    read_tile,
    require_crs,
    tile_windows,
    to_wgs84,
)
from geostrata.errors import ConfigError
from geostrata.inference import LoadedModel, SceneReading, classify

GEOJSON_NAME = "tiles.geojson"
OVERLAY_NAME = "overlay.png"
LAND_COVER_LEVEL = "region"  # the level whose top cue names a tile's dominant land cover
OVERLAY_ALPHA = 0.45


@dataclass(frozen=True)
class MapSettings:
    """How a scene is tiled and what is skipped. `bands`: which bands become R, G, B (0-based,
    the band policy; None: its default for the band count)."""

    tile: int = 256  # tile side in scene pixels
    overlap: int = 0  # pixels shared by neighbouring tiles
    batch_size: int = 16  # tiles classified at once
    bands: BandPolicy | None = None
    max_nodata: float = 0.5  # a tile with more nodata than this fraction is skipped
    cloud_mask: Path | None = None  # mask raster; any grid and CRS (warped to the scene's)
    cloud_values: tuple[int, ...] = ()  # its cloud codes; empty: any nonzero value
    max_cloud: float = 0.5  # a tile with more cloud than this fraction is skipped
    to_wgs84: bool = False  # write the tiles in WGS84 lon/lat instead of the scene's CRS
    preview_side: int = 1024  # the overlay's longer side in pixels
    top_classes: int = 5
    top_cues: int = 3

    def __post_init__(self) -> None:
        for name in ("tile", "batch_size", "preview_side", "top_classes", "top_cues"):
            if type(getattr(self, name)) is not int or getattr(self, name) < 1:
                raise ConfigError(
                    f"map {name} must be an integer >= 1, got {getattr(self, name)!r}"
                )
        if type(self.overlap) is not int or not 0 <= self.overlap < self.tile:
            raise ConfigError(f"map overlap must be in 0..{self.tile - 1}, got {self.overlap!r}")
        for name in ("max_nodata", "max_cloud"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"map {name} must be in 0..1, got {getattr(self, name)!r}")


@dataclass(frozen=True)
class TileResult:
    """What is kept of a classified tile: not its pixels."""

    window: Any  # rasterio Window
    valid: float
    cloud: float
    reading: SceneReading


@dataclass
class MapSummary:
    geojson: Path
    overlay: Path
    tiles: int  # windows in the scene
    classified: int
    skipped: dict[str, int] = field(default_factory=dict)  # reason ("nodata", "cloud") -> count
    class_counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def tiles_per_s(self) -> float:
        return self.tiles / self.seconds if self.seconds else 0.0


def check_scene(scene: str | Path, settings: MapSettings) -> tuple[int, ...]:
    """The scene's chosen bands (1-based), after the checks `map_scene` would fail on: the
    raster opens, has a CRS and the bands; the cloud mask opens and has a CRS. Cheap: callers
    run it before loading a model."""
    with raster_env(), open_raster(scene) as src:
        require_crs(src)
        indexes = band_indexes(src, settings.bands)
        if settings.cloud_mask is not None:
            with cloud_mask(settings.cloud_mask, src, settings.cloud_values):
                pass
    return indexes


def map_scene(
    loaded: LoadedModel,
    scene: str | Path,
    out: str | Path,
    classes: Sequence[str],
    settings: MapSettings = MapSettings(),
    show_progress: bool = True,
) -> MapSummary:
    """Classify every tile of `scene` into `classes`; write out/tiles.geojson and overlay.png."""
    if not classes:
        raise ConfigError("map needs the scene classes to score the tiles against")
    start, out = time.perf_counter(), Path(out)
    with raster_env(), open_raster(scene) as src:
        require_crs(src)
        indexes, rgb = scene_bands(src, loaded, settings)
        windows = tile_windows(src.width, src.height, settings.tile, settings.overlap)
        masking = (
            cloud_mask(settings.cloud_mask, src, settings.cloud_values)
            if settings.cloud_mask is not None
            else nullcontext(None)
        )
        with masking as clouds:
            results, skipped = _classify_tiles(
                loaded, src, windows, indexes, clouds, classes, settings, show_progress
            )
        preview = read_preview(src, rgb, settings.preview_side)
        crs, transform = src.crs, src.transform
    features = [tile_feature(i, r, transform, settings.top_cues) for i, r in enumerate(results)]
    if settings.to_wgs84:
        moved = to_wgs84([f["geometry"] for f in features], crs)
        features = [{**f, "geometry": g} for f, g in zip(features, moved, strict=True)]
    counts = Counter(r.reading.class_probs[0][0] for r in results)
    members = {
        "scene": str(Path(scene).absolute()),
        "model": str(Path(loaded.path).absolute()),
        "bands": list(indexes),
        "tile_size": settings.tile,
        "overlap": settings.overlap,
        "tiles_total": len(windows),
        "skipped": dict(skipped),
        "classes": list(classes),
    }
    collection = feature_collection(features, None if settings.to_wgs84 else crs, **members)
    geojson = write_text_atomic(out / GEOJSON_NAME, json.dumps(collection, ensure_ascii=False))
    overlay = draw_overlay(preview, results, list(classes), out / OVERLAY_NAME, Path(scene).name)
    seconds = time.perf_counter() - start
    return MapSummary(
        geojson, overlay, len(windows), len(results), dict(skipped), dict(counts), seconds
    )


def scene_bands(
    src: Any, loaded: LoadedModel, settings: MapSettings
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(the 1-based bands each tile gives the model, the R, G, B bands of the preview): a model
    taking `in_bands` != 3 gets every band (its image processor checks the count); an RGB model
    the bands of `settings.bands`, else of its own band policy."""
    images = loaded.processor.image_processor
    if images.in_bands == 3:
        rgb = band_indexes(src, settings.bands or images.bands.policy)
        return rgb, rgb
    preview = band_indexes(src, settings.bands or BandPolicy(rgb=images.bands.rgb))
    return tuple(range(1, src.count + 1)), preview


def _classify_tiles(
    loaded: LoadedModel,
    src: Any,
    windows: list[Any],
    indexes: Sequence[int],
    clouds: Any,
    classes: Sequence[str],
    settings: MapSettings,
    show_progress: bool,
) -> tuple[list[TileResult], Counter[str]]:
    """Read every window; skip by nodata / cloud; classify the rest a batch at a time."""
    from rich.progress import Progress

    results: list[TileResult] = []
    skipped: Counter[str] = Counter()
    pending: list[Tile] = []
    with Progress(disable=not show_progress) as progress:
        task = progress.add_task("Mapping tiles", total=len(windows))
        for number, window in enumerate(windows, start=1):
            tile = read_tile(src, window, indexes, clouds)
            reason = skip_reason(tile, settings)
            if reason:
                skipped[reason] += 1
            else:
                pending.append(tile)
            if pending and (len(pending) == settings.batch_size or number == len(windows)):
                results += _classify_batch(loaded, pending, classes, settings.top_classes)
                progress.advance(task, len(pending))
                pending = []
            if reason:
                progress.advance(task)
    return results, skipped


def skip_reason(tile: Tile, settings: MapSettings) -> str:
    """Why the tile is skipped ("nodata" or "cloud"), or "" when it is classified."""
    if 1.0 - tile.valid > settings.max_nodata:
        return "nodata"
    if tile.cloud > settings.max_cloud:
        return "cloud"
    return ""


def _classify_batch(
    loaded: LoadedModel, tiles: list[Tile], classes: Sequence[str], top: int
) -> list[TileResult]:
    readings = classify(loaded, [t.pixels for t in tiles], classes, top)
    return [TileResult(t.window, t.valid, t.cloud, r) for t, r in zip(tiles, readings, strict=True)]


# ---- outputs -----------------------------------------------------------------------------------
def tile_feature(index: int, result: TileResult, transform: Any, top_cues: int) -> dict[str, Any]:
    """One GeoJSON Feature: the tile's footprint, window, class, land cover and cues."""
    window, reading = result.window, result.reading
    name, confidence = reading.class_probs[0]
    cover = reading.cues.get(LAND_COVER_LEVEL, [])
    properties = {
        "tile": index,
        "col": int(window.col_off),
        "row": int(window.row_off),
        "width": int(window.width),
        "height": int(window.height),
        "class": name,
        "confidence": round(confidence, 4),
        "classes": [{"name": n, "prob": round(p, 4)} for n, p in reading.class_probs],
        "land_cover": cover[0].name if cover else None,
        "land_cover_score": round(cover[0].score, 4) if cover else None,
        "cues": {
            level: [
                {"id": c.id, "name": c.name, "score": round(c.score, 4)} for c in cues[:top_cues]
            ]
            for level, cues in reading.cues.items()
        },
        "valid_fraction": round(result.valid, 4),
        "cloud_fraction": round(result.cloud, 4),
    }
    return {"type": "Feature", "geometry": footprint(transform, window), "properties": properties}


def class_grid(preview: Preview, results: list[TileResult], classes: list[str]) -> np.ndarray:
    """(h, w) int: each preview pixel's class index (-1: no tile classified there); later tiles
    paint over earlier ones where they overlap."""
    grid = np.full(preview.rgb.shape[:2], -1, dtype=np.int32)
    index = {name: i for i, name in enumerate(classes)}
    for result in results:
        w = result.window
        r0, c0 = int(w.row_off / preview.scale_y), int(w.col_off / preview.scale_x)
        r1 = math.ceil((w.row_off + w.height) / preview.scale_y)
        c1 = math.ceil((w.col_off + w.width) / preview.scale_x)
        grid[r0:r1, c0:c1] = index[result.reading.class_probs[0][0]]
    return grid


def draw_overlay(
    preview: Preview, results: list[TileResult], classes: list[str], path: Path, title: str
) -> Path:
    """The preview with each classified tile tinted by its class, and a legend of the classes
    present (with tile counts); one colour per class of the model, the same in every map."""
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    base = colormaps["tab20"] if len(classes) <= 20 else colormaps["turbo"].resampled(len(classes))
    colours = ListedColormap([base(i) for i in range(len(classes))])
    grid = class_grid(preview, results, classes)
    height, width = grid.shape
    fig = Figure(figsize=(max(4.0, width / 100 + 2.5), max(3.0, height / 100)), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.imshow(preview.rgb, interpolation="nearest")
    ax.imshow(
        np.ma.masked_less(grid, 0),
        cmap=colours,
        vmin=-0.5,
        vmax=len(classes) - 0.5,
        alpha=OVERLAY_ALPHA,
        interpolation="nearest",
    )
    counts = Counter(r.reading.class_probs[0][0] for r in results)
    handles = [
        Patch(color=colours(i), label=f"{name} ({counts[name]})")
        for i, name in enumerate(classes)
        if counts[name]
    ]
    if handles:
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    ax.set_title(f"{title}: {len(results)} tiles classified", fontsize=9)
    ax.set_axis_off()
    return write_atomic(path, lambda f: fig.savefig(f, format="png", bbox_inches="tight"))
