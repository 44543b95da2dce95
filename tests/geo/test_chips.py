"""`geostrata data chips`: labelled chips from a 256 x 256 UTM scene and polygons stored in WGS84
(so they are reprojected), or a class raster on another grid; the purity threshold, the nodata
rule, the class-folder output the folder loader reads, and clear refusals."""

import json

import numpy as np
import pytest
import rasterio
from typer.testing import CliRunner

from geostrata.cli import app
from geostrata.data.chips import ChipSettings, make_chips
from geostrata.data.folder import SceneFolderDataset
from geostrata.errors import AnnotationError, ImageError
from tests.geo.fixtures import ORIGIN, PIXEL, UTM, utm_box, write_labels, write_scene

SIDE, NODATA_COLS = 256, 32
# water: the left half; forest: the top right; meadow: rows 128..208 of the right half (the
# chips of rows 192..224 are half meadow, half unlabelled)
POLYGONS = [
    (utm_box(0, 0, 128, 256), "water"),
    (utm_box(128, 0, 256, 128), "forest"),
    (utm_box(128, 128, 256, 208), "meadow"),
]


@pytest.fixture
def scene(tmp_path):
    return write_scene(tmp_path / "scene.tif", SIDE, SIDE, nodata_cols=NODATA_COLS)


@pytest.fixture
def labels(tmp_path):
    return write_labels(tmp_path / "labels.gpkg", POLYGONS, crs="EPSG:4326")


def test_chips_by_purity_with_reprojected_polygons(scene, labels, tmp_path):
    out = tmp_path / "chips"
    summary = make_chips(scene, labels, out, ChipSettings(32, "landuse", 0.9), False)
    # 8 x 8 windows; the first column is nodata; rows 192.. of the right half are impure
    assert summary.counts == {
        "forest": {"train": 13, "test": 3},
        "meadow": {"train": 6, "test": 2},
        "water": {"train": 19, "test": 5},
    }
    assert summary.windows == 64 and summary.skipped == {"impure": 8, "nodata": 8}
    index = json.loads((out / "chips.geojson").read_text())
    assert index["crs"]["properties"]["name"] == "urn:ogc:def:crs:EPSG::32633"
    with rasterio.open(scene) as src:
        for feature in index["features"]:
            props = feature["properties"]
            assert props["purity"] >= 0.9 and props["path"].startswith(props["class"] + "/")
            _check_chip(out / props["path"], src, props, feature["geometry"])
    train, test = ((out / f).read_text().split() for f in ("train.txt", "test.txt"))
    assert not set(train) & set(test) and len(train) + len(test) == len(index["features"])
    loaded = SceneFolderDataset(out, split_file=out / "train.txt")
    assert loaded.classes == ["forest", "meadow", "water"] and len(loaded) == len(train)
    sample = loaded[0]
    assert sample["image"].shape == (32, 32, 3) and sample["label"] == train[0].split("/")[0]


def _check_chip(path, src, props, geometry):
    """The chip holds every band of its window, with its georeference."""
    window = rasterio.windows.Window(props["col"], props["row"], 32, 32)
    with rasterio.open(path) as chip:
        assert chip.count == 4 and chip.dtypes[0] == "uint16" and chip.crs == UTM
        assert chip.transform == src.window_transform(window) and chip.nodata == 0
        np.testing.assert_array_equal(chip.read(), src.read(window=window))
        ring = np.asarray(geometry["coordinates"][0])
        assert (ring[:, 0].min(), ring[:, 1].min(), ring[:, 0].max(), ring[:, 1].max()) == tuple(
            chip.bounds
        )
    centre_col, centre_row = props["col"] + 16, props["row"] + 16  # against POLYGONS in pixels
    expected = "water" if centre_col < 128 else "forest" if centre_row < 128 else "meadow"
    assert props["class"] == expected


def test_a_lower_purity_keeps_the_half_labelled_chips(scene, labels, tmp_path):
    summary = make_chips(scene, labels, tmp_path / "c", ChipSettings(32, "landuse", 0.5), False)
    assert sum(summary.counts["meadow"].values()) == 12  # 8 pure + 4 half-meadow chips
    index = json.loads((tmp_path / "c" / "chips.geojson").read_text())
    assert sorted({f["properties"]["purity"] for f in index["features"]}) == [0.5, 1.0]


def test_a_class_raster_on_another_grid(scene, tmp_path):
    classes = np.ones((SIDE // 2, SIDE // 2), np.uint8)  # 20 m: half the scene's resolution
    classes[:, SIDE // 4 :] = 2
    profile = {
        "driver": "GTiff",
        "width": SIDE // 2,
        "height": SIDE // 2,
        "count": 1,
        "dtype": "uint8",
        "crs": UTM,
        "transform": rasterio.transform.from_origin(*ORIGIN, 2 * PIXEL, 2 * PIXEL),
        "nodata": 0,
    }
    with rasterio.open(tmp_path / "classes.tif", "w", **profile) as dst:
        dst.write(classes, 1)
    settings = ChipSettings(32, names={1: "water", 2: "forest"}, split=1.0)
    summary = make_chips(scene, tmp_path / "classes.tif", tmp_path / "c", settings, False)
    assert summary.counts == {"forest": {"train": 32, "test": 0}, "water": {"train": 24, "test": 0}}
    assert (tmp_path / "c" / "test.txt").read_text() == ""


@pytest.mark.parametrize(
    ("case", "error", "words"),
    [
        ("raster without crs", ImageError, ["no coordinate reference system"]),
        ("labels without crs", AnnotationError, ["labels have no coordinate reference system"]),
        ("labels elsewhere", AnnotationError, ["do not overlap", "EPSG:4326"]),
        ("missing field", AnnotationError, ["no field 'kind'", "landuse, id"]),
        ("no field given", AnnotationError, ["need --field", "landuse, id"]),
        ("nothing pure", AnnotationError, ["no 256x256 chip reaches min purity 0.9", "0.50"]),
    ],
)
def test_refusals_name_the_problem_and_write_nothing(tmp_path, scene, labels, case, error, words):
    raster, field, size = scene, "landuse", 32
    if case == "raster without crs":
        raster = write_scene(tmp_path / "bare.tif", 64, 64, crs=None)
    elif case == "labels without crs":
        labels = write_labels(tmp_path / "bare.gpkg", POLYGONS, crs=None)
    elif case == "labels elsewhere":  # 100 km east
        moved = [([[x + 100_000, y] for x, y in ring], name) for ring, name in POLYGONS]
        labels = write_labels(tmp_path / "far.gpkg", moved)
    elif case == "missing field":
        field = "kind"
    elif case == "no field given":
        field = None
    else:
        size = SIDE
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("an earlier data set")
    with pytest.raises(error) as caught:
        make_chips(raster, labels, out, ChipSettings(size, field, 0.9), False)
    assert all(word in str(caught.value) for word in words), str(caught.value)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("out")) == ["out"]
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_cli_chips_from_geojson_labels(scene, tmp_path):
    labels = write_labels(tmp_path / "labels.geojson", POLYGONS, driver="GeoJSON")
    out = tmp_path / "chips"
    result = CliRunner().invoke(
        app,
        [
            "data", "chips", str(scene), str(labels), "--field", "landuse", "--size", "64",
            "--out", str(out), "--stride", "64", "--split", "0.5",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "water: 2 train, 2 test" in result.output and "train.txt" in result.output
    result = CliRunner().invoke(
        app, ["data", "chips", str(scene), str(labels), "--size", "64", "--out", str(out)]
    )
    assert result.exit_code == 1 and "need --field" in result.output, result.output
