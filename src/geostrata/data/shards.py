"""Streaming data for corpora too large to list in memory: WebDataset-style tar shards.

A shard is a plain tar file; each sample is two consecutive members sharing a key: the image file
as stored (`<key>.png`, `.jpg`, `.tif`, ...) and its metadata (`<key>.json`). Plain tars can be
inspected with `tar tf`, copied to object storage, and read by the `webdataset` package too.

`write_shards` consumes any iterable of sample dicts one at a time (only the sample being written
is in memory) and writes each shard to a temporary name first, renaming it when complete, so a
crash never leaves a truncated shard under a final name. `ShardStream` reads shards sequentially
(tar streaming mode: no index, no seeking), gives each (rank, DataLoader worker) pair its own
subset of whole shards, optionally mixes samples through a bounded shuffle buffer, and decodes
images with the project's `read_image`, so the band policy and its errors are the same as for
files on disk.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import random
import tarfile
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch.utils.data import IterableDataset, get_worker_info

from geostrata.data.images import BandPolicy, read_image
from geostrata.errors import AnnotationError, ConfigError, DatasetNotFoundError, ImageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
MAGIC = ((b"\x89PNG\r\n\x1a\n", ".png"), (b"\xff\xd8\xff", ".jpg"), (b"II*\x00", ".tif"),
         (b"MM\x00*", ".tif"), (b"II+\x00", ".tif"), (b"MM\x00+", ".tif"), (b"BM", ".bmp"))
SHARD_NAME = "{prefix}-{index:06d}.tar"
MEMBER_MODE = 0o644

Sample = dict[str, Any]


@dataclass(frozen=True)
class RawSample:
    """One sample as read from a shard, before decoding: where it came from and its bytes."""

    shard: str
    key: str
    image_name: str  # the tar member holding the image, e.g. "000000012.png"
    image: bytes
    metadata: dict[str, Any]


# ---------------------------------------------------------------- writing
def write_shards(
    records: Iterable[Mapping[str, Any]],
    out_dir: str | Path,
    samples_per_shard: int,
    prefix: str = "shard",
) -> list[Path]:
    """Write `records` into tar shards of `samples_per_shard` samples; return the shard paths.

    A record holds its image either as `image` (encoded file bytes) or as `image_path` (a file
    whose bytes are copied unchanged); every other key goes into the JSON metadata, so the
    records of the project's loaders (`dataset.records`) can be written directly. `__key__`
    names the sample (default: its running index); keys must be unique within a shard.
    """
    if isinstance(samples_per_shard, bool) or not isinstance(samples_per_shard, int) \
            or samples_per_shard < 1:
        raise ConfigError(f"samples_per_shard must be an integer >= 1, got {samples_per_shard!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    writer: _ShardWriter | None = None
    try:
        for index, record in enumerate(records):
            if writer is None:
                writer = _ShardWriter(out / SHARD_NAME.format(prefix=prefix, index=len(paths)))
            writer.add(*_encode(record, index))
            if writer.count == samples_per_shard:
                paths.append(writer.close())
                writer = None
    except BaseException:
        if writer is not None:
            writer.abort()  # the shards completed so far stay; no partial one is left behind
        raise
    if writer is not None:
        paths.append(writer.close())
    return paths


class _ShardWriter:
    """One shard being written under a temporary name; `close()` renames it into place."""

    def __init__(self, path: Path) -> None:
        self.path, self.count = path, 0
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        self.tmp = Path(tmp)
        self.tar = tarfile.open(self.tmp, mode="w", format=tarfile.PAX_FORMAT)
        self.keys: set[str] = set()

    def add(self, key: str, suffix: str, image: bytes, metadata: bytes) -> None:
        if key in self.keys:
            raise AnnotationError(f"{self.path}: duplicate sample key {key!r}")
        self.keys.add(key)
        for name, data in ((key + suffix, image), (key + ".json", metadata)):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), MEMBER_MODE, 0  # mtime 0: reproducible
            self.tar.addfile(info, io.BytesIO(data))
        self.count += 1

    def abort(self) -> None:
        self.tar.close()
        self.tmp.unlink(missing_ok=True)

    def close(self) -> Path:
        self.tar.close()
        with self.tmp.open("rb") as handle:
            os.fsync(handle.fileno())
        os.replace(self.tmp, self.path)
        return self.path


def _encode(record: Mapping[str, Any], index: int) -> tuple[str, str, bytes, bytes]:
    """(key, image suffix, image bytes, JSON bytes) of one record."""
    if not isinstance(record, Mapping):
        raise AnnotationError(f"record {index}: expected a mapping, got {type(record).__name__}")
    key = str(record.get("__key__", f"{index:09d}"))
    if not key or "." in key or "/" in key:
        raise AnnotationError(f"record {index}: key {key!r} must be non-empty, without '.' or '/'")
    image, suffix = _image_bytes(record, index)
    metadata = {k: v for k, v in record.items() if k not in ("image", "__key__")}
    try:
        text = json.dumps(metadata, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise AnnotationError(f"record {index} (key {key!r}): metadata is not JSON: {err}") from err
    return key, suffix, image, text.encode("utf-8")


def _image_bytes(record: Mapping[str, Any], index: int) -> tuple[bytes, str]:
    if "image" in record:
        data = record["image"]
        if not isinstance(data, bytes | bytearray) or not data:
            raise AnnotationError(f"record {index}: 'image' must be non-empty encoded file bytes")
        return bytes(data), _sniff_suffix(bytes(data), index)
    if "image_path" not in record:
        raise AnnotationError(f"record {index}: needs 'image' (bytes) or 'image_path'")
    path = Path(record["image_path"])
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ImageError(f"{path}: cannot read image file (record {index}): {err}") from err
    suffix = path.suffix.lower()
    return data, suffix if suffix in IMAGE_SUFFIXES else _sniff_suffix(data, index)


def _sniff_suffix(data: bytes, index: int) -> str:
    for magic, suffix in MAGIC:
        if data.startswith(magic):
            return suffix
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    raise ImageError(f"record {index}: image bytes are not PNG, JPEG, TIFF, BMP or WebP")


# ---------------------------------------------------------------- reading
def list_shards(source: str | Path | Sequence[str | Path]) -> list[Path]:
    """A folder's `*.tar` files (sorted), one shard file, or the given list; missing ones raise."""
    if isinstance(source, str | Path):
        folder = Path(source)
        if folder.is_file():
            return [folder]
        if not folder.is_dir():
            raise DatasetNotFoundError(f"{folder}: shard folder not found")
        shards = sorted(folder.glob("*.tar"))
        if not shards:
            raise DatasetNotFoundError(f"{folder}: no *.tar shards in this folder")
        return shards
    shards = [Path(s) for s in source]
    missing = [str(s) for s in shards if not s.is_file()]
    if missing or not shards:
        raise DatasetNotFoundError(f"shard file(s) not found: {missing or 'empty list'}")
    return shards


def iter_raw_samples(shard: str | Path) -> Iterator[RawSample]:
    """Stream one shard's samples in order, grouping consecutive members by key.

    Streaming mode ("r|") reads the tar front to back and holds only the current member.
    """
    shard = str(shard)
    group: dict[str, Any] = {}
    try:
        with tarfile.open(shard, mode="r|") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                key, _, ext = member.name.rpartition("/")[2].partition(".")
                if group and group["key"] != key:
                    yield _complete(shard, group)
                    group = {}
                handle = tar.extractfile(member)
                data = handle.read() if handle is not None else b""
                group.setdefault("key", key)
                group[ext.lower()] = (member.name, data)
    except tarfile.TarError as err:
        raise AnnotationError(f"{shard}: corrupt or truncated shard: {err}") from err
    if group:
        yield _complete(shard, group)


def _complete(shard: str, group: dict[str, Any]) -> RawSample:
    key = group.pop("key")
    if "json" not in group:
        raise AnnotationError(f"{shard}: sample {key!r} has no {key}.json member")
    json_name, raw = group.pop("json")
    images = [(ext, v) for ext, v in group.items() if "." + ext.rpartition(".")[2] in
              IMAGE_SUFFIXES]
    if len(images) != 1:
        raise AnnotationError(f"{shard}: sample {key!r} needs exactly one image member, found "
                              f"{sorted(group) or 'none'}")
    try:
        metadata = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise AnnotationError(f"{shard}: member {json_name}: invalid JSON: {err}") from err
    if not isinstance(metadata, dict):
        raise AnnotationError(f"{shard}: member {json_name}: expected a JSON object")
    image_name, image = images[0][1]
    return RawSample(shard, key, image_name, image, metadata)


def shuffled(items: Iterable[Any], buffer_size: int, rng: random.Random) -> Iterator[Any]:
    """Mix a stream through a buffer of at most `buffer_size` items (0 or 1: unchanged order).

    The buffer fills first; then each new item replaces a random buffered one, which is yielded.
    At most `buffer_size` items are held at any time, whatever the stream's length.
    """
    if buffer_size <= 1:
        yield from items
        return
    buffer: list[Any] = []
    for item in items:
        if len(buffer) < buffer_size:
            buffer.append(item)
            continue
        slot = rng.randrange(buffer_size)
        buffer[slot], item = item, buffer[slot]
        yield item
    rng.shuffle(buffer)
    yield from buffer


def decode_sample(raw: RawSample, bands: BandPolicy | None = None) -> Sample:
    """The metadata plus `image` (H, W, 3) uint8, read through `read_image` from a temp file.

    A temp file (not Pillow on bytes) keeps one decoder path for every format, TIFF stacks
    included; a failure names the shard and the member instead of the temp file.
    """
    suffix = "." + raw.image_name.rpartition(".")[2]
    with tempfile.NamedTemporaryFile(suffix=suffix) as handle:
        handle.write(raw.image)
        handle.flush()
        try:
            image = read_image(handle.name, bands)  # (H, W, 3) uint8
        except ImageError as err:
            message = str(err).replace(handle.name, "").lstrip(": ")
            raise ImageError(f"{raw.shard}: member {raw.image_name}: {message}") from err
    return {**raw.metadata, "image": image, "__key__": raw.key, "__shard__": raw.shard}


class ShardStream(IterableDataset[Sample]):
    """Stream samples from tar shards, each rank x worker reading its own whole shards.

    Shards are dealt round-robin over `world_size * num_workers` readers (global reader id =
    rank * num_workers + worker id), so every sample is read exactly once per epoch. With
    `shuffle=True` the shard order is permuted by (seed, epoch), identically on every rank,
    and samples pass through a `shuffle_buffer`-sized buffer seeded by (seed, epoch, reader).
    `rank` / `world_size` default to torch.distributed's when it is initialised (as under
    `accelerate launch`), else 0 / 1; `train()` re-sets them from its Accelerator through
    `set_rank`. Ranks may get one shard more than others: train for a fixed number of steps, or
    write a multiple of (ranks x workers) equal shards.
    """

    def __init__(
        self,
        shards: str | Path | Sequence[str | Path],
        *,
        rank: int | None = None,
        world_size: int | None = None,
        shuffle: bool = False,
        shuffle_buffer: int = 1000,
        seed: int = 0,
        bands: BandPolicy | None = None,
        transform: Callable[[Sample], Sample] | None = None,
    ) -> None:
        super().__init__()
        self.shards = list_shards(shards)
        self.rank, self.world_size = _distributed(rank, world_size)
        if isinstance(shuffle_buffer, bool) or not isinstance(shuffle_buffer, int) \
                or shuffle_buffer < 0:
            raise ConfigError(f"shuffle_buffer must be an integer >= 0, got {shuffle_buffer!r}")
        self.shuffle, self.shuffle_buffer, self.seed = shuffle, shuffle_buffer, seed
        self.bands, self.transform = bands, transform
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Change the shuffle for the next pass (call on every rank before iterating)."""
        self.epoch = epoch

    def set_rank(self, rank: int, world_size: int) -> None:
        """Re-split the shards for this process; the training loop calls it from its Accelerator,
        so a stream built before the process group exists still reads its own shards."""
        self.rank, self.world_size = _distributed(rank, world_size)

    def reader_shards(self, worker_id: int = 0, num_workers: int = 1) -> list[Path]:
        """The shards reader (this rank, `worker_id` of `num_workers`) reads this epoch."""
        readers = self.world_size * num_workers
        if len(self.shards) < readers:
            raise ConfigError(
                f"{len(self.shards)} shard(s) cannot feed {self.world_size} rank(s) x "
                f"{num_workers} worker(s) = {readers} readers; write at least {readers} shards "
                "(smaller samples_per_shard) or use fewer workers"
            )
        order = list(self.shards)
        if self.shuffle:
            random.Random(f"{self.seed}:{self.epoch}").shuffle(order)
        return order[self.rank * num_workers + worker_id :: readers]

    def iter_reader(
        self, worker_id: int = 0, num_workers: int = 1, start: int = 0
    ) -> Iterator[Sample]:
        """Samples of one reader; `__iter__` calls this with the DataLoader worker's id.

        The first `start` samples of the pass are read (the shuffle needs them) but not decoded.
        """
        raw: Iterable[RawSample] = (s for shard in self.reader_shards(worker_id, num_workers)
                                    for s in iter_raw_samples(shard))
        if self.shuffle:
            reader = self.rank * num_workers + worker_id
            raw = shuffled(raw, self.shuffle_buffer,
                           random.Random(f"{self.seed}:{self.epoch}:{reader}"))
        for item in itertools.islice(raw, start, None):
            sample = decode_sample(item, self.bands)
            yield self.transform(sample) if self.transform else sample

    def iter_from(self, start: int) -> Iterator[Sample]:
        """This rank's pass from position `start` on, in one reader (no DataLoader workers).

        A resumed training run uses it to skip what it consumed before the crash without
        decoding those images again.
        """
        if isinstance(start, bool) or not isinstance(start, int) or start < 0:
            raise ConfigError(f"ShardStream.iter_from: start must be an integer >= 0, "
                              f"got {start!r}")
        return self.iter_reader(0, 1, start=start)

    def __iter__(self) -> Iterator[Sample]:
        info = get_worker_info()
        if info is None:
            return self.iter_reader(0, 1)
        return self.iter_reader(info.id, info.num_workers)


def _distributed(rank: int | None, world_size: int | None) -> tuple[int, int]:
    if rank is None or world_size is None:
        from geostrata.device import world

        group_rank, group_size = world()
        rank = group_rank if rank is None else rank
        world_size = group_size if world_size is None else world_size
    for name, value in (("rank", rank), ("world_size", world_size)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"ShardStream: {name} must be an integer, got {value!r}")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ConfigError(f"ShardStream: need 0 <= rank < world_size, got {rank} / {world_size}")
    return rank, world_size
