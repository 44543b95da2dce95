"""`geostrata chat` and `geostrata serve` (being written)."""

import typer


def register(app: typer.Typer) -> None:
    """Attach chat and serve to the root app."""
