"""`geostrata map` on a generated 300 x 200 x 4-band UTM scene with a nodata strip, with the
tiny trained model: the GeoJSON is valid and keeps the CRS, its tiles cover the scene minus
the skipped ones, WGS84 output and cloud masks work, tiles are classified as `predict` would."""

import json

import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from PIL import Image
from rasterio.transform import from_origin
from rasterio.warp import transform as warp_points
from rasterio.windows import Window
from typer.testing import CliRunner

from geostrata.cli import app
from geostrata.data.raster import Preview, tile_windows
from geostrata.inference import SCENE_QUESTION, SceneReading, classify, predict
from geostrata.mapping import MapSettings, TileResult, class_grid, map_scene
from tests.geo.fixtures import ORIGIN, PIXEL, UTM, write_scene

WIDTH, HEIGHT, NODATA_COLS, TILE = 300, 200, 100, 64


def _kept_windows(max_nodata: float = 0.5) -> list[Window]:
    """The windows map should classify: nodata (the first NODATA_COLS columns) at most half."""
    kept = []
    for w in tile_windows(WIDTH, HEIGHT, TILE):
        nodata_cols = max(0, min(NODATA_COLS, w.col_off + w.width) - w.col_off)
        if nodata_cols / w.width <= max_nodata:
            kept.append(w)
    return kept


def _box(w: Window) -> shapely.Polygon:
    x0, y0 = ORIGIN[0] + w.col_off * PIXEL, ORIGIN[1] - (w.row_off + w.height) * PIXEL
    return shapely.box(x0, y0, x0 + w.width * PIXEL, y0 + w.height * PIXEL)


@pytest.fixture(scope="module")
def utm_map(tmp_path_factory, loaded_model, model_classes):
    root = tmp_path_factory.mktemp("map")
    scene = write_scene(root / "scene.tif", WIDTH, HEIGHT, nodata_cols=NODATA_COLS)
    settings = MapSettings(tile=TILE, batch_size=5)  # 5: the last batch is a partial one
    summary = map_scene(loaded_model, scene, root / "out", model_classes, settings, False)
    return scene, summary, json.loads(summary.geojson.read_text())


def test_geojson_is_valid_keeps_the_crs_and_covers_the_valid_tiles(utm_map, model_classes):
    _, summary, collection = utm_map
    kept = _kept_windows()
    assert collection["type"] == "FeatureCollection"
    assert collection["crs"]["properties"]["name"] == "urn:ogc:def:crs:EPSG::32633"
    info = pyogrio.read_info(summary.geojson)  # GDAL reads it, and its CRS
    assert info["crs"] == UTM and info["features"] == len(kept) == summary.classified
    windows = tile_windows(WIDTH, HEIGHT, TILE)
    assert collection["skipped"] == {"nodata": len(windows) - len(kept)}
    polygons = [shapely.geometry.shape(f["geometry"]) for f in collection["features"]]
    assert all(p.is_valid and p.exterior.is_ccw for p in polygons)
    covered, expected = shapely.union_all(polygons), shapely.union_all([_box(w) for w in kept])
    assert covered.symmetric_difference(expected).area == 0
    scene_box = shapely.box(
        ORIGIN[0], ORIGIN[1] - HEIGHT * PIXEL, ORIGIN[0] + WIDTH * PIXEL, ORIGIN[1]
    )
    assert covered.within(scene_box)
    # everything right of the widest skipped tile's right edge is covered
    assert covered.contains(
        shapely.box(
            ORIGIN[0] + 128 * PIXEL,
            ORIGIN[1] - HEIGHT * PIXEL,
            ORIGIN[0] + WIDTH * PIXEL,
            ORIGIN[1],
        )
    )
    for feature in collection["features"]:
        props = feature["properties"]
        assert props["class"] in model_classes and props["class"] == props["classes"][0]["name"]
        assert 0 < props["confidence"] <= 1 and props["land_cover"]
        assert props["land_cover"] == props["cues"]["region"][0]["name"]
        assert set(props["cues"]) == {"scene", "region", "object"}
        assert props["valid_fraction"] >= 0.5 and props["cloud_fraction"] == 0


def test_overlay_is_a_png_of_the_preview(utm_map):
    _, summary, _ = utm_map
    with Image.open(summary.overlay) as image:
        assert image.format == "PNG" and image.width > 300 and image.height > 150


def test_tiles_are_classified_as_predict_classifies_them(utm_map, loaded_model, model_classes):
    scene, _, collection = utm_map
    feature = collection["features"][1]
    props = feature["properties"]
    with rasterio.open(scene) as src:
        window = Window(props["col"], props["row"], props["width"], props["height"])
        pixels = np.moveaxis(src.read((1, 2, 3), window=window), 0, -1)  # (H, W, 3) uint16
    pred = predict(loaded_model, pixels, SCENE_QUESTION, model_classes)
    assert props["class"] == pred.class_probs[0][0]
    assert props["confidence"] == pytest.approx(pred.class_probs[0][1], abs=1e-4)
    # batching does not change a tile's reading
    other = np.zeros_like(pixels) + 1000
    alone = classify(loaded_model, [pixels], model_classes)[0]
    batched = classify(loaded_model, [other, pixels], model_classes)[1]
    for (n1, p1), (n2, p2) in zip(alone.class_probs, batched.class_probs, strict=True):
        assert n1 == n2 and p1 == pytest.approx(p2, abs=1e-5)


def test_wgs84_output_and_cloud_mask(utm_map, tmp_path, loaded_model, model_classes):
    scene, _, utm = utm_map
    mask = np.zeros((HEIGHT, WIDTH), np.uint8)
    mask[:TILE, 200:] = 1  # clouds over the top-right tiles
    profile = {
        "driver": "GTiff",
        "width": WIDTH,
        "height": HEIGHT,
        "count": 1,
        "dtype": "uint8",
        "crs": UTM,
        "transform": from_origin(*ORIGIN, PIXEL, PIXEL),
    }
    with rasterio.open(tmp_path / "clouds.tif", "w", **profile) as dst:
        dst.write(mask, 1)
    settings = MapSettings(tile=TILE, to_wgs84=True, cloud_mask=tmp_path / "clouds.tif")
    summary = map_scene(loaded_model, scene, tmp_path / "out", model_classes, settings, False)
    collection = json.loads(summary.geojson.read_text())
    assert "CRS84" in collection["crs"]["properties"]["name"]
    assert pyogrio.read_info(summary.geojson)["crs"] == "EPSG:4326"
    cloudy = {
        (w.col_off, w.row_off)
        for w in _kept_windows()
        if w.row_off == 0
        and w.col_off + w.width > 200
        and (w.col_off + w.width - 200) / w.width > 0.5
    }
    assert cloudy and summary.skipped["cloud"] == len(cloudy)
    by_window = {(f["properties"]["col"], f["properties"]["row"]): f for f in utm["features"]}
    for feature in collection["features"]:
        key = (feature["properties"]["col"], feature["properties"]["row"])
        assert key not in cloudy
        ring = np.asarray(by_window[key]["geometry"]["coordinates"][0])  # UTM
        lon, lat = warp_points(UTM, "EPSG:4326", ring[:, 0], ring[:, 1])
        np.testing.assert_allclose(feature["geometry"]["coordinates"][0], np.c_[lon, lat])


def test_class_grid_paints_each_tile_in_its_class():
    preview = Preview(np.zeros((50, 100, 3), np.uint8), 3.0, 3.0)
    reading = SceneReading([("forest", 0.9)], {})
    results = [TileResult(Window(150, 0, 60, 60), 1.0, 0.0, reading)]
    grid = class_grid(preview, results, ["river", "forest"])
    assert (grid[:20, 50:70] == 1).all() and (grid[:, :50] == -1).all() and (grid[20:] == -1).all()


def test_cli_maps_with_chosen_bands_and_refuses_a_crs_less_scene(
    tmp_path, trained_model_dir, model_classes
):
    scene = write_scene(tmp_path / "scene.tif", 128, 64, nodata_cols=0)
    run = CliRunner().invoke(
        app,
        [
            "map",
            str(scene),
            "--model",
            str(trained_model_dir),
            "--out",
            str(tmp_path / "out"),
            "--tile",
            "64",
            "--bands",
            "4,3,2",
            "--classes",
            ",".join(model_classes[:3]),
            "--no-progress",
            "--device",
            "cpu",
        ],
    )
    assert run.exit_code == 0, run.output
    assert "2 tiles" in run.output and "2 classified" in run.output
    collection = json.loads((tmp_path / "out" / "tiles.geojson").read_text())
    assert collection["bands"] == [4, 3, 2] and collection["classes"] == model_classes[:3]
    bare = write_scene(tmp_path / "bare.tif", 64, 64, crs=None)
    for extra, words in (
        ([str(bare)], ["bare.tif", "no coordinate reference system"]),
        ([str(scene), "--bands", "5,3,2"], ["band 5", "4 band(s)"]),
        ([str(scene), "--bands", "4,3"], ["--bands", "three"]),
    ):
        run = CliRunner().invoke(
            app, ["map", *extra, "--model", str(trained_model_dir), "--out", str(tmp_path / "x")]
        )
        assert run.exit_code == 1 and "Traceback" not in run.output, run.output
        assert all(word in run.output for word in words), run.output
    assert not (tmp_path / "x").exists()
