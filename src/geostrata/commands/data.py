"""`geostrata data ...`: synthesize and inspect data sets."""

import typer

app = typer.Typer(no_args_is_help=True)
