"""BandAdapter: C input bands -> the vision tower's three input channels.

Every tower GeoStrata uses (the HF ViTs, EfficientNet-Lite0, geoembed's ResNet-18) was built for
RGB. The adapter is a learned 1x1 convolution in front of the tower: each output channel is a
weighted sum of the C bands. It starts as the identity on the chosen R, G, B bands (weight 1
there, 0 elsewhere, bias 0), so a pretrained tower first sees exactly the RGB it was trained on,
and the NIR / SWIR weights, zero at first but with non-zero gradients, learn what the extra bands
add. Why this and not per-band tokens: the tower still runs once per image whatever C is (one
token set per band would multiply its cost by C), and nothing of the tower's pretraining is lost
at the start. The price: while the adapter trains the tower's features cannot be cached.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

TOWER_CHANNELS = 3


class BandAdapter(nn.Module):
    """(B, C, S, S) normalised bands -> (B, 3, S, S) tower input."""

    def __init__(self, in_bands: int, rgb: Sequence[int]) -> None:
        super().__init__()
        if len(rgb) != TOWER_CHANNELS or not all(0 <= b < in_bands for b in rgb):
            raise ValueError(f"rgb={tuple(rgb)}: three band indices below in_bands={in_bands}")
        # Plain parameters, not nn.Conv2d: HF's post_init re-initialises every Conv2d it finds.
        self.weight = nn.Parameter(torch.zeros(TOWER_CHANNELS, in_bands))  # (3, C)
        self.bias = nn.Parameter(torch.zeros(TOWER_CHANNELS))
        with torch.no_grad():
            self.weight[torch.arange(TOWER_CHANNELS), torch.tensor(list(rgb))] = 1.0

    @property
    def in_bands(self) -> int:
        return self.weight.shape[1]

    def forward(self, bands: torch.Tensor) -> torch.Tensor:
        if bands.shape[1] != self.in_bands:
            raise ValueError(
                f"pixel_values have {bands.shape[1]} bands, the band adapter takes {self.in_bands}"
            )
        kernel = self.weight.to(bands.dtype)[:, :, None, None]  # (3, C, 1, 1)
        return F.conv2d(bands, kernel, self.bias.to(bands.dtype))  # (B, 3, S, S)
