"""Generated georeferenced data: small UTM scenes with nodata, label polygons in any CRS."""

from pathlib import Path

import numpy as np
import pyogrio
import rasterio
import shapely
from rasterio.transform import from_origin
from rasterio.warp import transform_geom
from rasterio.windows import Window

UTM = "EPSG:32633"
ORIGIN = (330000.0, 5822040.0)  # top-left corner (west, north), 10 m pixels
PIXEL = 10.0


def write_scene(
    path: Path,
    width: int = 300,
    height: int = 200,
    count: int = 4,
    nodata_cols: int = 100,
    crs: str | None = UTM,
    seed: int = 0,
) -> Path:
    """A uint16 scene (smooth gradients plus noise, like reflectance) whose first `nodata_cols`
    columns are nodata (0)."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:height, 0:width]
    bands = [
        (500 + 8 * rows + 5 * b * cols + rng.integers(0, 200, (height, width))).astype(np.uint16)
        for b in range(count)
    ]
    data = np.stack(bands)  # (C, H, W)
    data[:, :, :nodata_cols] = 0
    profile = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": count,
        "dtype": "uint16",
        "transform": from_origin(*ORIGIN, PIXEL, PIXEL),
        "nodata": 0,
        "tiled": True,
        "blockxsize": 128,
        "blockysize": 128,
        "compress": "deflate",
    }
    if crs is not None:
        profile["crs"] = crs
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


def utm_box(col0: float, row0: float, col1: float, row1: float) -> list[list[float]]:
    """A polygon ring in the scene's UTM coordinates from pixel columns / rows (CCW)."""
    x0, x1 = ORIGIN[0] + col0 * PIXEL, ORIGIN[0] + col1 * PIXEL
    y0, y1 = ORIGIN[1] - row0 * PIXEL, ORIGIN[1] - row1 * PIXEL
    return [[x0, y0], [x0, y1], [x1, y1], [x1, y0], [x0, y0]]


def write_labels(
    path: Path,
    polygons: list[tuple[list[list[float]], str]],
    crs: str | None = "EPSG:4326",
    field: str = "landuse",
    driver: str = "GPKG",
) -> Path:
    """Polygons given in UTM (ring, class) written in `crs` (reprojected; None: no CRS)."""
    rings = [{"type": "Polygon", "coordinates": [ring]} for ring, _ in polygons]
    if crs is not None and crs != UTM:
        rings = transform_geom(UTM, crs, rings)
    wkb = shapely.to_wkb([shapely.geometry.shape(g) for g in rings])
    names = np.array([name for _, name in polygons], dtype=object)
    ids = np.arange(len(polygons), dtype=np.int64)
    pyogrio.raw.write(
        path, wkb, [names, ids], [field, "id"], crs=crs, geometry_type="Polygon", driver=driver
    )
    return path


def write_sparse_scene(
    path: Path, side: int, blocks: list[tuple[int, int]], count: int = 4, block: int = 512
) -> Path:
    """A `side` x `side` uint16 scene that is nodata except the given (row, col) blocks: tiled,
    deflate, sparse (GDAL stores no unwritten block), written block by block, so a 20,000 px
    side takes well under a second and a few MB."""
    rng = np.random.default_rng(0)
    profile = {
        "driver": "GTiff",
        "width": side,
        "height": side,
        "count": count,
        "dtype": "uint16",
        "crs": UTM,
        "transform": from_origin(*ORIGIN, PIXEL, PIXEL),
        "nodata": 0,
        "tiled": True,
        "blockxsize": block,
        "blockysize": block,
        "compress": "deflate",
        "predictor": 2,
        "zlevel": 1,
        "sparse_ok": True,
        "bigtiff": "yes",
    }
    with rasterio.open(path, "w", **profile) as dst:
        rows, cols = np.mgrid[0:block, 0:block]
        for row, col in blocks:  # a gradient and a little noise: compresses, varies per band
            values = np.stack(
                [
                    500 + (b + 1) * (rows + cols) + rng.integers(0, 16, rows.shape)
                    for b in range(count)
                ]
            ).astype(np.uint16)  # (C, block, block)
            dst.write(values, window=Window(col * block, row * block, block, block))
    return path
