"""CLI command groups; each module owns one group and stays thin over the library."""

import typer

DEVICE_HELP = "auto (this process's GPU if there is one, else the CPU), cpu, cuda or cuda:N."
DECODE_HELP = (
    "How answers are decoded: dynamic (growing KV cache), static (preallocated cache) or compiled "
    "(static cache + torch.compile / CUDA graphs: fastest per token on a GPU, first call compiles)."
)
KB_EXTRA_HELP = (
    "Knowledge-base entry file (JSONL / YAML) added for this run only, e.g. classes no training "
    "image showed; repeat for several."
)
KB_EXTRA_TRAIN_HELP = (
    "Knowledge-base entry file or folder (JSONL / YAML; a folder may hold a label_map.tsv) added "
    "to the base and kept in the saved model, e.g. entries describing your own classes (a label "
    "the base lacks gets an entry named after it otherwise); repeat for several."
)


def fail(exc: Exception) -> typer.Exit:
    """Print an error as one red line; raise the returned Exit (status 1)."""
    typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
    return typer.Exit(1)
