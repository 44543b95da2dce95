"""An ``image_url`` of a request -> the image as the model takes it, within the server's bounds.

Two sources: a base64 ``data:`` URL (PNG, JPEG or TIFF), written to a private temp file and read
by the model's own image processor (`ImageProcessor.decode`: all the bands a multispectral model
takes; `read_image` without one) like every other image; or a local path, only when
the server was started with an image root and only inside it (``..`` and symlinks out of it are
refused). Remote URLs are never fetched. Byte size is checked before decoding, pixel count by the
decoder before it allocates.
"""

from __future__ import annotations

import base64
import binascii
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from geostrata.api.schema import ParamError
from geostrata.errors import ImageError

DATA_URL = re.compile(r"data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?:;[\w.+-]+=[\w.+-]+)*;base64,", re.I)
SUFFIXES = {
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/jpg": ".jpg",
    "image/tiff": ".tif",
    "image/tif": ".tif",
}


Decode = Callable[[Path, int], np.ndarray]  # (file, max_pixels) -> array


def read_rgb(path: Path, max_pixels: int) -> np.ndarray:
    """The default decoder: (H, W, 3) uint8 by the band policy."""
    from geostrata.data.images import read_image

    return read_image(path, max_pixels=max_pixels)


def load_image_url(
    url: str,
    param: str,
    max_bytes: int,
    max_pixels: int,
    image_root: Path | None,
    decode: Decode = read_rgb,
) -> np.ndarray:
    """Decode the image at `url` with `decode` (the model's `ImageProcessor.decode`); every
    refusal is a ParamError naming `param`."""
    if url[:5].lower() == "data:":
        return _data_url(url, param, max_bytes, max_pixels, decode)
    scheme = re.match(r"([a-z][a-z0-9+.-]*)://", url, re.I)
    if scheme and scheme[1].lower() != "file":
        raise ParamError(
            f"{scheme[1]} URLs are not fetched: send the image as a base64 data: URL", param
        )
    name = url[scheme.end() :] if scheme else url
    return _local_file(name, param, max_bytes, max_pixels, image_root, decode)


def _data_url(url: str, param: str, max_bytes: int, max_pixels: int, decode: Decode) -> np.ndarray:
    match = DATA_URL.match(url)
    if match is None:
        raise ParamError("malformed data URL: expected data:image/png;base64,<data>", param)
    mime = (match["mime"] or "").lower()
    if mime not in SUFFIXES:
        raise ParamError(
            f"image type {mime or '(none)'!r} unsupported; send PNG, JPEG or TIFF", param
        )
    payload = url[match.end() :]
    if len(payload) // 4 * 3 > max_bytes:  # base64 holds 3 bytes per 4 characters
        raise ParamError(
            f"image of about {len(payload) // 4 * 3 / 2**20:.1f} MB; the limit is "
            f"{max_bytes / 2**20:.0f} MB",
            param,
        )
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ParamError(f"the data URL's base64 is invalid: {exc}", param) from exc
    return _decode_bytes(data, SUFFIXES[mime], param, max_pixels, decode)


def _decode_bytes(
    data: bytes, suffix: str, param: str, max_pixels: int, decode: Decode
) -> np.ndarray:
    """`decode` on a private temp copy; its messages name the request field, not the file."""
    with tempfile.TemporaryDirectory(prefix="geostrata-api-") as folder:
        path = Path(folder) / f"image{suffix}"
        path.write_bytes(data)  # a private scratch copy, deleted with the folder
        try:
            return decode(path, max_pixels)
        except ImageError as exc:
            raise ParamError(str(exc).replace(str(path), param), param) from exc


def _local_file(
    name: str,
    param: str,
    max_bytes: int,
    max_pixels: int,
    image_root: Path | None,
    decode: Decode,
) -> np.ndarray:
    if image_root is None:
        raise ParamError(
            "local image paths are disabled: send a data: URL, or start the server with "
            "--image-root",
            param,
        )
    root = image_root.resolve()
    path = (root / name).resolve()  # an absolute `name` replaces root, then is checked below
    if not path.is_relative_to(root):
        raise ParamError(f"{name!r} is outside the server's image root", param)
    size = path.stat().st_size if path.is_file() else 0
    if size > max_bytes:
        raise ParamError(
            f"{name!r} is {size / 2**20:.1f} MB; the limit is {max_bytes / 2**20:.0f} MB", param
        )
    try:
        return decode(path, max_pixels)
    except ImageError as exc:
        raise ParamError(str(exc).replace(str(path), repr(name)), param) from exc
