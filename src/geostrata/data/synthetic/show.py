"""A labelled contact sheet of a synthesized split: scene label, object boxes, region grid.

Meant for eyes: check that scenes look like plausible top-down aerial views and that the
annotations sit where the pixels are.
"""

import math
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from geostrata.data.synthetic.files import load_annotations, load_meta
from geostrata.data.synthetic.vocab import COUNTABLE, LAND_COVERS, spaced
from geostrata.errors import ImageError, InputError

COVER_KEYS = {"water": "W", "grass": "G", "forest_canopy": "F", "bare_soil": "B", "sand": "S",
              "pavement": "P", "cropland": "C"}  # fmt: skip
COVER_COLOURS = {"water": (40, 120, 235), "grass": (120, 220, 90), "forest_canopy": (20, 110, 40),
                 "bare_soil": (165, 110, 60), "sand": (240, 220, 120),
                 "pavement": (175, 175, 175), "cropland": (215, 195, 30)}  # fmt: skip
BOX_COLOURS = {"building": (255, 60, 60), "car": (255, 230, 0), "ship": (0, 230, 255),
               "airplane": (255, 0, 255), "storage_tank": (255, 150, 0), "tree": (120, 255, 0),
               "sports_court": (80, 120, 255)}  # fmt: skip
HEADER = 34


def _tile(root: Path, ann: dict, grid: int, scale: int, max_boxes: int) -> Image.Image:
    """One image, enlarged, with its region grid, a few object boxes and its labels."""
    path = root / ann["image"]
    try:
        img = Image.open(path).convert("RGB")
    except OSError as e:
        raise ImageError(f"{path}: cannot read image ({e})") from e
    side = img.width * scale
    img = img.resize((side, side), Image.NEAREST)
    tile = Image.new("RGB", (side, side + HEADER), (24, 24, 28))
    tile.paste(img, (0, HEADER))
    draw = ImageDraw.Draw(tile, "RGBA")
    font = ImageFont.load_default(size=13)
    small = ImageFont.load_default(size=9)
    cell = side / grid
    for r, row in enumerate(ann["regions"]["grid"]):
        for c, cover in enumerate(row):
            x, y = c * cell, HEADER + r * cell
            draw.rectangle((x, y, x + cell, y + cell), outline=(255, 255, 255, 90))
            draw.rectangle((x + 2, y + 2, x + 13, y + 13), fill=COVER_COLOURS[cover] + (230,))
            draw.text((x + 4, y + 2), COVER_KEYS[cover], fill=(0, 0, 0), font=small)
    things = [o for o in ann["objects"] if o["class"] in COUNTABLE][:max_boxes]
    for obj in things:
        x0, y0, x1, y1 = (v * scale for v in obj["box"])
        colour = BOX_COLOURS[obj["class"]]
        draw.rectangle((x0, y0 + HEADER, x1 - 1, y1 - 1 + HEADER), outline=colour)
    attrs = ann["attributes"]
    draw.text((4, 2), f"{spaced(ann['scene'])}  #{ann['id']}", fill=(255, 255, 255), font=font)
    kind = "urban" if attrs["urban"] else "rural"
    detail = f"{kind}, {attrs['density']}, {len(ann['objects'])} objects"
    draw.text((4, 18), detail, fill=(190, 190, 190), font=small)
    return tile


def _legend(width: int) -> Image.Image:
    """Cover letters and box colours, wrapped to the sheet's width."""
    font = ImageFont.load_default(size=12)
    entries = [(f"{COVER_KEYS[c]} = {spaced(c)}", COVER_COLOURS[c]) for c in LAND_COVERS]
    entries += [(f"[] {spaced(k)}", v) for k, v in BOX_COLOURS.items()]
    per_row = max(1, width // 150)
    legend = Image.new("RGB", (width, 20 * math.ceil(len(entries) / per_row) + 8), (24, 24, 28))
    draw = ImageDraw.Draw(legend)
    for i, (text, colour) in enumerate(entries):
        x, y = 8 + (i % per_row) * 150, 4 + (i // per_row) * 20
        draw.text((x, y), text, fill=colour, font=font)
    return legend


def render_grid(
    root: str | Path, out: str | Path, n: int = 16, split: str = "train", max_boxes: int = 8
) -> Path:
    """Draw the first n images of a split into a labelled grid PNG at `out`."""
    if n < 1:
        raise InputError(f"n={n}: need at least one image to show")
    root, out = Path(root), Path(out)
    grid = int(load_meta(root)["grid"])
    anns = load_annotations(root, split)
    ids = sorted(anns)[:n]
    scale = max(1, 192 // max(1, Image.open(root / anns[ids[0]]["image"]).width))
    tiles = [_tile(root, anns[i], grid, scale, max_boxes) for i in ids]
    cols = math.ceil(math.sqrt(len(tiles)))
    rows = math.ceil(len(tiles) / cols)
    tw, th, gap = tiles[0].width, tiles[0].height, 6
    width = cols * (tw + gap) + gap
    legend = _legend(width)
    sheet = Image.new("RGB", (width, rows * (th + gap) + gap + legend.height), (12, 12, 14))
    for k, tile in enumerate(tiles):
        sheet.paste(tile, (gap + (k % cols) * (tw + gap), gap + (k // cols) * (th + gap)))
    sheet.paste(legend, (0, rows * (th + gap) + gap))
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out
