"""`geostrata map`: classify every tile of a georeferenced scene (GeoJSON + overlay PNG).

Thin over geostrata.mapping; heavy imports stay inside the command so `--help` is instant.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from geostrata.commands import DEVICE_HELP, KB_EXTRA_HELP, fail
from geostrata.errors import GeoStrataError, InputError

BANDS_HELP = (
    "Scene bands that become R, G, B, 1-based as GDAL numbers them (e.g. 4,3,2 for Sentinel-2 "
    "B4,B3,B2 in a B1..B12 stack); default: the band policy (docs/data.md)."
)


def register(app: typer.Typer) -> None:
    app.command(name="map")(map_command)


def int_list(text: str, option: str) -> tuple[int, ...]:
    """Parse a list option: "4,3,2" -> (4, 3, 2), or an InputError naming the option."""
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError as exc:
        raise InputError(f"{option} {text!r}: expected comma-separated integers") from exc


def band_policy(text: str | None) -> Any:
    """--bands (1-based) -> BandPolicy (0-based), None when not given."""
    from geostrata.data.images import BandPolicy

    if text is None:
        return None
    bands = int_list(text, "--bands")
    if len(bands) != 3 or min(bands) < 1:
        raise InputError(f"--bands {text!r}: give three 1-based band numbers, e.g. 4,3,2")
    return BandPolicy(rgb=tuple(b - 1 for b in bands))


def map_classes(loaded: Any, given: str | None) -> list[str]:
    """--classes, else the classes the model was trained on: the synthetic set's (meta.json)
    or a folder data set's class folders, plus --kb-extra scene entries."""
    from geostrata.chat import scene_classes
    from geostrata.data.folder import SceneFolderDataset

    if given is not None:
        classes = [c.strip() for c in given.split(",") if c.strip()]
        if not classes:
            raise InputError("--classes is empty: give comma-separated class names")
        return classes
    known = scene_classes(loaded)
    data = loaded.cfg.data
    if not known and data.kind == "folder":
        try:
            known = list(SceneFolderDataset(data.root).classes)
        except GeoStrataError:
            known = []
    if not known:
        raise InputError(
            f"the classes of the model's training data ({data.kind} at {data.root}) are not "
            "known here: pass --classes a,b,c"
        )
    return known


def map_command(
    scene: Annotated[Path, typer.Argument(help="A georeferenced raster (GeoTIFF, VRT, JP2, ...).")],
    model: Annotated[Path, typer.Option(help="Saved model folder (what `train` / `demo` write).")],
    out: Annotated[Path, typer.Option(help="Folder for tiles.geojson and overlay.png.")],
    tile: Annotated[int, typer.Option(min=1, help="Tile side in scene pixels.")] = 256,
    overlap: Annotated[int, typer.Option(min=0, help="Pixels shared by neighbouring tiles.")] = 0,
    batch_size: Annotated[int, typer.Option(min=1, help="Tiles classified at once.")] = 16,
    bands: Annotated[str | None, typer.Option(help=BANDS_HELP)] = None,
    classes: Annotated[
        str | None, typer.Option(help="Comma-separated scene classes (default: the model's).")
    ] = None,
    max_nodata: Annotated[
        float, typer.Option(min=0, max=1, help="Skip tiles with more nodata than this fraction.")
    ] = 0.5,
    cloud_mask: Annotated[
        Path | None, typer.Option(help="Cloud mask raster (any grid / CRS; nonzero = cloud).")
    ] = None,
    cloud_values: Annotated[
        str | None, typer.Option(help="The mask's cloud codes, e.g. 3,8,9,10 (default nonzero).")
    ] = None,
    max_cloud: Annotated[
        float, typer.Option(min=0, max=1, help="Skip tiles with more cloud than this fraction.")
    ] = 0.5,
    to_wgs84: Annotated[
        bool, typer.Option("--to-wgs84", help="Write lon/lat WGS84, not the scene's CRS.")
    ] = False,
    preview_side: Annotated[int, typer.Option(min=16, help="Overlay size (longer side).")] = 1024,
    device: Annotated[str, typer.Option(help=DEVICE_HELP)] = "auto",
    kb_extra: Annotated[list[Path] | None, typer.Option(help=KB_EXTRA_HELP)] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Tile a georeferenced scene and classify every tile: scene class, land cover, cues."""
    from geostrata.inference import load_model
    from geostrata.mapping import MapSettings, check_scene, map_scene

    try:
        settings = MapSettings(
            tile=tile,
            overlap=overlap,
            batch_size=batch_size,
            bands=band_policy(bands),
            max_nodata=max_nodata,
            cloud_mask=cloud_mask,
            max_cloud=max_cloud,
            cloud_values=int_list(cloud_values, "--cloud-values") if cloud_values else (),
            to_wgs84=to_wgs84,
            preview_side=preview_side,
        )
        check_scene(scene, settings)  # a bad scene is refused before the (slow) model load
        loaded = load_model(model, device=device, knowledge_extra=kb_extra or [])
        summary = map_scene(loaded, scene, out, map_classes(loaded, classes), settings, progress)
    except GeoStrataError as exc:
        raise fail(exc) from exc
    skipped = ", ".join(f"{n} {why}" for why, n in summary.skipped.items()) or "none"
    typer.echo(
        f"{summary.tiles} tiles ({summary.tiles_per_s:.1f}/s): {summary.classified} classified, "
        f"skipped {skipped}"
    )
    for name, n in sorted(summary.class_counts.items(), key=lambda kv: -kv[1]):
        typer.echo(f"  {name}: {n}")
    typer.echo(f"wrote {summary.geojson} and {summary.overlay}")
