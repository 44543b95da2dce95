"""Top-level verbs: demo, train, eval, ablate, chat, serve."""

import typer


def register(app: typer.Typer) -> None:
    """Attach the top-level verbs to the root app."""
    app.command()(demo)


def demo() -> None:
    """Run the whole pipeline end to end on the tiny preset (not complete yet: see README)."""
    typer.echo("geostrata demo: the pipeline is being assembled; nothing to run yet.")
    raise typer.Exit(1)
