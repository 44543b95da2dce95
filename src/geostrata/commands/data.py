"""`geostrata data ...`: synthesize, inspect and check data sets."""

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
