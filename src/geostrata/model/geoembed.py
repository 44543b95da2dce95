"""GeoEmbed V3 ResNet-18, an aerial-orthophoto tower, ported so its weights load into torch.

The PyPI package `geoembed==1.1.2` (MIT) ships `geoembed/weights/v3.npz`: a ResNet-18 trained
self-supervised on ~0.15 m/px orthophotos. Its own code runs on the netcl framework; this module
re-implements the network from the facts of that code (geoembed/arch.py, `NetCLResNet18` and
`TileEncoderV3`) and reads the npz with numpy only, importing neither netcl nor geoembed:

- input: RGB, 128 x 128 (bilinear resize), `(x / 255 - 0.5) / 0.5`, i.e. [-1, 1];
- stem: 3x3 conv, stride 1, padding 1, no bias -> BatchNorm -> ReLU, and *no* max-pool;
- four stages of two BasicBlocks (3x3 convs, padding 1, no bias), widths 64/128/256/512, strides
  1/2/2/2; a block whose stride or width changes has a 1x1 strided conv + BatchNorm shortcut;
- BatchNorm in inference mode with eps 1e-5 (netcl's default, which geoembed does not change);
- embedding head: layer4 average-pooled to 4 x 4 (kernel H//4, stride W//4, no padding),
  flattened channel-major to 8192, a linear layer to 256, then L2-normalised. netcl stores linear
  weights (in, out), so the npz `fc.weight` is (8192, 256), the transpose of torch's.

Module names mirror the npz keys (`bb.stem.0.weight`, `bb.layer2.0.short.1.running_var`,
`fc.bias`), so the loader maps one to one and checks every array's presence and shape.

Pyramid for GeoStrata. With a stride-1 stem the stages run at strides 1/2/4/8 and their
theoretical receptive fields are 11/25/53/109 px, i.e. about 1.6/3.7/8/16 m at 0.15 m/px on a
128 px (~19 m) tile. Three successive stages, as with EfficientNet's strides 8/16/32:

- scene = layer4 (stride 8, 512 channels, receptive field ~ the whole tile), globally pooled: the
  stage geoembed's own self-supervised embedding head reads, so the most tile-level semantics;
- region = layer3 (stride 4, 256 channels, ~8 m: roof parts, parcels, road segments), pooled to
  the region grid;
- object = layer2 (stride 2, 128 channels, ~3.7 m: cars, tree crowns, small structures), the
  finest stage past the plain-texture layer1; at 128 px it is 64 x 64 tokens, which the preset
  pools to 16 x 16 (`object_max_tokens=256`, the layer4 grid) so the feature cache stays small.
"""

from __future__ import annotations

import importlib.metadata
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from geostrata.errors import CheckpointError

GEOEMBED_REQUIREMENT = "geoembed==1.1.2"
WEIGHTS_FILE = "geoembed/weights/v3.npz"  # inside the installed distribution
BASE_WIDTH = 64
EMBED_DIM = 256
POOL_SIZE = 4  # layer4 is pooled to POOL_SIZE x POOL_SIZE before the embedding head
# Scalar arrays in the npz that describe the architecture; they must equal what we build.
METADATA: dict[str, int] = {
    "embed_dim": EMBED_DIM,
    "base_channels": BASE_WIDTH,
    "pool_size": POOL_SIZE,
}
STAGE_STRIDES: tuple[int, ...] = (1, 2, 2, 2)
LEVEL_CHANNELS: dict[str, int] = {  # layer4 / layer3 / layer2 widths: 512 / 256 / 128
    "scene": BASE_WIDTH * 8,
    "region": BASE_WIDTH * 4,
    "object": BASE_WIDTH * 2,
}
TRANSPOSED_KEYS: frozenset[str] = frozenset({"fc.weight"})  # stored (in, out) by netcl


def _conv3x3(cin: int, cout: int, stride: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=1e-5)


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers plus the identity, or a 1x1 conv-BN shortcut when shapes change."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = _conv3x3(cin, cout, stride)
        self.bn1 = _bn(cout)
        self.conv2 = _conv3x3(cout, cout, 1)
        self.bn2 = _bn(cout)
        self.short: nn.Module = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), _bn(cout))
            if stride != 1 or cin != cout
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(self.conv1(x)))  # (B, cout, H/s, W/s)
        h = self.bn2(self.conv2(h))  # (B, cout, H/s, W/s)
        return F.relu(h + self.short(x))  # (B, cout, H/s, W/s)


def _stage(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1))


@dataclass
class StageMaps:
    """Outputs of the three stages GeoStrata reads, for an S x S input."""

    layer2: torch.Tensor  # (B, 128, S/2, S/2)
    layer3: torch.Tensor  # (B, 256, S/4, S/4)
    layer4: torch.Tensor  # (B, 512, S/8, S/8)


class ResNet18Backbone(nn.Module):
    """geoembed's `NetCLResNet18`: stride-1 3x3 stem, no max-pool, four BasicBlock stages."""

    def __init__(self, base: int = BASE_WIDTH) -> None:
        super().__init__()
        self.stem = nn.Sequential(_conv3x3(3, base, 1), _bn(base), nn.ReLU())
        widths = [base * 2**i for i in range(len(STAGE_STRIDES))]  # 64, 128, 256, 512
        cins = [base, *widths[:-1]]
        self.layer1, self.layer2, self.layer3, self.layer4 = (
            _stage(cin, cout, stride)
            for cin, cout, stride in zip(cins, widths, STAGE_STRIDES, strict=True)
        )

    def forward(self, x: torch.Tensor) -> StageMaps:
        h = self.layer1(self.stem(x))  # (B, 64, S, S)
        l2 = self.layer2(h)  # (B, 128, S/2, S/2)
        l3 = self.layer3(l2)  # (B, 256, S/4, S/4)
        return StageMaps(layer2=l2, layer3=l3, layer4=self.layer4(l3))  # layer4: (B, 512, S/8, S/8)


class GeoEmbedResNet18(nn.Module):
    """The V3 tile encoder: `level_maps()` for GeoStrata, `forward()` for geoembed's embedding."""

    def __init__(self) -> None:
        super().__init__()
        self.bb = ResNet18Backbone()
        self.fc = nn.Linear(LEVEL_CHANNELS["scene"] * POOL_SIZE**2, EMBED_DIM)

    def level_maps(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, 3, S, S) in [-1, 1] -> level -> (B, C_level, h, w); see the module docstring."""
        maps = self.bb(x)
        return {"scene": maps.layer4, "region": maps.layer3, "object": maps.layer2}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) in [-1, 1] -> (B, 256) unit vectors, as geoembed's `Model.v3().encode`."""
        feat = self.bb(x).layer4  # (B, 512, S/8, S/8)
        h, w = feat.shape[-2:]
        if h < POOL_SIZE or w < POOL_SIZE:
            raise ValueError(f"input too small for the embedding head: layer4 is {h}x{w}")
        pooled = F.avg_pool2d(feat, kernel_size=h // POOL_SIZE, stride=w // POOL_SIZE)
        out = self.fc(pooled.flatten(1))  # (B, 4*4*512) -> (B, 256)
        return out / out.norm(dim=-1, keepdim=True).clamp_min(1e-8)  # (B, 256)


# ---- weights ---------------------------------------------------------------------------------


def packaged_weights_path() -> Path:
    """Where the installed `geoembed` distribution keeps v3.npz (its python code is not imported:
    importing geoembed needs netcl)."""
    hint = f"install it with `pip install --no-deps {GEOEMBED_REQUIREMENT}`"
    try:
        dist = importlib.metadata.distribution("geoembed")
    except importlib.metadata.PackageNotFoundError as err:
        raise CheckpointError(f"the geoembed package is not installed; {hint}") from err
    path = Path(str(dist.locate_file(WEIGHTS_FILE)))
    if not path.is_file():
        raise CheckpointError(f"{path}: geoembed {dist.version} has no {WEIGHTS_FILE}; {hint}")
    return path


def read_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Every array of an npz file (no pickles: object arrays are refused, not executed)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise CheckpointError(f"{path}: cannot read geoembed weights ({err})") from err


def expected_shapes(net: GeoEmbedResNet18) -> dict[str, tuple[int, ...]]:
    """npz key -> the shape the file must store it in, for every tensor the port loads."""
    shapes = {}
    for key, tensor in net.state_dict().items():
        if key.endswith("num_batches_tracked"):  # a torch training counter, not in the npz
            continue
        shape = tuple(tensor.shape)
        shapes[key] = shape[::-1] if key in TRANSPOSED_KEYS else shape
    return shapes


def _check_arrays(
    arrays: dict[str, np.ndarray], shapes: dict[str, tuple[int, ...]], path: str | Path
) -> None:
    """Raise CheckpointError naming every missing, mis-shaped, unexpected or mismatched array."""
    problems = []
    missing = sorted(set(shapes) - set(arrays))
    if missing:
        problems.append(f"missing arrays {missing}")
    wrong = [
        f"{k}: file {arrays[k].shape}, expected {shapes[k]}"
        for k in sorted(set(shapes) & set(arrays))
        if arrays[k].shape != shapes[k]
    ]
    if wrong:
        problems.append(f"wrong shapes [{'; '.join(wrong)}]")
    unexpected = sorted(set(arrays) - set(shapes) - set(METADATA))
    if unexpected:
        problems.append(f"unexpected arrays {unexpected}")
    for key, want in METADATA.items():
        value = arrays.get(key)
        if value is None or value.size != 1 or int(value.ravel()[0]) != want:
            shown = None if value is None else value.tolist()
            problems.append(f"{key}={shown}, expected {want}")
    if problems:
        raise CheckpointError(
            f"{path}: not the geoembed V3 ResNet-18 checkpoint: " + "; ".join(problems)
        )


def load_geoembed_weights(net: GeoEmbedResNet18, path: str | Path | None = None) -> None:
    """Load v3.npz (the installed package's by default) into `net`; any mismatch is fatal."""
    path = packaged_weights_path() if path is None else path
    arrays = read_npz(path)
    shapes = expected_shapes(net)
    _check_arrays(arrays, shapes, path)
    state = {
        key: torch.from_numpy(arrays[key].T if key in TRANSPOSED_KEYS else arrays[key])
        for key in shapes
    }
    net.load_state_dict(state, strict=False)  # not strict only for num_batches_tracked
