"""geostrata.data.raster: tiles cover the scene, validity follows nodata / masks, footprints and
GeoJSON keep the CRS, previews are decimated."""

import numpy as np
import pytest
import rasterio
import shapely
from rasterio.transform import from_origin
from rasterio.windows import Window

from geostrata.data.images import BandPolicy
from geostrata.data.raster import (
    band_indexes,
    cloud_mask,
    crs_member,
    feature_collection,
    footprint,
    open_raster,
    read_preview,
    read_tile,
    require_crs,
    tile_windows,
    to_wgs84,
)
from geostrata.errors import DatasetNotFoundError, ImageError
from tests.geo.fixtures import ORIGIN, PIXEL, UTM, write_scene


@pytest.mark.parametrize(
    ("width", "height", "size", "overlap"),
    [(300, 200, 64, 0), (300, 200, 64, 16), (64, 64, 64, 0), (50, 30, 64, 0), (129, 64, 64, 0)],
)
def test_tiles_cover_the_raster_at_full_size(width, height, size, overlap):
    windows = tile_windows(width, height, size, overlap)
    covered = np.zeros((height, width), dtype=int)
    for w in windows:
        assert (w.width, w.height) == (min(size, width), min(size, height))
        assert 0 <= w.col_off and w.col_off + w.width <= width
        assert 0 <= w.row_off and w.row_off + w.height <= height
        covered[w.row_off : w.row_off + w.height, w.col_off : w.col_off + w.width] += 1
    assert covered.min() >= 1
    cols = sorted({w.col_off for w in windows})
    steps = np.diff(cols)
    if len(steps) > 1:  # regular steps, the last one shorter (moved back to the edge)
        assert set(steps[:-1]) == {size - overlap} and steps[-1] <= size - overlap


def test_tile_overlap_must_be_smaller_than_the_tile():
    with pytest.raises(ValueError, match="overlap"):
        tile_windows(100, 100, 32, 32)


def test_valid_fraction_follows_the_nodata_value(scene):
    with open_raster(scene) as src:
        assert read_tile(src, Window(0, 0, 100, 50), (1, 2, 3)).valid == 0.0
        assert read_tile(src, Window(50, 0, 100, 50), (1, 2, 3)).valid == 0.5
        tile = read_tile(src, Window(150, 10, 64, 32), (3, 2, 1))
        assert tile.valid == 1.0 and tile.pixels.shape == (32, 64, 3)
        np.testing.assert_array_equal(
            tile.pixels[:, :, 0], src.read(3, window=Window(150, 10, 64, 32))
        )


def test_a_pixel_is_nodata_only_where_every_chosen_band_is(tmp_path):
    path = write_scene(tmp_path / "partial.tif", 64, 64, 3, nodata_cols=0)
    with rasterio.open(path, "r+") as dst:
        dst.write(np.zeros((64, 32), np.uint16), 1, window=Window(0, 0, 32, 64))  # band 1 only
    with open_raster(path) as src:
        assert read_tile(src, Window(0, 0, 64, 64), (1, 2, 3)).valid == 1.0
        assert read_tile(src, Window(0, 0, 64, 64), (1, 1, 1)).valid == 0.5


def test_float_nan_nodata_and_internal_masks(tmp_path):
    values = np.ones((1, 40, 40), np.float32)
    values[:, :10] = np.nan
    profile = {
        "driver": "GTiff",
        "width": 40,
        "height": 40,
        "count": 1,
        "dtype": "float32",
        "crs": UTM,
        "transform": from_origin(*ORIGIN, PIXEL, PIXEL),
    }
    with rasterio.open(tmp_path / "nan.tif", "w", nodata=float("nan"), **profile) as dst:
        dst.write(values)
    with rasterio.open(tmp_path / "mask.tif", "w", **profile) as dst:
        dst.write(np.ones((1, 40, 40), np.float32))
        mask = np.full((40, 40), 255, np.uint8)
        mask[30:] = 0
        dst.write_mask(mask)
    with open_raster(tmp_path / "nan.tif") as src:
        assert read_tile(src, Window(0, 0, 40, 40), (1, 1, 1)).valid == 0.75
    with open_raster(tmp_path / "mask.tif") as src:
        assert read_tile(src, Window(0, 0, 40, 40), (1, 1, 1)).valid == 0.75


def test_cloud_mask_on_another_grid_is_warped_to_the_scene(scene, tmp_path):
    # a 20 m mask (half the resolution) with clouds over the scene's top 100 rows
    mask = np.zeros((100, 150), np.uint8)
    mask[:50] = 9
    profile = {
        "driver": "GTiff",
        "width": 150,
        "height": 100,
        "count": 1,
        "dtype": "uint8",
        "crs": UTM,
        "transform": from_origin(*ORIGIN, 2 * PIXEL, 2 * PIXEL),
    }
    with rasterio.open(tmp_path / "clouds.tif", "w", **profile) as dst:
        dst.write(mask, 1)
    with open_raster(scene) as src, cloud_mask(tmp_path / "clouds.tif", src, (8, 9)) as clouds:
        assert read_tile(src, Window(200, 0, 64, 64), (1, 2, 3), clouds).cloud == 1.0
        assert read_tile(src, Window(200, 68, 64, 64), (1, 2, 3), clouds).cloud == 0.5
        assert read_tile(src, Window(200, 136, 64, 64), (1, 2, 3), clouds).cloud == 0.0
    with open_raster(scene) as src, cloud_mask(tmp_path / "clouds.tif", src, (3,)) as clouds:
        assert read_tile(src, Window(200, 0, 64, 64), (1, 2, 3), clouds).cloud == 0.0


def test_footprint_is_the_window_on_the_ground_counter_clockwise():
    transform = from_origin(*ORIGIN, PIXEL, PIXEL)
    polygon = shapely.geometry.shape(footprint(transform, Window(100, 20, 64, 32)))
    x0, y1 = ORIGIN[0] + 100 * PIXEL, ORIGIN[1] - 20 * PIXEL
    assert polygon.bounds == (x0, y1 - 32 * PIXEL, x0 + 64 * PIXEL, y1)
    assert polygon.exterior.is_ccw and polygon.area == 64 * 32 * PIXEL**2


def test_geojson_names_the_crs_and_wgs84_is_lon_lat():
    crs = rasterio.crs.CRS.from_string(UTM)
    assert crs_member(crs)["properties"]["name"] == "urn:ogc:def:crs:EPSG::32633"
    assert "CRS84" in feature_collection([], None)["crs"]["properties"]["name"]
    square = footprint(from_origin(*ORIGIN, PIXEL, PIXEL), Window(0, 0, 10, 10))
    (moved,) = to_wgs84([square], crs)
    lon, lat = moved["coordinates"][0][0]
    assert 12 < lon < 13 and 52 < lat < 53  # the UTM 33N origin lies near 12.5 E, 52.5 N


def test_preview_is_decimated_and_nodata_black(scene):
    with open_raster(scene) as src:
        preview = read_preview(src, (1, 2, 3), max_side=100)
    assert preview.rgb.shape == (67, 100, 3) and preview.rgb.dtype == np.uint8
    assert preview.scale_x == 3.0
    assert preview.rgb[:, :30].max() == 0  # the nodata columns (0..99 of 300)
    assert preview.rgb[:, 40:].mean() > 20


def test_band_choice_and_refusals(tmp_path, scene):
    with open_raster(scene) as src:
        assert band_indexes(src, None) == (1, 2, 3)  # 4 bands: the first three (R, G, B, NIR)
        assert band_indexes(src, BandPolicy(rgb=(3, 2, 1))) == (4, 3, 2)
        with pytest.raises(ImageError, match="band 5"):
            band_indexes(src, BandPolicy(rgb=(4, 1, 0)))
    with pytest.raises(DatasetNotFoundError, match="not found"):
        with open_raster(tmp_path / "missing.tif"):
            pass
    (tmp_path / "junk.tif").write_bytes(b"not a raster at all")
    with pytest.raises(ImageError, match="not a raster"):
        with open_raster(tmp_path / "junk.tif"):
            pass
    no_crs = write_scene(tmp_path / "nocrs.tif", 32, 32, crs=None)
    with open_raster(no_crs) as src, pytest.raises(ImageError, match="no coordinate reference"):
        require_crs(src)
