"""Read any remote-sensing image file as an (H, W, 3) uint8 RGB array.

Remote-sensing data sets mix 8-bit JPEG/PNG, 16-bit and float GeoTIFFs and multispectral
stacks (Sentinel-2: 13 bands). Every loader reads through `read_image`, so the colour policy
(which bands, how to stretch, what to do with alpha) is decided once, here, and documented in
docs/data.md; and every failure is an `ImageError` that names the file and the problem instead
of a decoder's traceback.

Policy in short:
- 1 band -> grey replicated to R, G, B; 3 bands -> as stored; 4 bands -> the first three
  (R, G, B, NIR order assumed); 12 or 13 bands (Sentinel-2) -> B4, B3, B2 = indices (3, 2, 1);
  any other count -> error asking for `BandPolicy(rgb=(r, g, b))`.
- Alpha is ignored (colour kept as stored, not composited): RS tiles use alpha as a no-data
  mask, and the pixels under it are already zero or meaningless either way.
- uint8 is kept as is; any other sample type (16-bit, 32-bit, float) gets a per-image 2-98
  percentile stretch, computed jointly over the three chosen bands so colour balance survives.

Memory is bounded before anything is decoded: `max_pixels` bounds H x W, and `max_bytes` the
decoded samples held at once, computed from the header. TIFFs are read band by band where the
layout allows (`tiffbands`): only the three chosen bands are kept, one strip or tile at a time
is decoded, and a pyramid level that fits is read when the full size does not. The stretch
works through the chosen bands a few rows at a time, so it adds no full-size float copy.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
from PIL import Image

import geostrata.data.tiffbands as tiffbands
from geostrata.bands import DEFAULT_RGB
from geostrata.errors import ConfigError, ImageError

logger = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 100_000_000  # H * W bound: a decompression-bomb guard, not a quality limit
DEFAULT_MAX_BYTES = 2**30  # decoded samples held at once (peak memory stays under about 2x this)
MAX_ELEMENTS_PER_PIXEL = 32  # bounds H * W * bands of a TIFF stack before it is read
STRETCH_PERCENTILES = (2.0, 98.0)
STRETCH_SAMPLES = 1_000_000  # percentiles of a sample of this many values: bounded time
STRETCH_CHUNK = 2**22  # values stretched at once: float temporaries stay a few tens of MB
TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF, both orders
PILLOW_TIFF_PHOTOMETRICS = (5, 6, 8)  # SEPARATED (CMYK), YCBCR, CIELAB: Pillow converts these
MISSING_LISTED = 50  # how many missing files an error message names before summarising


@dataclass(frozen=True)
class BandPolicy:
    """Which bands of an image become R, G and B, or (`all_bands`) that every band is kept.

    `rgb` holds explicit 0-based band indices (repeats allowed, e.g. (7, 7, 7) for one band as
    grey). None applies the default rule of the module docstring; counts it does not cover raise
    an `ImageError` rather than guess, since a guess silently gives false colours. `all_bands`
    keeps every band in file order (a multispectral model's input, `in_bands`).
    """

    rgb: tuple[int, int, int] | None = None
    all_bands: bool = False

    def __post_init__(self) -> None:
        if self.all_bands and self.rgb is not None:
            raise ConfigError("BandPolicy: give rgb=(r, g, b) or all_bands=True, not both")
        if self.rgb is None:
            return
        rgb = tuple(self.rgb) if isinstance(self.rgb, list | tuple) else None
        valid = rgb is not None and len(rgb) == 3
        if not valid or any(type(b) is not int or b < 0 for b in rgb):
            raise ConfigError(
                f"BandPolicy.rgb must be three non-negative band indices, got {self.rgb!r}"
            )
        object.__setattr__(self, "rgb", rgb)


def read_image(
    path: str | Path,
    bands: BandPolicy | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> np.ndarray:
    """Read `path` as an (H, W, 3) uint8 array, or raise an `ImageError` naming the file.

    TIFFs go through tifffile (multispectral stacks, 16-bit, float, (C, H, W) or (H, W, C));
    everything else, and TIFFs tifffile cannot decode without extra codecs, through Pillow.
    `max_pixels` bounds H x W and `max_bytes` the decoded bytes held at once; both are checked
    from the header, before decoding.
    """
    path = Path(path)
    return _as_uint8(read_bands(path, bands, max_pixels, max_bytes), path)


def read_bands(
    path: str | Path,
    bands: BandPolicy | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> np.ndarray:
    """`read_image` before the value mapping: the policy's bands as (H, W, C) in the file's own
    sample type (uint16 reflectance stays uint16), for normalising by band statistics."""
    path = Path(path)
    _check_file(path)
    policy = bands or BandPolicy()
    if _is_tiff(path):
        return _read_tiff(path, policy, max_pixels, max_bytes)  # (H, W, C)
    return _select(_read_pillow(path, max_pixels, max_bytes), policy, path)  # (H, W, C)


def as_rgb(
    stack: np.ndarray, bands: BandPolicy | None = None, source: str | Path = "array"
) -> np.ndarray:
    """An (H, W) or (H, W, C) array of any band count and sample type -> (H, W, 3) uint8, by the
    band policy, exactly as `read_image` maps a file's bands; `source` names it in errors."""
    return _as_uint8(select_bands(stack, bands, source), source)


def select_bands(
    stack: np.ndarray, bands: BandPolicy | None = None, source: str | Path = "array"
) -> np.ndarray:
    """`as_rgb` before the value mapping: the policy's bands of an (H, W) or (H, W, C) array,
    (H, W, C) in its own sample type."""
    if not isinstance(stack, np.ndarray) or stack.ndim not in (2, 3):
        shape = getattr(stack, "shape", type(stack).__name__)
        raise ImageError(f"{source}: expected an (H, W) or (H, W, C) array, got {shape}")
    bands_hwc = stack[:, :, None] if stack.ndim == 2 else stack  # (H, W, C)
    return _select(bands_hwc, bands or BandPolicy(), source)


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) of an image from its header, nothing decoded; ImageError naming the file
    when it is missing or unreadable (boxes in pixels are made relative with it)."""
    path = Path(path)
    _check_file(path)
    try:
        if _is_tiff(path):
            with tifffile.TiffFile(path) as tif:
                page = tif.pages[0]
                return int(page.imagewidth), int(page.imagelength)
        with Image.open(path) as image:
            return image.size
    except ImageError:
        raise
    except Exception as err:  # the decoders' own errors: OSError, SyntaxError, struct.error, ...
        raise ImageError(f"{path}: cannot read the image size from its header: {err}") from err


def rgb_indices(
    n_bands: int, bands: BandPolicy | None = None, source: str | Path = "image"
) -> tuple[int, int, int]:
    """The 0-based bands the policy makes R, G and B of an image with `n_bands` bands (what
    `read_image` keeps), so a caller reading a raster itself reads only those."""
    return _band_indices(bands or BandPolicy(), n_bands, source)


def missing_files(paths: Iterable[str | Path]) -> list[str]:
    """The paths in `paths` that are not existing regular files, in order."""
    return [str(path) for path in paths if not _is_file(Path(path))]


def check_image_files(paths: Iterable[str | Path]) -> None:
    """Raise one `ImageError` naming every missing image at once (the first 50, then a count)."""
    missing = missing_files(paths)
    if not missing:
        return
    named = "\n  ".join(missing[:MISSING_LISTED])
    extra = len(missing) - MISSING_LISTED
    more = f"\n  ... and {extra} more" if extra > 0 else ""
    raise ImageError(f"{len(missing)} image file(s) missing:\n  {named}{more}")


class ImageRecords:
    """What every loader shares: `records` (dicts with an "image_path") read into samples.

    A sample is the record plus "image" (read with the loader's band policy), passed through
    the loader's transform. Kept free of torch so reading images never imports it; the loaders
    combine it with torch's Dataset.
    """

    records: list[dict[str, Any]]
    bands: BandPolicy | None = None
    transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = self.records[index]
        sample = {"image": read_image(record["image_path"], self.bands), **record}
        return self.transform(sample) if self.transform else sample

    def image_paths(self) -> list[str]:
        """Each distinct image path once, in record order."""
        return list(dict.fromkeys(record["image_path"] for record in self.records))

    def missing_images(self) -> list[str]:
        """Image paths that do not exist (cheap: nothing is decoded)."""
        return missing_files(self.image_paths())

    def check_images(self) -> None:
        """Raise one ImageError naming every missing image at once."""
        check_image_files(self.image_paths())


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except (OSError, ValueError):  # name too long, embedded NUL byte, ...
        return False


def _check_file(path: Path) -> None:
    try:
        if not path.exists():
            raise ImageError(f"{path}: image file not found")
        if not path.is_file():
            raise ImageError(f"{path}: not a regular file")
        size = path.stat().st_size
    except (OSError, ValueError) as err:
        raise ImageError(f"{path}: cannot access image file: {err}") from err
    if size == 0:
        raise ImageError(f"{path}: empty file (0 bytes)")


def _is_tiff(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            return handle.read(4) in TIFF_MAGIC
    except OSError as err:
        raise ImageError(f"{path}: cannot read image file: {err}") from err


def _check_pixels(path: Path, height: int, width: int, max_pixels: int) -> None:
    if height * width > max_pixels:
        raise ImageError(
            f"{path}: {width}x{height} = {height * width} pixels exceeds max_pixels={max_pixels} "
            "(decompression-bomb guard; pass a larger max_pixels if the image is genuine)"
        )


def _check_bytes(path: Path, needed: int, what: str, max_bytes: int) -> None:
    if needed > max_bytes:
        raise ImageError(
            f"{path}: decoding needs {_size(needed)} ({what}), over the limit of "
            f"{_size(max_bytes)} (max_bytes={max_bytes}; pass a larger max_bytes if the machine "
            "has the memory, or crop the image)"
        )


def _size(n_bytes: int) -> str:
    return f"{n_bytes / 2**30:.2f} GiB" if n_bytes >= 2**30 else f"{n_bytes / 2**20:.1f} MiB"


def _read_tiff(path: Path, policy: BandPolicy, max_pixels: int, max_bytes: int) -> np.ndarray:
    """Decode with tifffile into (H, W, 3) in the file's sample type; fall back to Pillow for
    compressions tifffile lacks codecs for.

    Layouts `tiffbands` understands are read band by band (only the chosen bands, one strip
    at a time); the rest (palette, bilevel, odd stacks) are decoded whole, within max_bytes.
    """
    try:
        with _tifffile_errors() as errors, tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            shape, axes = tuple(series.shape), str(series.axes)
            _check_tiff_size(path, shape, max_pixels)
            page = tif.pages[0]
            photometric = int(page.photometric)
            if photometric in PILLOW_TIFF_PHOTOMETRICS:
                return _select(_read_pillow(path, max_pixels, max_bytes), policy, path)
            colormap = page.colormap if photometric == 3 else None
            layout = tiffbands.plan(series) if colormap is None else None
            if layout is not None:
                indices = _band_indices(policy, layout.n_bands, path)
                layout = _fitting_level(path, series, layout, len(set(indices)), max_bytes)
                stack = tiffbands.read_bands(layout, indices)  # (H, W, C) chosen bands
            else:
                itemsize = np.dtype(series.dtype).itemsize if series.dtype is not None else 1
                needed = int(np.prod(shape, dtype=np.float64)) * itemsize
                _check_bytes(path, needed, f"all of {shape} {series.dtype}", max_bytes)
                stack = series.asarray()
        if errors:  # tifffile logs (not raises) broken page chains and short strips
            raise ImageError(f"{path}: corrupt or truncated TIFF: {errors[0]}")
    except ImageError:
        raise
    except Exception as tiff_err:  # tifffile raises many types on corrupt input
        return _select(_tiff_fallback(path, max_pixels, max_bytes, tiff_err), policy, path)
    if layout is not None:
        return _invert_miniswhite(stack) if photometric == 0 else stack
    if colormap is not None and stack.ndim == 2:
        stack, axes = _apply_palette(stack, colormap), "YXS"  # (H, W, 3)
    elif photometric == 0:
        stack = _invert_miniswhite(stack)
    return _select(_to_hwc(stack, axes if stack.ndim == len(axes) else "", path), policy, path)


def _fitting_level(
    path: Path, series: object, layout: tiffbands.Layout, n_chosen: int, max_bytes: int
) -> tiffbands.Layout:
    """`layout` when its chosen bands fit max_bytes, else the largest pyramid level that does."""
    needed = layout.needed_bytes(n_chosen)
    if needed <= max_bytes:
        return layout
    for number, level in enumerate(getattr(series, "levels", [])[1:], start=1):
        smaller = tiffbands.plan(level)
        if smaller is None or smaller.n_bands != layout.n_bands:
            continue
        if smaller.needed_bytes(n_chosen) <= max_bytes:
            logger.warning(
                "%s: full size %dx%d needs %s, over max_bytes; reading pyramid level %d "
                "(%dx%d) instead",
                path, layout.width, layout.height, _size(needed), number, smaller.width,
                smaller.height,
            )
            return smaller
    what = (
        f"{n_chosen} of {layout.n_bands} band(s) of {layout.width}x{layout.height} "
        f"{layout.dtype.name}, plus a {_size(layout.segment_bytes)} strip or tile"
    )
    _check_bytes(path, needed, what, max_bytes)
    return layout


class _ErrorCollector(logging.Handler):
    """Collects the messages of ERROR records, so logged corruption can become an ImageError."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextmanager
def _tifffile_errors() -> Iterator[list[str]]:
    """Within the block, tifffile's logged errors are collected (and still logged)."""
    collector = _ErrorCollector()
    tiff_logger = logging.getLogger("tifffile")
    tiff_logger.addHandler(collector)
    try:
        yield collector.messages
    finally:
        tiff_logger.removeHandler(collector)


def _tiff_fallback(
    path: Path, max_pixels: int, max_bytes: int, tiff_err: Exception
) -> np.ndarray:
    """JPEG/LZW/... TIFFs need imagecodecs in tifffile; Pillow reads the 8-bit ones.

    Only a missing codec falls back: for any other failure Pillow would happily return the
    first page of a truncated multi-page stack, i.e. silently fewer bands.
    """
    message = f"{type(tiff_err).__name__}: {tiff_err}"
    if "imagecodecs" not in message:
        raise ImageError(f"{path}: corrupt, truncated or unsupported TIFF: {message}") from tiff_err
    try:
        return _read_pillow(path, max_pixels, max_bytes)
    except ImageError as pil_err:
        raise ImageError(
            f"{path}: TIFF compression needs the 'imagecodecs' package and Pillow could not "
            f"read it either: {message}"
        ) from pil_err


def _check_tiff_size(path: Path, shape: tuple[int, ...], max_pixels: int) -> None:
    """Bound H * W (by the two largest dimensions) and H * W * bands before reading."""
    if not shape:
        raise ImageError(f"{path}: zero-size image (shape {shape})")
    largest = sorted(shape)[-2:]
    _check_pixels(path, largest[0], largest[-1] if len(largest) > 1 else 1, max_pixels)
    if int(np.prod(shape, dtype=np.float64)) > max_pixels * MAX_ELEMENTS_PER_PIXEL:
        raise ImageError(
            f"{path}: array of shape {shape} exceeds {MAX_ELEMENTS_PER_PIXEL} x max_pixels="
            f"{max_pixels} elements (decompression-bomb guard)"
        )


def _apply_palette(indices: np.ndarray, colormap: np.ndarray) -> np.ndarray:
    """Palette TIFFs store indices into a (3, N) uint16 colour map: look them up.

    A map whose values all fit 8 bits was written as 8-bit by its writer and is used as is.
    """
    table = colormap.T  # (N, 3)
    table = (table >> 8 if table.max() > 255 else table).astype(np.uint8)
    clipped = np.clip(indices, 0, table.shape[0] - 1)  # (H, W), the index dtype
    return table[clipped]  # (H, W, 3)


def _invert_miniswhite(stack: np.ndarray) -> np.ndarray:
    """MINISWHITE stores grey inverted (0 = white): flip it so 0 means black as everywhere else."""
    if stack.dtype == bool:
        return ~stack
    if np.issubdtype(stack.dtype, np.unsignedinteger):
        return np.iinfo(stack.dtype).max - stack
    return stack


def _to_hwc(stack: np.ndarray, axes: str, path: Path) -> np.ndarray:
    """(H, W) / (H, W, C) / (C, H, W), plus singleton extras -> (H, W, C).

    tifffile's axes name the band axis ("S" samples last, or "Q"/"C"/"I" first); without
    them the smaller of the first and last dimension is taken as the band axis.
    """
    while stack.ndim > 3 and 1 in stack.shape:
        axis = stack.shape.index(1)
        stack = stack.squeeze(axis)
        axes = axes[:axis] + axes[axis + 1 :] if axes else ""
    if stack.ndim == 2:
        return stack[:, :, None]  # (H, W, 1)
    if stack.ndim != 3:
        raise ImageError(
            f"{path}: unsupported array shape {stack.shape}; "
            "expected (H, W), (H, W, C) or (C, H, W)"
        )
    if axes.endswith("S"):
        bands_last = True
    elif axes.endswith("YX"):
        bands_last = False
    else:
        bands_last = stack.shape[2] <= stack.shape[0]
    return stack if bands_last else np.moveaxis(stack, 0, -1)  # (H, W, C)


def _read_pillow(path: Path, max_pixels: int, max_bytes: int) -> np.ndarray:
    """Verify, then decode with Pillow into (H, W, C) with C in {1, 3} (alpha dropped)."""
    try:
        with Image.open(path) as image:
            _check_pixels(path, image.height, image.width, max_pixels)
            needed = _pillow_bytes(image)
            what = f"{image.width}x{image.height} {image.mode}"
            _check_bytes(path, needed, what, max_bytes)
            image.verify()
        stack = _png16_colour(path)
        if stack is not None:
            return stack
        with Image.open(path) as image:
            return _pillow_array(image)
    except ImageError:
        raise
    except Image.DecompressionBombError as err:  # Pillow's own bound, checked before ours
        raise ImageError(f"{path}: {err} (decompression-bomb guard)") from err
    except Exception as err:  # Pillow raises OSError, SyntaxError, struct.error, ... on bad data
        raise ImageError(
            f"{path}: cannot decode image (corrupt, truncated or unsupported format): "
            f"{type(err).__name__}: {err}"
        ) from err


def _pillow_bytes(image: Image.Image) -> int:
    """Decoded bytes of a Pillow image: its bands at their stored depth (16-bit PNGs: 2)."""
    mode = image.mode
    if mode in ("I", "F"):
        depth = 4
    elif mode.startswith("I;16") or any(";16" in str(tile.args) for tile in image.tile):
        depth = 2
    else:
        depth = 1
    return image.width * image.height * len(image.getbands()) * depth


def _pillow_array(image: Image.Image) -> np.ndarray:
    """Pillow mode -> (H, W, C) array, C in {1, 3}; high-bit-depth modes keep their dtype."""
    mode = image.mode
    if mode.startswith("I") or mode == "F":  # I;16, I;16B, I (int32), F (float32)
        grey = np.asarray(image)
        return grey.astype(grey.dtype.newbyteorder("="))[:, :, None]  # (H, W, 1)
    if mode in ("L", "LA", "La"):
        return np.asarray(image)[:, :, :1] if mode != "L" else np.asarray(image)[:, :, None]
    if mode == "1":
        return np.asarray(image.convert("L"))[:, :, None]
    if mode in ("P", "PA"):  # via RGBA: Pillow warns when a transparent palette goes to RGB
        return np.asarray(image.convert("RGBA"))[:, :, :3]
    if mode in ("RGB", "RGBA", "RGBa", "RGBX"):
        return np.asarray(image)[:, :, :3]
    return np.asarray(image.convert("RGB"))  # CMYK, YCbCr, LAB, HSV


def _png16_colour(path: Path) -> np.ndarray | None:
    """Full 16-bit samples of an RGB(A) PNG, or None when the file is not one.

    Pillow keeps only the high byte of 16-bit colour PNGs, which turns typical reflectance
    values (a few thousand out of 65535) nearly black. Decoding the same data a second time
    with the little-endian raw mode yields the low bytes, so the full value is recovered.
    """
    combined = None
    for suffix in (";16B", ";16L"):
        with Image.open(path) as image:
            if image.format != "PNG" or image.mode not in ("RGB", "RGBA") or len(image.tile) != 1:
                return None
            tile = image.tile[0]
            rawmode = tile.args if isinstance(tile.args, str) else tile.args[0]
            if not isinstance(rawmode, str) or not rawmode.endswith(";16B"):
                return None
            image.tile = [tile._replace(args=rawmode[:-4] + suffix)]
            half = np.asarray(image)[:, :, :3]  # (H, W, 3) uint8: the high, then the low bytes
            if combined is None:
                combined = half.astype(np.uint16)
                combined <<= 8
            else:
                combined |= half
    return combined  # (H, W, 3) uint16


def _band_indices(policy: BandPolicy, n_bands: int, path: str | Path) -> tuple[int, ...]:
    if policy.all_bands:
        return tuple(range(n_bands))
    if policy.rgb is not None:
        if max(policy.rgb) >= n_bands:
            raise ImageError(
                f"{path}: BandPolicy.rgb={policy.rgb} asks for band {max(policy.rgb)} but the "
                f"image has {n_bands} band(s) (indices are 0-based)"
            )
        return policy.rgb
    if n_bands not in DEFAULT_RGB:
        raise ImageError(
            f"{path}: {n_bands} bands and no default RGB choice for that count; pass "
            "BandPolicy(rgb=(r, g, b)) with the 0-based indices of the red, green and blue bands"
        )
    return DEFAULT_RGB[n_bands]


def _select(stack: np.ndarray, policy: BandPolicy, path: str | Path) -> np.ndarray:
    """The policy's bands of an (H, W, C) stack: a view when they are the first ones in order."""
    if stack.size == 0:
        raise ImageError(f"{path}: zero-size image (shape {stack.shape})")
    indices = _band_indices(policy, stack.shape[2], path)
    if indices == tuple(range(len(indices))):
        return stack[:, :, : len(indices)]  # (H, W, C') view
    return stack[:, :, list(indices)]  # (H, W, C')


def _as_uint8(rgb: np.ndarray, path: str | Path) -> np.ndarray:
    """uint8 unchanged, bool to 0/255, other real types through the percentile stretch."""
    if rgb.dtype == np.uint8:
        return np.ascontiguousarray(rgb)
    if rgb.dtype == bool:
        return rgb.astype(np.uint8) * 255
    if not (np.issubdtype(rgb.dtype, np.integer) or np.issubdtype(rgb.dtype, np.floating)):
        raise ImageError(f"{path}: unsupported sample type {rgb.dtype}")
    return stretch_to_uint8(rgb)


def stretch_to_uint8(values: np.ndarray) -> np.ndarray:
    """Map the 2nd..98th percentile of the finite values linearly onto 0..255.

    One range for the whole image (not per band) keeps the colour balance. NaN/inf become 0.
    A constant image falls back to the dtype's range (integers) or 0..1 (floats).
    Percentiles come from at most STRETCH_SAMPLES values (all of them in smaller images), and
    the values are mapped a few rows at a time, so no full-size float copy is made.
    """
    values = np.asarray(values)
    out = np.empty(values.shape, dtype=np.uint8)
    if values.size == 0:
        return out
    work_type = np.float64 if values.dtype.itemsize > 4 else np.float32
    sample = _stretch_sample(values).astype(work_type)
    if sample.size == 0:
        out.fill(0)
        return out
    low, high = (float(v) for v in np.percentile(sample, STRETCH_PERCENTILES))
    if not high > low:
        low, high = _dtype_range(values.dtype)
    rows = values.reshape(-1) if values.ndim == 0 else values
    out_rows = out.reshape(-1) if values.ndim == 0 else out
    step = max(1, STRETCH_CHUNK // max(1, rows[0].size))
    for first in range(0, rows.shape[0], step):
        work = rows[first : first + step].astype(work_type)
        finite = np.isfinite(work)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            work -= low
            work /= high - low
            finite &= np.isfinite(work)
        work[~finite] = 0.0
        np.clip(work, 0.0, 1.0, out=work)
        work *= 255.0
        work += 0.5
        out_rows[first : first + step] = work.astype(np.uint8)
    return out


def _stretch_sample(values: np.ndarray) -> np.ndarray:
    """The finite values to take percentiles of: all of them up to 2 x STRETCH_SAMPLES, else
    STRETCH_SAMPLES picked at fixed random positions (the same for every call), so a stride
    cannot line up with the band interleave or the row length."""
    flat = values.reshape(-1) if values.flags.c_contiguous else None
    if values.size < 2 * STRETCH_SAMPLES:
        sample = values.reshape(-1)
    else:
        positions = np.random.default_rng(0).integers(0, values.size, STRETCH_SAMPLES)
        positions.sort()
        if flat is not None:
            sample = flat[positions]
        else:
            sample = values[np.unravel_index(positions, values.shape)]
    if sample.dtype.kind == "f":
        sample = sample[np.isfinite(sample)]
    return sample


def _dtype_range(dtype: np.dtype) -> tuple[float, float]:
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return float(min(info.min, 0)), float(info.max)
    return 0.0, 1.0
