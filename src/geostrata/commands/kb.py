"""`geostrata kb ...`: build, query, inspect and validate the knowledge base."""

import typer

app = typer.Typer(no_args_is_help=True)
