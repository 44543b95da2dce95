"""read_image keeps memory bounded, whatever the image's size on disk or decoded.

The hostile files are multispectral TIFFs that take a few MB on disk and gigabytes decoded.
Peak memory is measured in a fresh process (ru_maxrss), which is capped at 6 GiB of address
space so a regression fails with a MemoryError instead of taking the machine's memory.
"""

import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from geostrata.data.images import read_image, stretch_to_uint8
from geostrata.errors import ImageError
from tests.data.fixtures import bomb_values, write_bomb_tiff, write_image

GIB = 2**30
ROOT = Path(__file__).resolve().parents[2]

MEASURE = """
import json, resource, sys
resource.setrlimit(resource.RLIMIT_AS, (6 * 2**30, 6 * 2**30))
import numpy as np
from geostrata.data.images import read_image
from geostrata.errors import ImageError
path, max_pixels = sys.argv[1], int(sys.argv[2])
report = {}
try:
    out = read_image(path, max_pixels=max_pixels)
    half_h, half_w = out.shape[0] // 2, out.shape[1] // 2
    report["shape"] = list(out.shape)
    blocks = [out[rows, cols] for rows in (slice(0, half_h), slice(half_h, None))
              for cols in (slice(0, half_w), slice(half_w, None))]
    # each block one colour: its first pixel, or None when it holds others too
    report["blocks"] = [
        block[0, 0].tolist() if (block == block[0, 0]).all() else None for block in blocks
    ]
except ImageError as err:
    report["error"] = str(err)
except MemoryError:
    report["error"] = "MemoryError"
report["peak_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps(report))
"""


def _measure(path: Path, max_pixels: int = 100_000_000) -> dict:
    """read_image(path) in a fresh process: its peak RSS, and the result or the error."""
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, str(path), str(max_pixels)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _expected_blocks(tmp_path: Path, layout: str, dtype: str) -> list:
    """The four blocks' colours, from a small image of the same pattern read in process."""
    small = read_image(write_bomb_tiff(tmp_path / f"small-{layout}.tif", 13, 20, 20, dtype, layout))
    return [small[r, c].tolist() for r in (0, -1) for c in (0, -1)]


@pytest.mark.parametrize("layout", ["pages", "interleaved"])
def test_web_upload_bomb_is_read_under_2gib(tmp_path, layout):
    """The web app's case: 13-band float64 5000 x 5000 (2.6 GB decoded) at the app's 25 MP bound.

    Before: 5.5 GB peak (measured, pages layout). Only the 3 chosen bands are kept now.
    """
    path = write_bomb_tiff(tmp_path / "upload.tif", 13, 5000, 5000, "float64", layout)
    assert path.stat().st_size < 20 * 2**20  # passes the app's upload bound
    report = _measure(path, max_pixels=25_000_000)
    assert "error" not in report, report
    assert report["peak_bytes"] < 2 * GIB
    assert report["shape"] == [5000, 5000, 3]
    assert report["blocks"] == _expected_blocks(tmp_path, layout, "float64")


@pytest.mark.parametrize("layout", ["pages", "interleaved"])
def test_chat_bomb_is_refused_before_decoding(tmp_path, layout):
    """The chat case: 13-band float32 10000 x 10000 (5.2 GB decoded; 12.6 GB peak before).

    Its 3 chosen bands alone are 1.1 GiB, over the 1 GiB budget: a clear error, at once.
    """
    path = write_bomb_tiff(tmp_path / "scene.tif", 13, 10000, 10000, "float32", layout)
    assert path.stat().st_size < 20 * 2**20
    report = _measure(path)
    assert report["peak_bytes"] < 2 * GIB
    message = report["error"]
    assert message.startswith(str(path)) and "1.12 GiB" in message
    assert "3 of 13 band(s) of 10000x10000 float32" in message and "1.00 GiB" in message


def test_uncompressed_file_larger_than_the_budget_is_read_in_row_groups(tmp_path):
    """1.1 GB uncompressed in one strip (a sparse file here): read 16 MiB at a time."""
    path = write_bomb_tiff(
        tmp_path / "raw.tif", 13, 4600, 4600, "float32", "interleaved", compression=None
    )
    assert path.stat().st_size > GIB
    report = _measure(path)
    assert "error" not in report, report
    assert report["peak_bytes"] < 2 * GIB
    assert report["shape"] == [4600, 4600, 3]
    assert report["blocks"] == [[0, 0, 0]] * 4  # zeros: a constant image maps to 0


def test_one_big_compressed_strip_counts_against_the_budget(tmp_path):
    """A zlib strip is decoded whole, so its decoded size is part of what reading needs."""
    data = np.zeros((1000, 1000, 3), np.float32)
    path = tmp_path / "one-strip.tif"
    tifffile.imwrite(path, data, compression="zlib", rowsperstrip=1000, photometric="rgb")
    assert path.stat().st_size < 100_000
    message = r"one-strip\.tif: decoding needs 22\.9 MiB .*11\.4 MiB strip"
    with pytest.raises(ImageError, match=message):
        read_image(path, max_bytes=20 * 2**20)
    assert read_image(path, max_bytes=24 * 2**20).shape == (1000, 1000, 3)


@pytest.mark.parametrize(
    ("layout", "compression", "tile"),
    [
        ("pages", None, None),
        ("pages", "zlib", None),
        ("planar", None, None),
        ("planar", "zlib", (16, 16)),
        ("interleaved", None, (16, 16)),
        ("interleaved", "zlib", None),
    ],
)
def test_band_by_band_reading_matches_whole_decoding(tmp_path, layout, compression, tile):
    """Strips, tiles (edge tiles padded), pages and planes all give the whole-array answer."""
    rng = np.random.default_rng(0)
    stack = rng.normal(size=(13, 37, 45)).astype(np.float32)  # (C, H, W)
    data = np.moveaxis(stack, 0, -1) if layout == "interleaved" else stack
    planar = {"pages": None, "planar": "separate", "interleaved": "contig"}[layout]
    path = tmp_path / "s2.tif"
    tifffile.imwrite(
        path,
        data,
        photometric="minisblack",
        planarconfig=planar,
        compression=compression,
        tile=tile,
        rowsperstrip=None if tile else 5,
        metadata=None,
    )
    expected = stretch_to_uint8(np.moveaxis(stack[[3, 2, 1]], 0, -1))
    np.testing.assert_array_equal(read_image(path), expected)


def test_byte_budget_names_file_size_and_limit(tmp_path):
    tif = write_bomb_tiff(tmp_path / "b.tif", 4, 20, 30, "uint16", "interleaved")
    png = write_image(tmp_path / "b.png", np.zeros((20, 30, 3), np.uint8))
    with pytest.raises(ImageError, match=r"b\.tif: decoding needs .*over the limit .*=3599"):
        read_image(tif, max_bytes=3599)  # 3 bands x 600 pixels x 2 bytes + a 4800-byte strip
    assert read_image(tif, max_bytes=3600 + 4800).shape == (20, 30, 3)
    with pytest.raises(ImageError, match=r"b\.png: decoding needs .*30x20 RGB.*max_bytes=1799"):
        read_image(png, max_bytes=1799)
    assert read_image(png, max_bytes=1800).shape == (20, 30, 3)


def test_pyramid_level_that_fits_is_read(tmp_path, caplog):
    grid = np.arange(64)
    full = np.stack([bomb_values(b, grid, grid, 64, 64) for b in range(3)], axis=-1)
    full = full.astype(np.uint16)  # (64, 64, 3)
    path = tmp_path / "cog.tif"
    with tifffile.TiffWriter(path) as tif:
        tif.write(full, photometric="rgb", subifds=1, metadata=None)
        tif.write(full[::2, ::2], photometric="rgb", subfiletype=1, metadata=None)
    assert read_image(path).shape == (64, 64, 3)
    with caplog.at_level(logging.WARNING, logger="geostrata.data.images"):
        out = read_image(path, max_bytes=3 * 32 * 32 * 2 + 32 * 32 * 3 * 2)
    assert out.shape == (32, 32, 3) and "pyramid level 1 (32x32)" in caplog.text
    np.testing.assert_array_equal(out, read_image(path)[::2, ::2])
    with pytest.raises(ImageError, match="cog.tif: decoding needs"):
        read_image(path, max_bytes=100)


def test_stretch_range_comes_from_all_three_bands():
    """Over 2M values the percentiles come from a sample. It used to be a stride over the flat
    (H, W, 3) array: with a stride divisible by 3 it saw only band 0, and here stretched the
    two dark bands over the full range instead of leaving them dark."""
    values = np.empty((1000, 1000, 3), np.float32)
    values[:, :, 0] = 100.0
    values[:, :, 1:] = np.linspace(0.0, 1.0, 2_000_000).reshape(1000, 1000, 2)
    out = stretch_to_uint8(values)
    assert (out[:, :, 0] == 255).all() and out[:, :, 1:].max() <= 3


def test_stretch_is_chunked_without_changing_results():
    """Rows are stretched a chunk at a time; the result equals one pass over the whole array."""
    from geostrata.data import images

    values = np.random.default_rng(1).normal(size=(300, 7, 3)).astype(np.float32)
    values[5, 3, 1] = np.nan
    whole = stretch_to_uint8(values)
    chunk, images.STRETCH_CHUNK = images.STRETCH_CHUNK, 50
    try:
        np.testing.assert_array_equal(stretch_to_uint8(values), whole)
    finally:
        images.STRETCH_CHUNK = chunk
