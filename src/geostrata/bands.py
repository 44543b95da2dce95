"""Band-order conventions, defined once: which bands of an image are red, green and blue when
nothing says otherwise, by band count. The band policy (data/images.py) reads an image's R, G, B
by it; the band adapter (model/bands.py) starts by passing those bands through."""

from __future__ import annotations

SENTINEL2_RGB = (3, 2, 1)  # B4 (red), B3 (green), B2 (blue) in Sentinel-2's 12/13-band order
# 1 band: grey to all three; 3: as stored; 4: R, G, B, NIR order assumed (PlanetScope analytic is
# B, G, R, NIR: say rgb=(2, 1, 0)); 12 / 13: Sentinel-2 L2A / L1C. Other counts must be told.
DEFAULT_RGB: dict[int, tuple[int, int, int]] = {
    1: (0, 0, 0),
    3: (0, 1, 2),
    4: (0, 1, 2),
    12: SENTINEL2_RGB,
    13: SENTINEL2_RGB,
}
