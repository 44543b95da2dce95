"""`geostrata api` (OpenAI-compatible HTTP server) and `geostrata predict` (batch JSONL).

Both are thin: api goes through geostrata.api, predict through geostrata.predict, and those call
only the inference API. Heavy imports stay inside the commands so `geostrata --help` is instant.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated

import typer

from geostrata.commands import DECODE_HELP, DEVICE_HELP, KB_EXTRA_HELP, fail
from geostrata.errors import GeoStrataError, InputError

MODEL_HELP = "Saved model folder (what `geostrata train` / `demo` write, e.g. runs/demo/run/model)."
CLASSES_HELP = "Also rank the training data's scene classes (one extra scoring pass per image)."


def register(app: typer.Typer) -> None:
    """Attach api and predict to the root app."""
    app.command(name="api")(api)
    app.command(name="predict")(predict)


def _scene_classes(loaded: object, wanted: bool) -> list[str]:
    from geostrata.chat import scene_classes

    return scene_classes(loaded) if wanted else []


def api(
    model_dir: Annotated[Path, typer.Argument(help=MODEL_HELP)],
    host: Annotated[
        str, typer.Option(help="Interface to bind; 0.0.0.0 exposes it to the network.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = 8000,
    api_key: Annotated[
        str | None,
        typer.Option(envvar="GEOSTRATA_API_KEY", help="Require 'Authorization: Bearer KEY'."),
    ] = None,
    image_root: Annotated[
        Path | None,
        typer.Option(help="Allow image_url to name local files, only inside this folder."),
    ] = None,
    name: Annotated[str, typer.Option(help="The model id clients send.")] = "geostrata",
    classes: Annotated[bool, typer.Option("--classes", help=CLASSES_HELP)] = False,
    concurrency: Annotated[int, typer.Option(min=1, help="Requests answered at once.")] = 2,
    queue_size: Annotated[int, typer.Option(min=1, help="Requests waiting; then 429.")] = 8,
    timeout: Annotated[float, typer.Option(min=0.1, help="Seconds per request, then 504.")] = 60,
    device: Annotated[str, typer.Option(help=DEVICE_HELP)] = "auto",
    decode: Annotated[str, typer.Option(help=DECODE_HELP)] = "dynamic",
    kb_extra: Annotated[list[Path] | None, typer.Option(help=KB_EXTRA_HELP)] = None,
) -> None:
    """Serve an OpenAI-compatible API: POST /v1/chat/completions, GET /v1/models."""
    from geostrata.api import ApiLimits, Served, create_app, serve
    from geostrata.inference import load_model

    try:
        if image_root is not None and not image_root.is_dir():
            raise InputError(f"--image-root {image_root}: not a folder")
        limits = ApiLimits(concurrency=concurrency, queue_size=queue_size, timeout_s=timeout)
        loaded = load_model(
            model_dir, device=device, knowledge_extra=kb_extra or [], decode=decode
        )
    except GeoStrataError as exc:
        raise fail(exc) from exc
    if api_key is None and not _is_loopback(host):
        typer.secho(
            f"warning: {host} is reachable from the network and no --api-key is set",
            fg=typer.colors.YELLOW,
            err=True,
        )
    served = Served(loaded, name, limits, image_root, _scene_classes(loaded, classes))
    typer.echo(f"OpenAI-compatible API on http://{host}:{port}/v1 (model {name!r}; Ctrl-C stops)")
    serve(create_app(served, api_key), host, port)


def _is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def predict(
    model_dir: Annotated[Path, typer.Argument(help=MODEL_HELP)],
    inputs: Annotated[
        str,
        typer.Argument(
            help='A folder of images, a glob, an image, or a JSONL of {"image", '
            '"question"} rows (paths relative to the JSONL).'
        ),
    ],
    out: Annotated[Path, typer.Option(help="Predictions JSONL; an earlier run's is resumed.")],
    question: Annotated[
        list[str] | None,
        typer.Option("--question", "-q", help="Asked of every input without its own (repeatable)."),
    ] = None,
    max_new_tokens: Annotated[int, typer.Option(min=1, max=256, help="Answer length bound.")] = 16,
    classes: Annotated[bool, typer.Option("--classes", help=CLASSES_HELP)] = False,
    device: Annotated[str, typer.Option(help=DEVICE_HELP)] = "auto",
    decode: Annotated[str, typer.Option(help=DECODE_HELP)] = "dynamic",
    kb_extra: Annotated[list[Path] | None, typer.Option(help=KB_EXTRA_HELP)] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Answer questions about many images; one JSONL row each (answer, cues, router, timing)."""
    from geostrata.inference import load_model
    from geostrata.predict import collect_jobs, predict_all

    try:
        jobs = collect_jobs(inputs, question or [])  # refused before the (slow) model load
        loaded = load_model(
            model_dir, device=device, knowledge_extra=kb_extra or [], decode=decode
        )
        summary = predict_all(
            loaded, jobs, out, _scene_classes(loaded, classes), max_new_tokens, progress
        )
    except GeoStrataError as exc:
        raise fail(exc) from exc
    rate = summary.written / summary.seconds if summary.seconds else 0.0
    typer.echo(
        f"{summary.out}: {summary.written} rows written ({rate:.1f}/s), "
        f"{summary.skipped} already there, {summary.errors} errors"
    )
    if summary.errors:
        typer.secho(
            f'{summary.errors} image(s) could not be read: see the rows with "error"; '
            "running again retries them",
            fg=typer.colors.RED,
            err=True,
        )
        raise typer.Exit(1)
