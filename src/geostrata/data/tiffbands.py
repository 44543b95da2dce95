"""Read the chosen bands of a TIFF strip by strip (or tile by tile), in bounded memory.

tifffile's `asarray` decodes every band of an image into one array: a 13-band float64 image
of 5000 x 5000 pixels takes 2.6 GB before a single band is chosen, however small the file is
on disk. Here only the strips or tiles that hold a chosen band are decoded, one at a time, and
only the chosen bands are kept, so memory is the chosen bands plus one segment. Uncompressed
strips (tifffile writes a whole uncompressed image as one strip) are read a few rows at a time.

`plan(series)` says whether a series can be read this way (a `Layout`) or not (None: the caller
decodes it whole); `needed_bytes` is what reading chosen bands holds at once, known from the
header before any pixel is decoded; `read_bands` reads them as an (H, W, k) array.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

RAW_CHUNK_BYTES = 16 * 2**20  # uncompressed strips are read in row groups of about this size
READ_BUFFER_BYTES = 16 * 2**20  # compressed bytes tifffile reads from the file in one go
LAYOUTS = ("pages", "planar", "interleaved")


class TruncatedTiff(ValueError):
    """An uncompressed strip ends before its rows do."""


@dataclass(frozen=True)
class Layout:
    """Where each band of a TIFF series lives.

    kind: "pages" (one band per page: multi-page stacks, tifffile's default for (C, H, W)),
    "planar" (one page, PlanarConfiguration=2: one sample plane per band) or "interleaved"
    (one page, samples of a pixel side by side: (H, W, C)).
    """

    kind: str
    pages: tuple[Any, ...]  # TiffPage / TiffFrame
    n_bands: int
    height: int
    width: int
    dtype: np.dtype  # native byte order
    segment_bytes: int  # decoded bytes of the largest strip / tile / raw row group held at once

    def needed_bytes(self, n_chosen: int) -> int:
        """Bytes held while reading `n_chosen` distinct bands: those bands plus one segment."""
        return self.height * self.width * n_chosen * self.dtype.itemsize + self.segment_bytes


def plan(series: Any) -> Layout | None:
    """The layout of `series` when it can be read band by band, else None."""
    pages = tuple(series.pages)
    if not pages or any(page is None for page in pages):
        return None
    key = pages[0].keyframe
    separate, depth, height, width, contig = (int(n) for n in key.shaped)
    if key.dtype is None or key.bitspersample not in (8, 16, 32, 64) or depth != 1:
        return None  # packed bits, depth stacks: read whole
    if key.dtype.kind not in "uif" or key.is_subsampled:
        return None
    spatial = [n for n in series.shape if n != 1]
    if len(pages) > 1:
        if separate * contig != 1 or spatial[-2:] != [height, width] or len(spatial) > 3:
            return None
        kind, n_bands = "pages", len(pages)
        if int(np.prod(spatial[:-2], dtype=np.int64)) != n_bands:
            return None
    elif separate > 1 and contig == 1:
        kind, n_bands = "planar", separate
    elif separate == 1:
        kind, n_bands = "interleaved", contig
    else:
        return None
    dtype = np.dtype(key.dtype).newbyteorder("=")
    return Layout(kind, pages, n_bands, height, width, dtype, _segment_bytes(key, dtype))


def read_bands(layout: Layout, bands: Sequence[int]) -> np.ndarray:
    """(H, W, len(bands)) array of the given 0-based bands, in the file's sample type."""
    out = np.empty((layout.height, layout.width, len(bands)), layout.dtype)
    if layout.kind == "interleaved":
        for segment, top, left in _segments(layout.pages[0], None):
            rows, cols = segment.shape[0], segment.shape[1]
            out[top : top + rows, left : left + cols] = segment[:, :, list(bands)]
        return out
    for band in dict.fromkeys(bands):  # each distinct band once, into every slot that wants it
        slots = [i for i, b in enumerate(bands) if b == band]
        page, plane = (
            (layout.pages[band], None) if layout.kind == "pages" else (layout.pages[0], band)
        )
        for segment, top, left in _segments(page, plane):
            rows, cols = segment.shape[0], segment.shape[1]
            out[top : top + rows, left : left + cols, slots] = segment[:, :, :1]
    return out


def _segment_bytes(key: Any, dtype: np.dtype) -> int:
    samples = int(key.shaped[4])  # contiguous samples travel together in each segment
    if key.is_tiled:
        rows, cols = int(key.tilelength), int(key.tilewidth)
    else:
        rows, cols = min(int(key.rowsperstrip), int(key.imagelength)), int(key.imagewidth)
    size = rows * cols * samples * dtype.itemsize
    if _raw_strips(key):
        row_bytes = max(1, cols * samples * dtype.itemsize)
        size = min(size, max(row_bytes, RAW_CHUNK_BYTES // row_bytes * row_bytes))
    return size


def _raw_strips(key: Any) -> bool:
    """Uncompressed strips whose rows can be read straight from the file."""
    return (
        not key.is_tiled
        and key.compression == 1
        and key.predictor == 1
        and key.fillorder == 1
        and key.bitspersample in (8, 16, 32, 64)
    )


def _segments(page: Any, plane: int | None) -> Iterator[tuple[np.ndarray, int, int]]:
    """Decoded pieces of one page as ((rows, cols, samples) array, top, left), clipped to the
    image; `plane` keeps only one sample plane of a planar page."""
    key = page.keyframe
    offsets, counts = list(page.dataoffsets), list(page.databytecounts)
    indices = list(range(len(offsets)))
    if plane is not None:  # segments are ordered plane by plane
        per_plane = len(offsets) // int(key.shaped[0])
        indices = indices[plane * per_plane : (plane + 1) * per_plane]
    if _raw_strips(key):
        yield from _raw_rows(page, offsets, counts, indices)
        return
    handle = page.parent.filehandle
    decode = key.decode
    height, width = int(key.imagelength), int(key.imagewidth)
    for data, index in handle.read_segments(
        [offsets[i] for i in indices],
        [counts[i] for i in indices],
        indices=indices,
        sort=True,
        buffersize=READ_BUFFER_BYTES,
    ):
        segment, (_, _, top, left, _), shape = decode(data, index, _fullsize=False)
        rows, cols = min(shape[1], height - top), min(shape[2], width - left)
        if segment is None:  # an empty segment: tifffile's no-data value
            segment = np.full((1, rows, cols, shape[3]), key.nodata, np.dtype(key.dtype))
        yield segment[0, :rows, :cols], top, left


def _raw_rows(
    page: Any, offsets: list[int], counts: list[int], indices: list[int]
) -> Iterator[tuple[np.ndarray, int, int]]:
    """Uncompressed strips, read from the file in row groups of about RAW_CHUNK_BYTES."""
    key = page.keyframe
    handle = page.parent.filehandle
    height, width, samples = int(key.imagelength), int(key.imagewidth), int(key.shaped[4])
    dtype = np.dtype(page.parent.byteorder + key.dtype.char)
    row_bytes = width * samples * dtype.itemsize
    per_strip = min(int(key.rowsperstrip), height)
    strips_per_plane = -(-height // per_strip)
    group = max(1, RAW_CHUNK_BYTES // row_bytes)
    for index in indices:
        top = (index % strips_per_plane) * per_strip
        rows = min(per_strip, height - top)
        if counts[index] < rows * row_bytes or offsets[index] <= 0:
            raise TruncatedTiff(
                f"strip {index} holds {counts[index]} bytes, {rows * row_bytes} expected"
            )
        for first in range(0, rows, group):
            n = min(group, rows - first)
            with handle.lock:
                handle.seek(offsets[index] + first * row_bytes)
                data = handle.read(n * row_bytes)
            if len(data) < n * row_bytes:
                end = first * row_bytes + len(data)
                raise TruncatedTiff(f"strip {index} ends after {end} bytes")
            rows_array = np.frombuffer(data, dtype).reshape(n, width, samples)
            yield rows_array.astype(dtype.newbyteorder("="), copy=False), top + first, 0
