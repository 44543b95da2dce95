"""read_image: every image kind round-trips to (H, W, 3) uint8; every bad input names the file."""

import numpy as np
import pytest
import tifffile
from PIL import Image

from geostrata.data.images import (
    BandPolicy,
    as_rgb,
    check_image_files,
    missing_files,
    read_image,
    stretch_to_uint8,
)
from geostrata.errors import ConfigError, ImageError
from tests.data.fixtures import rgb_array, write_image, write_png16


def _ramp16(height: int, width: int, channels: int, top: int = 4000) -> np.ndarray:
    """Distinct uint16 values 0..top, like dark 16-bit reflectance data."""
    values = np.linspace(0, top, height * width * channels)
    return values.reshape(height, width, channels).astype(np.uint16)


def _assert_stretched(out: np.ndarray, source: np.ndarray) -> None:
    """Full output range, and order kept: a larger input never maps to a smaller output."""
    assert out.dtype == np.uint8 and out.min() == 0 and out.max() == 255
    order = np.argsort(source.ravel(), kind="stable")
    assert np.all(np.diff(out.ravel()[order].astype(int)) >= 0)


def test_rgb_png_round_trip(tmp_path):
    array = rgb_array(0, 5, 7)
    out = read_image(write_image(tmp_path / "a.png", array))
    assert out.shape == (5, 7, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, array)


def test_grayscale_is_replicated(tmp_path):
    grey = rgb_array(1)[:, :, 0]
    out = read_image(write_image(tmp_path / "g.png", grey))
    for channel in range(3):
        np.testing.assert_array_equal(out[:, :, channel], grey)


def test_rgba_keeps_colour_and_ignores_alpha(tmp_path):
    rgba = np.dstack([rgb_array(2), np.zeros((8, 8), np.uint8)])  # fully transparent
    out = read_image(write_image(tmp_path / "a.png", rgba))
    np.testing.assert_array_equal(out, rgba[:, :, :3])


def test_palette_png_gives_palette_colours(tmp_path):
    indices = np.arange(64, dtype=np.uint8).reshape(8, 8) % 4
    image = Image.fromarray(indices, mode="P")
    palette = [255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 20, 30]
    image.putpalette(palette + [0] * (768 - len(palette)))
    image.save(tmp_path / "p.png")
    out = read_image(tmp_path / "p.png")
    expected = np.array(palette, np.uint8).reshape(4, 3)[indices]
    np.testing.assert_array_equal(out, expected)


def test_16bit_grey_png_is_stretched(tmp_path):
    grey = _ramp16(8, 8, 1)[:, :, 0]
    path = tmp_path / "g16.png"
    Image.fromarray(grey).save(path)
    assert Image.open(path).mode.startswith("I")  # really a 16-bit file
    out = read_image(path)
    _assert_stretched(out[:, :, 0], grey)
    np.testing.assert_array_equal(out[:, :, 0], out[:, :, 2])


def test_16bit_colour_png_keeps_low_byte(tmp_path):
    # Values below 4096: Pillow's own 8-bit reduction would leave at most 15.
    array = _ramp16(6, 6, 3)
    out = read_image(write_png16(tmp_path / "c16.png", array))
    _assert_stretched(out, array)


def test_16bit_rgba_png_drops_alpha(tmp_path):
    array = np.dstack([_ramp16(6, 6, 3), np.full((6, 6), 65535, np.uint16)])
    out = read_image(write_png16(tmp_path / "c16a.png", array))
    _assert_stretched(out, array[:, :, :3])


def test_16bit_tiff_stretch_clips_outliers(tmp_path):
    array = _ramp16(10, 10, 3)
    array[0, 0, 0] = 65535  # one hot pixel must not darken the rest
    tifffile.imwrite(tmp_path / "s.tif", array, photometric="rgb")
    out = read_image(tmp_path / "s.tif")
    assert out[0, 0, 0] == 255 and np.median(out) > 100


def test_float_tiff_with_nan(tmp_path):
    array = np.linspace(-1.0, 1.0, 8 * 8 * 3, dtype=np.float32).reshape(8, 8, 3)
    array[0, 0, :] = np.nan
    tifffile.imwrite(tmp_path / "f.tif", array, photometric="rgb")
    out = read_image(tmp_path / "f.tif")
    assert out.shape == (8, 8, 3) and (out[0, 0] == 0).all() and out.max() == 255


def test_constant_16bit_image_uses_dtype_range():
    out = stretch_to_uint8(np.full((2, 2, 3), 65535, np.uint16))
    assert (out == 255).all()


def test_four_band_tiff_takes_first_three(tmp_path):
    array = np.random.default_rng(3).integers(0, 256, (6, 6, 4), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "n.tif", array, photometric="minisblack", planarconfig="contig")
    np.testing.assert_array_equal(read_image(tmp_path / "n.tif"), array[:, :, :3])


@pytest.mark.parametrize("n_bands", [12, 13])
def test_sentinel2_takes_b4_b3_b2(tmp_path, n_bands):
    stack = np.random.default_rng(4).integers(0, 256, (n_bands, 6, 6), dtype=np.uint8)  # (C,H,W)
    tifffile.imwrite(tmp_path / "s2.tif", stack)
    out = read_image(tmp_path / "s2.tif")
    np.testing.assert_array_equal(out, np.moveaxis(stack[[3, 2, 1]], 0, -1))


def test_band_first_and_band_last_tiffs_agree(tmp_path):
    array = rgb_array(5, 6, 9)
    tifffile.imwrite(tmp_path / "hwc.tif", array, photometric="rgb")
    chw = np.moveaxis(array, -1, 0)
    tifffile.imwrite(tmp_path / "chw.tif", chw, photometric="rgb", planarconfig="separate")
    np.testing.assert_array_equal(read_image(tmp_path / "chw.tif"), array)
    np.testing.assert_array_equal(read_image(tmp_path / "hwc.tif"), array)


def test_explicit_band_policy(tmp_path):
    stack = np.random.default_rng(6).integers(0, 256, (8, 5, 5), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "m.tif", stack)
    out = read_image(tmp_path / "m.tif", BandPolicy(rgb=(7, 5, 0)))
    np.testing.assert_array_equal(out, np.moveaxis(stack[[7, 5, 0]], 0, -1))
    with pytest.raises(ImageError, match=r"m\.tif.*band 9.*8 band"):
        read_image(tmp_path / "m.tif", BandPolicy(rgb=(9, 1, 0)))


def test_unusual_band_count_asks_for_policy(tmp_path):
    tifffile.imwrite(tmp_path / "six.tif", np.zeros((6, 5, 5), np.uint8))
    with pytest.raises(ImageError, match=r"six\.tif.*6 bands.*BandPolicy"):
        read_image(tmp_path / "six.tif")


@pytest.mark.parametrize("rgb", [(1, 2), (-1, 0, 0), ("a", 0, 0), (True, 0, 0)])
def test_band_policy_validation(rgb):
    with pytest.raises(ConfigError, match="BandPolicy.rgb"):
        BandPolicy(rgb=rgb)


def test_jpeg_and_jpeg_tiff(tmp_path):
    array = np.kron(rgb_array(7, 2, 2), np.ones((8, 8, 1), np.uint8))  # flat 8x8 blocks
    path = write_image(tmp_path / "a.jpg", array, quality=95, subsampling=0)
    jpeg = read_image(path)
    np.testing.assert_array_equal(jpeg, np.asarray(Image.open(path).convert("RGB")))
    assert np.abs(jpeg.astype(int) - array).mean() < 4
    # tifffile needs imagecodecs for JPEG-in-TIFF; the Pillow fallback reads it.
    write_image(tmp_path / "j.tif", array, compression="jpeg")
    assert read_image(tmp_path / "j.tif").shape == (16, 16, 3)


def test_palette_tiff(tmp_path):
    colormap = np.zeros((3, 256), np.uint16)
    colormap[:, 1] = (65535, 0, 32896)
    indices = np.eye(4, dtype=np.uint8)
    tifffile.imwrite(tmp_path / "p.tif", indices, photometric="palette", colormap=colormap)
    out = read_image(tmp_path / "p.tif")
    assert tuple(out[0, 0]) == (255, 0, 128) and tuple(out[0, 1]) == (0, 0, 0)


def test_missing_empty_and_folder(tmp_path):
    with pytest.raises(ImageError, match=r"nope\.png: image file not found"):
        read_image(tmp_path / "nope.png")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageError, match=r"empty\.png: empty file"):
        read_image(tmp_path / "empty.png")
    with pytest.raises(ImageError, match="not a regular file"):
        read_image(tmp_path)


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".tif", ".bmp"])
def test_truncated_files(tmp_path, suffix):
    path = tmp_path / f"whole{suffix}"
    if suffix == ".tif":
        tifffile.imwrite(path, rgb_array(8, 32, 32), photometric="rgb")
    else:
        write_image(path, rgb_array(8, 32, 32))
    data = path.read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match=rf"cut\{suffix}: .*(corrupt|truncated)"):
        read_image(cut)


def test_random_bytes_are_not_an_image(tmp_path):
    (tmp_path / "x.png").write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ImageError, match=r"x\.png: cannot decode image"):
        read_image(tmp_path / "x.png")


def test_pixel_bound(tmp_path):
    write_image(tmp_path / "big.png", rgb_array(9, 20, 30))
    tifffile.imwrite(tmp_path / "big.tif", np.zeros((13, 20, 30), np.uint16))
    for name in ("big.png", "big.tif"):
        with pytest.raises(ImageError, match=rf"{name}: .*600 pixels exceeds max_pixels=599"):
            read_image(tmp_path / name, max_pixels=599)
        assert read_image(tmp_path / name, max_pixels=600).shape == (20, 30, 3)


def test_arrays_follow_the_band_policy_of_files(tmp_path):
    stack = _ramp16(6, 5, 4)  # 16-bit, 4 bands: stretched, the first three kept
    tifffile.imwrite(tmp_path / "four.tif", stack, photometric="rgb", extrasamples=["unspecified"])
    np.testing.assert_array_equal(as_rgb(stack), read_image(tmp_path / "four.tif"))
    grey = rgb_array(7, 5, 6)[:, :, 0]  # (H, W) uint8 -> replicated
    np.testing.assert_array_equal(as_rgb(grey), np.repeat(grey[:, :, None], 3, axis=2))
    rgb = rgb_array(8, 4, 4)
    np.testing.assert_array_equal(as_rgb(rgb), rgb)  # RGB uint8 passes unchanged
    with pytest.raises(ImageError, match=r"array: 5 bands"):
        as_rgb(np.zeros((4, 4, 5), np.uint8))
    with pytest.raises(ImageError, match=r"expected an \(H, W\) or \(H, W, C\) array"):
        as_rgb(np.zeros((2, 4, 4, 3), np.uint8))


def test_check_image_files_names_every_missing_file(tmp_path):
    present = write_image(tmp_path / "here.png", rgb_array(11))
    paths = [present, tmp_path / "gone1.png", tmp_path / "gone2.png"]
    assert missing_files(paths) == [str(paths[1]), str(paths[2])]
    with pytest.raises(ImageError, match=r"2 image file\(s\) missing:[\s\S]*gone1[\s\S]*gone2"):
        check_image_files(paths)
    check_image_files([present])
