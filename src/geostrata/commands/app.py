"""`geostrata chat` (terminal) and `geostrata serve` (Gradio web app).

Both are thin: chat goes through geostrata.chat, serve through geostrata.app, and those call
only the inference API. Heavy imports stay inside the commands so `geostrata --help` is instant.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Annotated

import typer

from geostrata.commands import DEVICE_HELP, KB_EXTRA_HELP, fail
from geostrata.errors import GeoStrataError

CHECKPOINT_HELP = "Saved model folder (default: runs/demo/run/model, trained first if missing)."


def register(app: typer.Typer) -> None:
    """Attach chat and serve to the root app."""
    app.command(name="chat")(chat)
    app.command(name="serve")(serve)


def chat(
    image: Annotated[Path, typer.Argument(help="PNG, JPEG or GeoTIFF image to ask about.")],
    question: Annotated[
        str | None, typer.Option("--question", "-q", help="Ask once and exit.")
    ] = None,
    checkpoint: Annotated[Path | None, typer.Option(help=CHECKPOINT_HELP)] = None,
    max_new_tokens: Annotated[int, typer.Option(min=1, max=256, help="Answer length bound.")] = 16,
    device: Annotated[str, typer.Option(help=DEVICE_HELP)] = "auto",
    kb_extra: Annotated[list[Path] | None, typer.Option(help=KB_EXTRA_HELP)] = None,
) -> None:
    """Ask questions about an image; the answer streams, then the cues and router weights."""
    from rich.console import Console

    from geostrata.chat import interactive, open_session, stream_turn
    from geostrata.inference import check_question

    console = Console(highlight=False)
    try:
        if question is not None:
            check_question(question)  # refuse before the (slow) model load
        session = open_session(image, checkpoint, max_new_tokens, console, device, kb_extra or [])
        if question is None:
            interactive(session, console)
        else:
            stream_turn(session, question, console)
    except GeoStrataError as exc:
        raise fail(exc) from exc


def serve(
    checkpoint: Annotated[Path | None, typer.Option(help=CHECKPOINT_HELP)] = None,
    host: Annotated[
        str, typer.Option(help="Interface to bind; 0.0.0.0 exposes it to the network.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = 7860,
    device: Annotated[str, typer.Option(help=DEVICE_HELP)] = "auto",
    kb_extra: Annotated[list[Path] | None, typer.Option(help=KB_EXTRA_HELP)] = None,
) -> None:
    """Serve the GeoStrata web app: upload or pick an image, ask, see answer, cues and routing."""
    from rich.console import Console

    from geostrata.app import AppLimits, build_app, demo_samples, launch_app, private_cache
    from geostrata.chat import ensure_checkpoint
    from geostrata.device import resolve_device
    from geostrata.inference import load_model

    console = Console()
    try:
        resolve_device(device)
        checkpoint = ensure_checkpoint(checkpoint, console)
        loaded = load_model(checkpoint, device=device, knowledge_extra=kb_extra or [])
    except GeoStrataError as exc:
        raise fail(exc) from exc
    limits = AppLimits()
    samples = demo_samples(Path(loaded.cfg.data.root))
    console.print(f"serving on http://{host}:{port}  (Ctrl-C stops)")
    signal.signal(signal.SIGTERM, _exit_on_sigterm)  # so the upload cache is removed then too
    with private_cache():  # uploads live there, deleted as they age and all at exit
        launch_app(build_app(loaded, samples, limits), limits, samples, host, port)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)
