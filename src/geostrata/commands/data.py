"""`geostrata data ...`: synthesize, inspect and check data sets; cut chips from a labelled
scene."""

from pathlib import Path

import typer

app = typer.Typer(no_args_is_help=True)


@app.command()
def synth(
    out: Path = typer.Option(
        ..., "--out", help="Output folder (created; an earlier synthesis there is replaced)."
    ),
    n_train: int = typer.Option(2000, "--n-train", help="Training images."),
    n_test: int = typer.Option(500, "--n-test", help="Test images."),
    size: int = typer.Option(96, "--size", help="Image side in pixels."),
    seed: int = typer.Option(0, "--seed", help="Seed: same seed, same bytes."),
    workers: int = typer.Option(1, "--workers", help="Processes rendering images."),
    holdout: str = typer.Option(
        "",
        "--holdout",
        help="Classes kept out of training: K/F (fold K of F, seeded by --seed; every class is "
        "held out in one fold) or 'scene:airport,harbor;object:ship'.",
    ),
) -> None:
    """Generate the procedural synthetic RS benchmark (images, annotations, RSVQA, instruct)."""
    from geostrata.data.synthetic import Holdout, synthesize
    from geostrata.errors import GeoStrataError

    try:
        held = Holdout.parse(holdout, seed)
        root = synthesize(
            out, n_train, n_test, size, seed, workers=workers, progress=True, holdout=held
        )
    except GeoStrataError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from e
    typer.echo(f"wrote {n_train + n_test} images to {root}")
    if held.scenes or held.objects:
        typer.echo(f"held out of training: scenes {held.scenes}, objects {held.objects}")


@app.command()
def show(
    root: Path = typer.Argument(..., help="A folder written by `geostrata data synth`."),
    out: Path = typer.Option(Path("grid.png"), "--out", help="PNG to write."),
    n: int = typer.Option(16, "--n", help="How many images."),
    split: str = typer.Option("train", "--split", help="train or test."),
) -> None:
    """Draw a labelled grid: scene label, object boxes and the region grid of each image."""
    from geostrata.data.synthetic.show import render_grid
    from geostrata.errors import GeoStrataError

    try:
        path = render_grid(root, out, n=n, split=split)
    except GeoStrataError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from e
    typer.echo(f"wrote {path}")


@app.command()
def check(
    root: Path = typer.Argument(..., help="The data set's folder (or, for captions, its JSON)."),
    kind: str = typer.Option(
        ...,
        "--kind",
        help="synthetic, rsvqa, folder, instruct, geochat_bench, karpathy_captions, dior_rsvg "
        "or vrsbench (as data.kind).",
    ),
    split: list[str] = typer.Option(
        [],
        "--split",
        help="A split to check (repeatable): a split name, or for folder / instruct / "
        "geochat_bench a split file; vrsbench: caption, ground or vqa. Default: every one found.",
    ),
    prefix: str = typer.Option("LR", "--prefix", help="RSVQA file prefix: LR, USGS or SYN."),
    image_dir: str = typer.Option(None, "--image-dir", help="Image folder (as data.image_dir)."),
    image_ext: str = typer.Option(None, "--image-ext", help="RSVQA image extension."),
) -> None:
    """Validate a data set: counts per split and task, and every problem with its file and line.

    Exits 0 when nothing is wrong, 1 when problems or missing images were found, 2 when the
    data set cannot be checked at all (unknown kind, folder not found).
    """
    from rich.console import Console

    from geostrata.data.check import CheckOptions, check_dataset
    from geostrata.errors import GeoStrataError

    options = CheckOptions(tuple(split), prefix, image_dir, image_ext)
    try:
        with Console(stderr=True).status(f"checking {root} ({kind}) ..."):
            report = check_dataset(root, kind, options)
    except GeoStrataError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from e
    for line in report.lines():
        typer.echo(line)
    raise typer.Exit(0 if report.ok else 1)


@app.command()
def chips(
    raster: Path = typer.Argument(..., help="A georeferenced raster (any band count and type)."),
    labels: Path = typer.Argument(
        ..., help="Label polygons (gpkg / shp / geojson, any CRS) or a class raster."
    ),
    out: Path = typer.Option(..., "--out", help="Data set folder (replaced whole when done)."),
    size: int = typer.Option(..., "--size", min=1, help="Chip side in pixels."),
    field: str | None = typer.Option(None, "--field", help="The polygons' class attribute."),
    min_purity: float = typer.Option(
        0.8, "--min-purity", min=0.0, max=1.0, help="Fraction of a chip its class must cover."
    ),
    stride: int | None = typer.Option(
        None, "--stride", min=1, help="Pixels between chips (default --size: no overlap)."
    ),
    split: float = typer.Option(0.8, "--split", help="Fraction of each class in train.txt."),
    seed: int = typer.Option(0, "--seed", help="Seed of the train / test shuffle."),
    layer: str | None = typer.Option(None, "--layer", help="Vector layer (default: the first)."),
    names: str | None = typer.Option(
        None, "--names", help="Class raster value names, e.g. 1=water,2=forest."
    ),
) -> None:
    """Cut labelled chips from a scene into class folders that `train` and `eval` read."""
    from geostrata.commands import fail
    from geostrata.data.chips import ChipSettings, make_chips
    from geostrata.errors import GeoStrataError

    try:
        settings = ChipSettings(
            size=size,
            field=field,
            min_purity=min_purity,
            stride=stride,
            split=split,
            seed=seed,
            layer=layer,
            names=_value_names(names),
        )
        summary = make_chips(raster, labels, out, settings)
    except GeoStrataError as e:
        raise fail(e) from e
    typer.echo(f"{summary.total} chips from {summary.windows} windows in {summary.out}")
    skipped = ", ".join(f"{n} {why}" for why, n in summary.skipped.items())
    typer.echo(f"skipped: {skipped}")
    for name, by_split in summary.counts.items():
        typer.echo(f"  {name}: {by_split['train']} train, {by_split['test']} test")
    typer.echo(
        f"train on it with data.kind=folder data.root={summary.out} "
        "data.train_split=train.txt data.eval_split=test.txt"
    )


def _value_names(text: str | None) -> dict[int, str]:
    """Parse --names: "1=water,2=forest" -> {1: "water", 2: "forest"}."""
    from geostrata.errors import InputError

    names: dict[int, str] = {}
    for pair in (text or "").split(","):
        if not pair.strip():
            continue
        value, sep, name = pair.partition("=")
        try:
            if not sep or not name.strip():
                raise ValueError(pair)
            names[int(value)] = name.strip()
        except ValueError as exc:
            raise InputError(f"--names {text!r}: expected value=name pairs, e.g. 1=water") from exc
    return names
