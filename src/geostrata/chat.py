"""Chat about one image: a session with history, streamed answers and the evidence behind them.

Both `geostrata chat` and the bench use it; it calls only the inference API (`load_model`,
`stream_predict`). The model answers each question on its own (it was trained on single-turn
VQA), so the history is what the user sees, not context fed back into the prompt.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from geostrata.errors import GeoStrataError, InputError

DEFAULT_CHECKPOINT = Path("runs/demo/run/model")
DEMO_OUT = Path("runs/demo")
EXIT_WORDS = ("exit", "quit", ":q")
BAR_WIDTH = 10  # characters of a full router bar


@dataclass
class Turn:
    question: str
    prediction: Any  # geostrata.inference.Prediction


@dataclass
class ChatSession:
    """One image, the loaded model, and the questions asked so far."""

    loaded: Any  # geostrata.inference.LoadedModel
    image: np.ndarray  # decoded by the model's image processor: (H, W, 3) uint8 for RGB
    source: str = "image"  # what the image is called in messages (its path)
    max_new_tokens: int = 16
    history: list[Turn] = field(default_factory=list)

    def __post_init__(self) -> None:
        if type(self.max_new_tokens) is not int or not 1 <= self.max_new_tokens <= 256:
            raise InputError(
                f"max_new_tokens must be an integer in 1..256, got {self.max_new_tokens!r}"
            )

    def ask(self, question: str) -> Iterator[Any]:
        """Stream the growing Prediction for `question`; the finished turn joins the history.

        Raises InputError for an empty or over-long question here, before anything is computed
        or printed (the streaming itself is lazy).
        """
        from geostrata.inference import check_question

        return self._stream(check_question(question))

    def _stream(self, question: str) -> Iterator[Any]:
        from geostrata.inference import stream_predict

        pred = None
        for pred in stream_predict(
            self.loaded, self.image, question, max_new_tokens=self.max_new_tokens
        ):
            yield pred
        self.history.append(Turn(question, pred))


def open_session(
    image_path: str | Path,
    checkpoint: Path | None,
    max_new_tokens: int,
    console: Any,
    device: str | None = None,
    knowledge_extra: Sequence[str | Path] = (),
) -> ChatSession:
    """Read the image first (a bad file fails fast), then load (or first train) the model."""
    from geostrata.data.images import BandPolicy, read_bands
    from geostrata.device import resolve_device
    from geostrata.inference import load_model

    read_bands(image_path, BandPolicy(all_bands=True))  # a bad file fails before any loading
    resolve_device(device)  # a wrong device name fails before any training or loading
    checkpoint = ensure_checkpoint(checkpoint, console)
    loaded = load_model(checkpoint, device=device, knowledge_extra=knowledge_extra)
    image = loaded.processor.image_processor.decode(image_path)  # the bands the model takes
    return ChatSession(loaded, image, str(image_path), max_new_tokens)


def ensure_checkpoint(checkpoint: Path | None, console: Any) -> Path:
    """An explicit checkpoint is used as given; the default one is trained first if missing."""
    if checkpoint is not None:
        return Path(checkpoint)
    if (DEFAULT_CHECKPOINT / "model.safetensors").is_file():
        return DEFAULT_CHECKPOINT
    from geostrata.demo import run_demo

    console.print(
        f"[yellow]no model at {DEFAULT_CHECKPOINT}: training the quick demo model "
        f"into {DEMO_OUT} first (a few minutes on a laptop CPU)[/]"
    )
    run_demo(DEMO_OUT, "quick")
    return DEFAULT_CHECKPOINT


def scene_classes(loaded: Any) -> list[str]:
    """The synthetic scene classes of the model's training data (meta.json), plus the scene
    entries added for this run (`--kb-extra`)."""
    meta = Path(loaded.cfg.data.root) / "meta.json"
    try:
        known = json.loads(meta.read_text(encoding="utf-8")).get("scene_classes", [])
    except (OSError, ValueError, AttributeError):
        known = []
    added = [loaded.knowledge.get(i) for i in loaded.extra_ids]
    return [str(c) for c in known] + [e.name for e in added if e.level.value == "scene"]


# ---- terminal rendering ------------------------------------------------------------------------
def evidence_table(pred: Any) -> Any:
    """One compact row per level: router weight (number and bar) and the cues with scores."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(box=None, show_header=True, header_style="bold dim", pad_edge=False)
    for name in ("level", "router", "", "retrieved cues (score)"):
        table.add_column(name)
    for level in pred.router or pred.cues:
        weight = pred.router.get(level, 0.0)
        bar = "█" * round(weight * BAR_WIDTH)
        cues = ", ".join(
            f"{escape(c.name)} [dim]({c.score:.2f})[/]" for c in pred.cues.get(level, [])
        )
        table.add_row(f"[cyan]{level}[/]", f"{weight:.2f}", f"[magenta]{bar}[/]", cues or "-")
    return table


def stream_turn(session: ChatSession, question: str, console: Any) -> Any:
    """Ask, print the answer token by token, then the evidence; returns the final Prediction."""
    steps = session.ask(question)  # a bad question raises here, before the prompt is printed
    console.print("[bold green]geostrata>[/] ", end="")
    shown, pred = "", None
    for pred in steps:
        text = pred.answer
        console.print(
            text[len(shown) :] if text.startswith(shown) else f"\n{text}",
            end="",
            markup=False,
            highlight=False,
        )
        console.file.flush()
        shown = text
    console.print("" if shown else "[dim](empty answer)[/]")
    console.print(evidence_table(pred))
    return pred


def show_history(session: ChatSession, console: Any) -> None:
    from rich.markup import escape

    for i, turn in enumerate(session.history, 1):
        answer = escape(turn.prediction.answer) or "(empty)"
        console.print(f"[dim]{i}.[/] {escape(turn.question)} [dim]->[/] {answer}", highlight=False)


def interactive(session: ChatSession, console: Any, read: Callable[[str], str] = input) -> None:
    """Prompt loop until exit/quit or end of input; bad questions print a message and go on."""
    from rich.markup import escape

    console.print(
        f"[bold]Chatting about {escape(session.source)}[/] - type a question; "
        "`history` lists the turns, `exit` or Ctrl-D quits."
    )
    while True:
        try:
            question = read("you> ")
        except (EOFError, KeyboardInterrupt):
            console.print()
            return
        if question.strip().lower() in EXIT_WORDS:
            return
        if question.strip().lower() == "history":
            show_history(session, console)
            continue
        try:
            stream_turn(session, question, console)
        except GeoStrataError as exc:
            console.print("[red]error:[/]", escape(str(exc)), highlight=False)
