"""The `geostrata` command: a thin Typer app over the library.

Each command group lives in `geostrata.commands.<name>` and imports heavy libraries (torch,
transformers, faiss) only inside the command, so `geostrata --help` stays instant.
"""

import typer

from geostrata.commands import app as app_commands
from geostrata.commands import data, geo, kb, run, serving

app = typer.Typer(
    name="geostrata",
    help=(
        "GeoStrata: remote-sensing vision-language understanding with semantic-augmented "
        "multi-level alignment and semantic-aware experts.\n\n"
        "Start with `geostrata demo` (synthesize data, build the knowledge base, train, evaluate)."
    ),
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.add_typer(data.app, name="data", help="Synthesize, inspect and load remote-sensing data sets.")
app.add_typer(kb.app, name="kb", help="Build, query and validate the RS semantic knowledge base.")
run.register(app)
app_commands.register(app)
serving.register(app)
geo.register(app)


if __name__ == "__main__":  # pragma: no cover
    app()
