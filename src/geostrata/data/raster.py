"""Georeferenced rasters read window by window: tiles, valid and cloud fractions, footprints,
decimated previews and GeoJSON, all with rasterio.

Nothing here holds a whole scene: tiles are read as windows, the preview is read decimated
(`out_shape`), and GDAL's block cache is bounded (`raster_env`), so memory depends on the tile
and batch sizes, not on the scene. Geometry stays in the raster's CRS unless asked otherwise;
GeoJSON written here carries that CRS in a "crs" member (docs/geo.md).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.enums import MaskFlags, Resampling
from rasterio.errors import RasterioError
from rasterio.transform import Affine, from_origin
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds, transform_geom
from rasterio.windows import Window

from geostrata.atomic import temp_path
from geostrata.data.images import BandPolicy, rgb_indices, stretch_to_uint8
from geostrata.errors import (
    ConfigError,
    DatasetNotFoundError,
    GeoStrataError,
    ImageError,
    InputError,
)

GDAL_CACHE_BYTES = 256 * 2**20  # GDAL's block cache; its default is 5% of the machine's RAM
WGS84 = "EPSG:4326"
CRS84 = "urn:ogc:def:crs:OGC:1.3:CRS84"  # lon/lat WGS84, RFC 7946's only CRS


@dataclass(frozen=True)
class Tile:
    """One window's pixels: (H, W, k) of the chosen bands, the fraction of valid pixels and
    the fraction masked by the cloud mask (0 without one)."""

    window: Window
    pixels: np.ndarray  # (H, W, k), the raster's sample type
    valid: float
    cloud: float


@contextmanager
def raster_env() -> Iterator[None]:
    """GDAL settings for reading scenes of any size: a bounded block cache."""
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES):
        yield


@contextmanager
def open_raster(path: str | Path, error: type[GeoStrataError] = ImageError) -> Iterator[Any]:
    """A rasterio dataset of `path`, closed after the block; unreadable -> `error` naming it."""
    path = Path(path)
    if not path.is_file():
        raise DatasetNotFoundError(f"{path}: raster file not found")
    try:
        src = rasterio.open(path)
    except RasterioError as exc:
        raise error(f"{path}: not a raster GDAL can read: {exc}") from exc
    with src:
        yield src


def require_crs(src: Any, error: type[GeoStrataError] = ImageError) -> None:
    """A raster without a CRS (or with the identity transform) has no place on the ground."""
    if src.crs is None:
        raise error(
            f"{src.name}: no coordinate reference system (CRS); georeference it first "
            "(e.g. gdal_edit.py -a_srs EPSG:32633 FILE)"
        )
    if src.transform == Affine.identity():
        raise error(f"{src.name}: no geotransform (pixel = map coordinates); georeference it")


def band_indexes(src: Any, bands: BandPolicy | None) -> tuple[int, int, int]:
    """rasterio's 1-based indexes of the bands that become R, G, B, by the band policy."""
    if bands is not None and bands.rgb is not None and max(bands.rgb) >= src.count:
        raise ImageError(
            f"{src.name}: asks for band {max(bands.rgb) + 1} (numbered from 1), but the raster "
            f"has {src.count} band(s)"
        )
    return tuple(i + 1 for i in rgb_indices(src.count, bands, src.name))  # type: ignore[return-value]


# ---- tiling ------------------------------------------------------------------------------------
def tile_windows(width: int, height: int, size: int, overlap: int = 0) -> list[Window]:
    """Windows of `size` x `size` every `size - overlap` pixels, row by row, covering the whole
    raster: the last row and column are moved back to end at the edge (a little more overlap
    there) so every tile has the full size; a raster smaller than `size` is one window."""
    if size < 1 or not 0 <= overlap < size:
        raise ValueError(f"tile size {size} and overlap {overlap}: need 0 <= overlap < size")
    step = size - overlap
    return [
        Window(col, row, min(size, width), min(size, height))
        for row in _starts(height, size, step)
        for col in _starts(width, size, step)
    ]


def _starts(length: int, size: int, step: int) -> list[int]:
    if length <= size:
        return [0]
    return [*range(0, length - size, step), length - size]


def read_tile(src: Any, window: Window, indexes: Sequence[int], clouds: Any = None) -> Tile:
    """The chosen bands of one window; a pixel is invalid where every chosen band is masked
    (the raster's nodata value, its mask band or alpha)."""
    data = src.read(list(indexes), window=window)  # (k, H, W)
    invalid = invalid_pixels(src, data, indexes, window=window)  # (H, W)
    cloud = cloud_fraction(clouds, window) if clouds is not None else 0.0
    pixels = np.moveaxis(data, 0, -1)  # (H, W, k)
    return Tile(window, pixels, 1.0 - np.count_nonzero(invalid) / invalid.size, cloud)


def invalid_pixels(src: Any, data: np.ndarray, indexes: Sequence[int], **where: Any) -> np.ndarray:
    """(H, W) bool: pixels masked in every band of `indexes`; `data` (k, H, W) holds those
    bands as read with `where` (window= or out_shape=).

    A nodata value is compared in place (GDAL's mask band would read every band again); mask
    bands and alpha are read the same way as the data; a band GDAL calls all-valid has no
    invalid pixel."""
    flags = [src.mask_flag_enums[i - 1] for i in indexes]
    if any(MaskFlags.all_valid in f for f in flags):
        return np.zeros(data.shape[1:], dtype=bool)
    if all(f == [MaskFlags.nodata] for f in flags):
        invalid = None
        for band, index in zip(data, indexes, strict=True):
            nodata = src.nodatavals[index - 1]
            here = np.isnan(band) if math.isnan(nodata) else band == nodata  # (H, W)
            invalid = here if invalid is None else np.logical_and(invalid, here, out=invalid)
        return invalid
    return (src.read_masks(list(indexes), **where) == 0).all(axis=0)


# ---- cloud masks -------------------------------------------------------------------------------
@dataclass(frozen=True)
class CloudMask:
    """A mask raster on the scene's grid; `values` are the cloud codes (empty: any nonzero)."""

    reader: Any  # rasterio dataset or WarpedVRT aligned with the scene
    values: tuple[int, ...] = ()


@contextmanager
def aligned(
    path: str | Path, scene: Any, error: type[GeoStrataError] = ImageError, nodata: float = 0
) -> Iterator[Any]:
    """The single-band raster `path` on `scene`'s grid: as is when the grids match, else warped
    by GDAL (nearest neighbour) window by window as it is read; outside its extent: `nodata`."""
    with open_raster(path, error) as src:
        require_crs(src, error)
        if (src.crs, src.transform, src.shape) == (scene.crs, scene.transform, scene.shape):
            yield src
            return
        with WarpedVRT(
            src,
            crs=scene.crs,
            transform=scene.transform,
            width=scene.width,
            height=scene.height,
            resampling=Resampling.nearest,
            nodata=nodata,
        ) as vrt:
            yield vrt


@contextmanager
def cloud_mask(path: str | Path, scene: Any, values: Sequence[int] = ()) -> Iterator[CloudMask]:
    """The mask raster `path` on `scene`'s grid (any CRS and resolution), cloud where its value
    is one of `values` (empty: nonzero)."""
    with aligned(path, scene) as reader:
        yield CloudMask(reader, tuple(values))


def cloud_fraction(mask: CloudMask, window: Window) -> float:
    codes = mask.reader.read(1, window=window)  # (H, W)
    cloudy = np.isin(codes, mask.values) if mask.values else codes != 0
    return float(cloudy.mean())


# ---- geometry ----------------------------------------------------------------------------------
def footprint(transform: Affine, window: Window) -> dict[str, Any]:
    """The window's outline as a GeoJSON Polygon in the raster's CRS (counter-clockwise for a
    north-up raster, as RFC 7946 asks; any affine transform, rotated ones too)."""
    c0, r0 = window.col_off, window.row_off
    c1, r1 = c0 + window.width, r0 + window.height
    t = transform
    ring = [
        [float(t.a * c + t.b * r + t.c), float(t.d * c + t.e * r + t.f)]
        for c, r in ((c0, r0), (c0, r1), (c1, r1), (c1, r0), (c0, r0))
    ]
    return {"type": "Polygon", "coordinates": [ring]}


def crs_member(crs: Any) -> dict[str, Any]:
    """The GeoJSON (2008) "crs" member: the EPSG URN when there is one, else the WKT."""
    epsg = crs.to_epsg()
    name = f"urn:ogc:def:crs:EPSG::{epsg}" if epsg else crs.to_wkt()
    return {"type": "name", "properties": {"name": name}}


def feature_collection(
    features: list[dict[str, Any]], crs: Any | None, **members: Any
) -> dict[str, Any]:
    """A FeatureCollection in `crs` (None: WGS84 lon/lat, named CRS84), plus foreign members."""
    named = crs_member(crs) if crs is not None else {"type": "name", "properties": {"name": CRS84}}
    return {"type": "FeatureCollection", "crs": named, **members, "features": features}


def to_wgs84(geometries: list[dict[str, Any]], crs: Any) -> list[dict[str, Any]]:
    """GeoJSON geometries from `crs` to WGS84 lon/lat (x = longitude)."""
    if not geometries:
        return []
    return [dict(g) for g in transform_geom(crs, WGS84, geometries)]


def bounds_in(src: Any, crs: Any) -> tuple[float, float, float, float]:
    """The raster's bounds as (left, bottom, right, top) in `crs` (densified edges)."""
    return tuple(transform_bounds(src.crs, crs, *src.bounds, densify_pts=21))  # type: ignore[return-value]


# ---- preview -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Preview:
    """The scene decimated to at most `max_side` pixels a side, as RGB, and its scale."""

    rgb: np.ndarray  # (h, w, 3) uint8; nodata black
    scale_x: float  # scene pixels per preview pixel
    scale_y: float


def read_preview(src: Any, indexes: Sequence[int], max_side: int) -> Preview:
    """A decimated read (GDAL picks overviews when the file has them), one stretch over the
    whole preview so tiles keep their relative brightness; memory is the preview only."""
    shrink = max(1.0, max(src.width, src.height) / max_side)
    height = max(1, math.ceil(src.height / shrink))
    width = max(1, math.ceil(src.width / shrink))
    where = {"out_shape": (len(indexes), height, width), "resampling": Resampling.nearest}
    data = src.read(list(indexes), **where)  # (3, h, w)
    invalid = invalid_pixels(src, data, indexes, **where)  # (h, w)
    values = np.moveaxis(data.astype(np.float32), 0, -1)  # (h, w, 3)
    values[invalid] = np.nan
    if src.dtypes[indexes[0] - 1] == "uint8":
        rgb = np.nan_to_num(values).astype(np.uint8)
    else:
        rgb = stretch_to_uint8(values)  # NaN (nodata) -> 0
    return Preview(rgb, src.width / width, src.height / height)


def overlaps(a: Sequence[float], b: Sequence[float]) -> bool:
    """Whether two (left, bottom, right, top) boxes in one CRS intersect."""
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def bounds_text(box: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:.1f}" for v in box) + ")"


# ---- stacking ----------------------------------------------------------------------------------
STACK_ROWS = 512  # output rows written at a time by `stack_bands`


def stack_bands(
    paths: Sequence[str | Path],
    out: str | Path,
    resolution: float | None = None,
    names: Sequence[str] | None = None,
    resampling: str = "bilinear",
    bounds: Sequence[float] | None = None,
) -> Path:
    """One GeoTIFF of every band of `paths`, in order, on one grid, for commands that take one
    raster (`map`, `data chips`): e.g. a Sentinel-2 product's B01..B12 files, 10, 20 and 60 m.

    The grid: the first file's CRS and extent (or `bounds`, (left, bottom, right, top) in that
    CRS, for a part of the scene) at `resolution` map units a pixel (None: the finest of the
    inputs); every band is warped onto it by GDAL (`resampling`, a rasterio Resampling
    name; any input CRS). The sample type is one that holds every input's; nodata is the
    inputs' when they all agree, else none. Band descriptions: `names`, else the inputs' own,
    else the file name (with ":k" for a multi-band file). Tiled, deflate with the integer
    predictor; written STACK_ROWS rows at a time (memory: that strip of every band) into a temp
    file renamed into place (`out` appears whole or not at all)."""
    if not paths:
        raise InputError("stack_bands needs at least one raster")
    if resolution is not None and not resolution > 0:
        raise ConfigError(f"stack resolution must be > 0 map units, got {resolution!r}")
    try:
        method = Resampling[resampling]
    except KeyError as exc:
        choices = ", ".join(r.name for r in Resampling)
        raise ConfigError(f"resampling {resampling!r}: expected one of {choices}") from exc
    out = Path(out)
    with raster_env(), _open_all(paths) as sources:
        for src in sources:
            require_crs(src)
        first = sources[0]
        res = resolution or min(min(abs(v) for v in src.res) for src in sources)
        left, bottom, right, top = first.bounds if bounds is None else bounds
        if not (left < right and bottom < top):
            raise ConfigError(f"stack bounds {bounds_text((left, bottom, right, top))}: empty")
        width = max(1, round((right - left) / res))
        height = max(1, round((top - bottom) / res))
        grid = {
            "crs": first.crs,
            "transform": from_origin(left, top, res, res),
            "width": width,
            "height": height,
        }
        descriptions = _stack_names(sources, names)
        dtype = np.result_type(*(d for src in sources for d in src.dtypes))
        nodatas = {v for src in sources for v in src.nodatavals}
        nodata = nodatas.pop() if len(nodatas) == 1 else None
        profile = {
            "driver": "GTiff",
            "count": len(descriptions),
            "dtype": dtype.name,
            "nodata": nodata,
            "tiled": True,
            "blockxsize": 256,
            "blockysize": 256,
            "compress": "deflate",
            "interleave": "band",  # reading 3 of 13 bands decodes those 3 only
            **grid,
        }
        if np.issubdtype(dtype, np.integer):
            profile["predictor"] = 2
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_path(out)
        try:
            with rasterio.open(tmp, "w", **profile) as dst:
                _write_stack(dst, sources, grid, method, dtype)
                for band, description in enumerate(descriptions, start=1):
                    dst.set_band_description(band, description)
            _fsync(tmp)
            os.replace(tmp, out)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    return out


@contextmanager
def _open_all(paths: Sequence[str | Path]) -> Iterator[list[Any]]:
    from contextlib import ExitStack

    with ExitStack() as stack:
        yield [stack.enter_context(open_raster(p)) for p in paths]


def _stack_names(sources: list[Any], names: Sequence[str] | None) -> list[str]:
    count = sum(src.count for src in sources)
    if names is not None:
        if len(names) != count:
            raise InputError(f"{len(names)} band names for {count} bands")
        return [str(n) for n in names]
    out = []
    for src in sources:
        stem = Path(src.name).stem
        for k, description in enumerate(src.descriptions, start=1):
            out.append(description or (stem if src.count == 1 else f"{stem}:{k}"))
    return out


def _write_stack(
    dst: Any, sources: list[Any], grid: dict[str, Any], method: Resampling, dtype: np.dtype
) -> None:
    """Every band of `sources` warped onto `grid`, a strip of STACK_ROWS rows at a time."""
    vrts = [
        WarpedVRT(src, resampling=method, **grid)
        if (src.crs, src.transform, src.shape)
        != (grid["crs"], grid["transform"], (grid["height"], grid["width"]))
        else src
        for src in sources
    ]
    try:
        for row in range(0, grid["height"], STACK_ROWS):
            window = Window(0, row, grid["width"], min(STACK_ROWS, grid["height"] - row))
            strip = np.concatenate([vrt.read(window=window).astype(dtype) for vrt in vrts])
            dst.write(strip, window=window)  # (C, h, W): each block compressed once
    finally:
        for vrt, src in zip(vrts, sources, strict=True):
            if vrt is not src:
                vrt.close()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
