"""`geostrata data ...`: synthesize and inspect data sets."""

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
