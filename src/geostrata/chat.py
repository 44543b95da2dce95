"""Chat about one image: a conversation, streamed answers and the evidence behind them.

Both `geostrata chat` and the bench use it; it calls only the inference API (`load_model`,
`stream_predict`). The conversation is the model's context: each question is asked with the
earlier turns as history (the processor writes them before it, oldest dropped first past
`max_history_tokens`), so a follow-up ("How many are there?", "What colour is it?") is answered
about what the previous turn was about; `/reset` starts the conversation again. Boxes in an
answer ({<x1><y1><x2><y2>}, geostrata.boxes) are listed and drawn on the image, written as a
PNG next to it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from geostrata.boxes import Box
from geostrata.errors import GeoStrataError, InputError

DEFAULT_CHECKPOINT = Path("runs/demo/run/model")
DEMO_OUT = Path("runs/demo")
EXIT_WORDS = ("exit", "quit", ":q")
RESET_WORDS = ("/reset", "reset")  # forget the conversation, keep the image
BAR_WIDTH = 10  # characters of a full router bar


@dataclass
class Turn:
    question: str
    prediction: Any  # geostrata.inference.Prediction


@dataclass
class ChatSession:
    """One image, the loaded model, and the conversation so far (the model's context)."""

    loaded: Any  # geostrata.inference.LoadedModel
    image: np.ndarray  # decoded by the model's image processor: (H, W, 3) uint8 for RGB
    source: str = "image"  # what the image is called in messages (its path)
    max_new_tokens: int = 16
    history: list[Turn] = field(default_factory=list)
    boxes_dir: Path | None = None  # where images with an answer's boxes go (None: not written)
    drawn: int = 0  # box images written so far (numbers their files)

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

    def turns(self) -> list[tuple[str, str]]:
        """The conversation as the model reads it: (question, answer) per turn, oldest first."""
        return [(t.question, t.prediction.answer) for t in self.history]

    def reset(self) -> None:
        """Forget the conversation (the next question is asked alone)."""
        self.history.clear()

    def _stream(self, question: str) -> Iterator[Any]:
        from geostrata.inference import stream_predict

        pred = None
        for pred in stream_predict(
            self.loaded,
            self.image,
            question,
            max_new_tokens=self.max_new_tokens,
            history=self.turns(),
        ):
            yield pred
        self.history.append(Turn(question, pred))

    def draw(self, boxes: Sequence[Box]) -> Path | None:
        """Write the image with `boxes` outlined and numbered (geostrata.overlay, as the app
        draws them) into `boxes_dir`; returns the file (None without a folder or a box)."""
        from PIL import Image

        from geostrata.atomic import write_atomic
        from geostrata.overlay import draw_answer_boxes

        if self.boxes_dir is None or not boxes:
            return None
        drawn = draw_answer_boxes(self.image, boxes)
        self.drawn += 1
        stem = Path(self.source).stem or "image"
        path = Path(self.boxes_dir) / f"{stem}.chat-{self.drawn}.png"
        return write_atomic(path, lambda f: Image.fromarray(drawn).save(f, format="PNG"))


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
    boxes_dir = Path(image_path).parent  # images with an answer's boxes go next to the image
    return ChatSession(loaded, image, str(image_path), max_new_tokens, boxes_dir=boxes_dir)


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
    show_boxes(session, pred.boxes, console)
    return pred


def show_boxes(session: ChatSession, boxes: Sequence[Box], console: Any) -> None:
    """List an answer's boxes (0-100 and pixels of the image) and where the image with them
    drawn was written."""
    from rich.markup import escape

    from geostrata.overlay import describe_boxes

    if not boxes:
        return
    height, width = session.image.shape[:2]
    for line in describe_boxes(boxes, width, height).splitlines():
        console.print(f"[cyan]box[/] {escape(line)}", highlight=False)
    try:
        path = session.draw(boxes)
    except OSError as exc:
        console.print(f"[yellow]could not write the image with the boxes: {escape(str(exc))}[/]")
        return
    if path is not None:
        console.print(f"[dim]drawn in[/] {escape(str(path))}", highlight=False)


def show_history(session: ChatSession, console: Any) -> None:
    from rich.markup import escape

    for i, turn in enumerate(session.history, 1):
        answer = escape(turn.prediction.answer) or "(empty)"
        console.print(f"[dim]{i}.[/] {escape(turn.question)} [dim]->[/] {answer}", highlight=False)


def interactive(session: ChatSession, console: Any, read: Callable[[str], str] = input) -> None:
    """Prompt loop until exit/quit or end of input; bad questions print a message and go on."""
    from rich.markup import escape

    console.print(
        f"[bold]Chatting about {escape(session.source)}[/] - type a question; follow-ups "
        "see the earlier turns. `history` lists them, `/reset` forgets them, `exit` or Ctrl-D "
        "quits."
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
        if question.strip().lower() in RESET_WORDS:
            session.reset()
            console.print("[dim]conversation cleared: the next question is asked alone[/]")
            continue
        try:
            stream_turn(session, question, console)
        except GeoStrataError as exc:
            console.print("[red]error:[/]", escape(str(exc)), highlight=False)
