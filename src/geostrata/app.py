"""The GeoStrata web app (Gradio Blocks): talk about an image, see the answers and why.

The page keeps a conversation about one image: each question is asked with the earlier turns as
`history` (a new image or Clear starts over). It shows the streamed answers, the boxes they hold
drawn on the image (geostrata.overlay), the knowledge-base cues retrieved per semantic level
(with scores), the router's weight on each level's expert, and the top scene classes. A region
can be given as box coordinates: "Describe region" asks the region-description prompt
(`region_question`), or `{region}` in a question is replaced by the box text. All of it comes
from the one inference API (`stream_predict`). The request handlers are plain methods of
`Handlers`, returning dataclasses, so tests call them without a browser; `build_app` only wires
them to components. Every bound (file size, megapixels, question length, turns, queue) lives in
`AppLimits`, and a bad request becomes a message in the page, never a crashed worker.
"""

import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from geostrata.atomic import process_alive
from geostrata.boxes import Box
from geostrata.errors import ConfigError, GeoStrataError, InputError

logger = logging.getLogger(__name__)

IMAGE_TYPES = [".png", ".jpg", ".jpeg", ".tif", ".tiff"]
PREVIEW_SIDE = 256  # small tiles are shown enlarged (nearest neighbour) so details are visible
ERROR_ID, CHAT_ID, CUES_ID = "geostrata-error", "geostrata-chat", "geostrata-cues"
PREVIEW_ID, BOXES_ID = "geostrata-preview", "geostrata-boxes"
CSS = f"#{CHAT_ID} .message {{font-size: 1.15em}}"
REGION_SLOT = "{region}"  # where a question takes the region's box text
Turn = tuple[str, str]  # (question as asked, answer)
CACHE_PREFIX = "geostrata-app-"  # + PID + "-": the server's own Gradio cache folder


@dataclass(frozen=True)
class AppLimits:
    """Bounds on one request and on the server's work at once."""

    max_file_bytes: int = 20 * 1024 * 1024  # upload size
    max_pixels: int = 25_000_000  # decoded H * W (decompression-bomb guard)
    max_question_chars: int = 500  # the inference API's own bound is the ceiling
    max_new_tokens: int = 16
    max_turns: int = 16  # earlier turns a conversation keeps (oldest dropped); the prompt keeps
    # the newest that fit the processor's max_history_tokens
    concurrency: int = 2  # requests the model works on at once (2 CPU cores)
    queue_size: int = 32  # waiting requests beyond which new ones are turned away
    top_classes: int = 5
    cache_age_s: int = 900  # uploads and shown images older than this are deleted ...
    cache_sweep_s: int = 300  # ... by a sweep this often (Gradio's delete_cache)

    def __post_init__(self) -> None:
        from geostrata.inference import MAX_QUESTION_CHARS

        for name in (
            "max_file_bytes",
            "max_pixels",
            "max_question_chars",
            "max_new_tokens",
            "max_turns",
            "concurrency",
            "queue_size",
            "top_classes",
            "cache_age_s",
            "cache_sweep_s",
        ):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise ConfigError(f"AppLimits.{name} must be a positive integer, got {value!r}")
        if self.max_question_chars > MAX_QUESTION_CHARS:
            raise ConfigError(
                f"AppLimits.max_question_chars={self.max_question_chars} exceeds the "
                f"inference limit {MAX_QUESTION_CHARS}"
            )


@dataclass(frozen=True)
class Sample:
    path: Path
    caption: str


@dataclass
class ImageView:
    """What the page shows after an upload or a sample pick."""

    image: np.ndarray | None  # (H, W, 3) uint8 preview, None when the file was refused
    message: str = ""  # markdown; non-empty means something went wrong


@dataclass(frozen=True)
class Conversation:
    """The turns kept about one image (a page's state, per browser tab or API client session)."""

    image: str = ""  # the file the turns were about (Gradio keeps one path per upload content)
    turns: tuple[Turn, ...] = ()

    def about(self, path: str | Path | None) -> list[Turn]:
        """The turns to ask with about `path`: none when it is another image."""
        return list(self.turns) if path and str(path) == self.image else []


@dataclass
class AnswerView:
    """One update of the answer panel (the handler streams several)."""

    answer: str = ""
    cues: dict[str, list[tuple[str, float]]] = field(default_factory=dict)  # level -> (cue, score)
    router: dict[str, float] = field(default_factory=dict)  # level -> weight
    classes: dict[str, float] = field(default_factory=dict)  # class -> probability
    message: str = ""  # markdown; non-empty means the request was refused
    done: bool = False  # the last update of a request
    question: str = ""  # the question as asked (region box text in)
    history: list[Turn] = field(default_factory=list)  # the conversation to keep: the earlier
    # turns, and this one once it is answered
    boxes: list[Box] = field(default_factory=list)  # the boxes the answer holds, in order
    image: np.ndarray | None = None  # last update only: the shown image, region and boxes drawn
    box_text: str = ""  # last update only: the boxes in numbers (overlay.describe_boxes)


def demo_samples(data_dir: Path, count: int = 8) -> list[Sample]:
    """A few held-out images of the synthetic data, one per scene class where possible."""
    annotations = Path(data_dir) / "annotations" / "test.jsonl"
    if not annotations.is_file():
        return []
    samples: dict[str, Sample] = {}
    for line in annotations.read_text(encoding="utf-8").splitlines():
        record = json.loads(line) if line.strip() else {}
        scene, image = record.get("scene"), record.get("image")
        if scene and image and scene not in samples and (Path(data_dir) / image).is_file():
            samples[scene] = Sample(Path(data_dir) / image, scene.replace("_", " "))
        if len(samples) == count:
            break
    return list(samples.values())


def _error(text: str) -> str:
    return f"**⚠ {text}**"


class Handlers:
    """The app's request logic, free of Gradio so it can be tested directly."""

    def __init__(self, loaded: Any, limits: AppLimits, classes: list[str] | None = None) -> None:
        self.loaded, self.limits, self.classes = loaded, limits, classes or []

    def read(self, path: str | Path | None) -> np.ndarray:
        """Decode an uploaded file within the limits, as the model takes it (its image
        processor's `decode`), or raise a GeoStrataError saying why."""
        if not path:
            raise InputError("no image: upload one or pick a sample")
        path = Path(path)
        size = path.stat().st_size if path.is_file() else 0
        if size > self.limits.max_file_bytes:
            raise InputError(
                f"{path.name} is {size / 2**20:.1f} MB; the limit is "
                f"{self.limits.max_file_bytes / 2**20:.0f} MB"
            )
        if path.suffix.lower() not in IMAGE_TYPES:
            raise InputError(
                f"{path.name}: not a supported image type (use {', '.join(IMAGE_TYPES)})"
            )
        images = self.loaded.processor.image_processor
        return images.decode(path, max_pixels=self.limits.max_pixels)  # the processor's decoding

    def preview(self, path: str | Path | None) -> ImageView:
        """Show the uploaded image as the model will see it, or say why it cannot be used."""
        if not path:
            return ImageView(None)
        try:
            return ImageView(self.loaded.processor.image_processor.preview(self.read(path)))
        except (GeoStrataError, OSError) as exc:
            return ImageView(None, _error(_short(exc)))

    def ask(
        self,
        path: str | Path | None,
        question: str | None,
        history: Sequence[Sequence[str]] = (),
        region: str | None = None,
        describe: bool = False,
    ) -> Iterator[AnswerView]:
        """Stream the answer: cues and routing first, then the answer as it grows, then classes
        and the image with the answer's boxes (and the region) drawn.

        `history`: the conversation's earlier (question, answer) turns about this image, oldest
        first (the newest `max_turns` are kept); `region`: "x1,y1,x2,y2" (0-100) or empty;
        `describe`: ask the region-description prompt instead of `question`.
        """
        from geostrata.inference import check_question, stream_predict
        from geostrata.overlay import describe_boxes, draw_answer_boxes

        turns = [(str(q), str(a)) for q, a in history][-self.limits.max_turns :]
        try:
            box = parse_region(region)
            question = check_question(asked_question(question, box, describe))
            if len(question) > self.limits.max_question_chars:
                raise InputError(
                    f"the question has {len(question)} characters; the limit is "
                    f"{self.limits.max_question_chars}"
                )
            image = self.read(path)
            view = AnswerView()
            for pred in stream_predict(
                self.loaded,
                image,
                question,
                self.classes,
                self.limits.max_new_tokens,
                self.limits.top_classes,
                history=turns,
            ):
                view = _answer_view(pred, question, turns)
                yield view
            view.done = True
            view.history = [*turns, (question, view.answer)][-self.limits.max_turns :]
            picture = self.loaded.processor.image_processor.preview(image)  # (H, W, 3) uint8
            view.image = draw_answer_boxes(_enlarged(picture), view.boxes, box)
            view.box_text = describe_boxes(view.boxes, image.shape[1], image.shape[0])
            yield view
        except (GeoStrataError, OSError) as exc:
            yield AnswerView(message=_error(_short(exc)), done=True, history=turns)
        except Exception:  # the boundary of a request: log it, tell the user, keep serving
            logger.exception("request failed: question %r, image %s", question, path)
            yield AnswerView(
                message=_error("internal error while answering (see the server log)"),
                done=True,
                history=turns,
            )


def parse_region(text: str | None) -> Box | None:
    """The region field's text as a Box: four integers 0-100 (left, top, right, bottom) split by
    commas or spaces, "20,30,60,70"; empty -> None; anything else an InputError saying what is
    expected."""
    text = (text or "").strip()
    if not text:
        return None
    example = "e.g. 20,30,60,70 (left, top, right, bottom, each 0-100)"
    parts = [p for p in re.split(r"[\s,]+", text) if p]
    if len(parts) != 4 or not all(re.fullmatch(r"\d+", p) for p in parts):
        raise InputError(f"region {text[:40]!r}: write four integers x1,y1,x2,y2, {example}")
    try:
        return Box.of([int(p) for p in parts])
    except InputError as exc:
        raise InputError(f"region {text!r}: {exc}; {example}") from exc


def asked_question(question: str | None, region: Box | None, describe: bool) -> str:
    """The question to ask: the region-description prompt (`describe`), or `question` with
    REGION_SLOT replaced by the region's box text. A region without a place for it is refused,
    so it is never silently left out."""
    from geostrata.session.samples import region_question

    question = question or ""
    if describe:
        if region is None:
            raise InputError("Describe region needs a region: x1,y1,x2,y2, e.g. 20,30,60,70")
        return region_question(region)
    if REGION_SLOT in question:
        if region is None:
            raise InputError(f"the question uses {REGION_SLOT} but no region is given")
        return question.replace(REGION_SLOT, region.text())
    if region is not None and question.strip():
        raise InputError(
            f"a region is given: write {REGION_SLOT} in the question where it goes, press "
            "Describe region, or empty the region field"
        )
    return question


def _short(exc: Exception) -> str:
    """Error text for the page: a file's own name, not the server's upload path."""
    return re.sub(r"(?<![\w.])(?:/[^\s/:,'\"]+)+", lambda m: Path(m.group()).name, str(exc))


def _answer_view(pred: Any, question: str, history: list[Turn]) -> AnswerView:
    cues = {level: [(cue.name, cue.score) for cue in found] for level, found in pred.cues.items()}
    classes = {name.replace("_", " "): prob for name, prob in pred.class_probs}
    return AnswerView(
        pred.answer,
        cues,
        dict(pred.router),
        classes,
        question=question,
        history=history,
        boxes=pred.boxes,
    )


# ---- Gradio wiring -----------------------------------------------------------------------------
def build_app(
    loaded: Any, samples: list[Sample], limits: AppLimits, classes: list[str] | None = None
) -> Any:
    """The Blocks page, queued with the limits' concurrency bounds (launch with `launch_app`).

    `classes`: the scene classes to rank (default: the synthetic ones from the data's meta.json).
    """
    import gradio as gr

    from geostrata.chat import scene_classes

    handlers = Handlers(loaded, limits, scene_classes(loaded) if classes is None else classes)
    with gr.Blocks(
        title="GeoStrata",
        analytics_enabled=False,
        delete_cache=(limits.cache_sweep_s, limits.cache_age_s),
    ) as blocks:
        gr.Markdown(
            "## GeoStrata: ask about a remote-sensing image\nEach answer comes with its "
            "evidence: knowledge-base cues retrieved per semantic level, the router's "
            "weight on each level's expert, and the most likely scene classes. Follow-up "
            "questions keep the conversation; boxes in an answer are drawn on the image."
        )
        history = gr.State(Conversation())  # per browser tab
        with gr.Row():
            image = _image_column(gr, samples)
            inputs, out = _answer_column(gr, limits)
        _wire(gr, handlers, samples, image, inputs, out, history)
    blocks.queue(default_concurrency_limit=limits.concurrency, max_size=limits.queue_size)
    return blocks


def _wire(
    gr: Any,
    handlers: Handlers,
    samples: list[Sample],
    image: tuple[Any, Any, Any, Any],
    inputs: dict[str, Any],
    out: dict[str, Any],
    history: Any,
) -> None:
    """Events: a sample pick fills the upload; an upload (or Clear, or the chat's trash button)
    shows the image and starts a new conversation; Ask (or Enter) and Describe region stream
    the answer."""
    upload, preview, boxes, gallery = image
    question, region = inputs["question"], inputs["region"]
    outputs = [out["chat"], out["cues"], out["router"], out["classes"], out["error"]]
    outputs += [history, preview, boxes]

    def pick(evt: gr.SelectData) -> str | None:  # annotation read by Gradio: must be the class
        return str(samples[evt.index].path) if samples and 0 <= evt.index < len(samples) else None

    def show(path: str | None) -> tuple[Any, ...]:
        view = handlers.preview(path)
        return _enlarged(view.image), view.message, Conversation(), [], ""

    def answer(
        path: str | None, text: str | None, kept: Conversation, box: str | None
    ) -> Iterator[tuple[Any, ...]]:
        for view in handlers.ask(path, text, kept.about(path), box):
            yield _answer_outputs(gr, view, path)

    def describe(
        path: str | None, kept: Conversation, box: str | None
    ) -> Iterator[tuple[Any, ...]]:
        for view in handlers.ask(path, "", kept.about(path), box, describe=True):
            yield _answer_outputs(gr, view, path)

    private = {"api_visibility": "private"}
    reset = [preview, out["error"], history, out["chat"], boxes]
    gallery.select(pick, None, upload, **private)
    upload.change(show, upload, reset, **private)
    inputs["clear"].click(show, upload, reset, api_name="clear")
    out["chat"].clear(show, upload, reset, **private)  # the chat's own trash button
    asked = [upload, question, history, region]
    inputs["ask"].click(answer, asked, outputs, api_name="ask")
    question.submit(answer, asked, outputs, **private)
    inputs["describe"].click(describe, [upload, history, region], outputs, **private)


def _image_column(gr: Any, samples: list[Sample]) -> tuple[Any, Any, Any, Any]:
    with gr.Column(scale=2, min_width=300):
        upload = gr.File(
            label="Image (PNG, JPEG or GeoTIFF)",
            file_types=IMAGE_TYPES,
            type="filepath",
            elem_id="geostrata-upload",
            height=120,
        )
        preview = gr.Image(
            label="What the model sees (boxes of the last answer drawn on it)",
            interactive=False,
            height=280,
            format="png",  # lossless: drawn boxes keep their exact colour
            elem_id=PREVIEW_ID,
        )
        boxes = gr.Markdown(elem_id=BOXES_ID)
        gallery = gr.Gallery(
            [(str(s.path), s.caption) for s in samples],
            label="...or pick a sample",
            columns=4,
            height=250,
            allow_preview=False,
            interactive=False,
            buttons=[],
            elem_id="geostrata-samples",
            visible=bool(samples),
        )
    return upload, preview, boxes, gallery


def _answer_column(gr: Any, limits: AppLimits) -> tuple[dict[str, Any], dict[str, Any]]:
    with gr.Column(scale=3, min_width=400):
        chat = gr.Chatbot(
            label="Conversation about this image",
            elem_id=CHAT_ID,
            height=300,
            render_markdown=False,  # answers are plain text; box text stays as written
            feedback_options=None,
            buttons=[],
        )
        with gr.Row(equal_height=True):
            question = gr.Textbox(
                label="Question",
                placeholder=f"Is there a ship?   (or: What is in {REGION_SLOT}?)",
                scale=4,
                max_length=limits.max_question_chars,
                elem_id="geostrata-question",
            )
            ask = gr.Button("Ask", variant="primary", scale=1, elem_id="geostrata-ask")
        with gr.Row(equal_height=True):
            region = gr.Textbox(
                label=f"Region x1,y1,x2,y2 (0-100; {REGION_SLOT} in a question)",
                placeholder="20,30,60,70",
                scale=3,
                max_length=40,
                elem_id="geostrata-region",
            )
            describe = gr.Button("Describe region", scale=1, elem_id="geostrata-describe")
            clear = gr.Button("Clear", variant="secondary", scale=1, elem_id="geostrata-clear")
        error = gr.Markdown(elem_id=ERROR_ID)
        with gr.Row():
            router = gr.BarPlot(
                x="level",
                y="weight",
                y_lim=[0, 1],
                label="Router weight per level",
                height=200,
                elem_id="geostrata-router",
            )
            classes = gr.Label(
                num_top_classes=limits.top_classes,
                label="Top scene classes",
                elem_id="geostrata-classes",
            )
        cues = gr.Dataframe(
            headers=["level", "cues"],
            label="Retrieved knowledge-base cues (best first)",
            interactive=False,
            elem_id=CUES_ID,
            wrap=True,
            column_widths=["15%", "85%"],
        )
    inputs = {"question": question, "region": region, "ask": ask, "describe": describe}
    outputs = {"chat": chat, "cues": cues, "router": router, "classes": classes, "error": error}
    return {**inputs, "clear": clear}, outputs


def _enlarged(image: np.ndarray | None) -> np.ndarray | None:
    """Tiles smaller than PREVIEW_SIDE scaled up by a whole factor (nearest), others as they are."""
    if image is None or max(image.shape[:2]) >= PREVIEW_SIDE:
        return image
    factor = PREVIEW_SIDE // max(image.shape[:2])
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)  # (H*f, W*f, 3)


def _answer_outputs(gr: Any, view: AnswerView, path: str | None) -> tuple[Any, ...]:
    """(chat, cues, router, classes, error, conversation, image, boxes) for one update; the
    image and the box list change only on a request's last update."""
    import pandas as pd

    if view.message:
        gr.Warning(view.message.strip("*⚠ "))
    router = pd.DataFrame({"level": list(view.router), "weight": list(view.router.values())})
    cues = pd.DataFrame(
        [
            [level, " · ".join(f"{name} ({score:.2f})" for name, score in found)]
            for level, found in view.cues.items()
        ],
        columns=["level", "cues"],
    )
    drawn = view.image is not None
    image = view.image if drawn else gr.skip()
    boxes = _boxes_markdown(view.box_text) if drawn else gr.skip()
    classes = view.classes or None
    kept = Conversation(str(path or ""), tuple(view.history))
    return chat_messages(view), cues, router, classes, view.message, kept, image, boxes


def chat_messages(view: AnswerView) -> list[dict[str, str]]:
    """The Chatbot's messages: the kept turns, and the turn being answered ("…" while tokens
    are still coming)."""
    turns = list(view.history)
    if not view.done:
        turns.append((view.question, f"{view.answer} …"))
    return [
        message
        for question, answer in turns
        for message in (
            {"role": "user", "content": question},
            {"role": "assistant", "content": answer or "(no answer)"},
        )
    ]


def _boxes_markdown(text: str) -> str:
    if not text:
        return ""
    lines = "\n".join(f"- box {line}" for line in text.splitlines())
    return f"Boxes in the answer (x, y of 100 and in the image's pixels):\n\n{lines}"


@contextmanager
def private_cache() -> Iterator[Path]:
    """Gradio's upload and output cache in a folder of this server's own, removed on exit.

    Gradio keeps every upload (and every image it shows) under GRADIO_TEMP_DIR, /tmp/gradio by
    default, and leaves them there when the server stops. Build and launch the app inside this
    block: components take the folder when they are created. Folders of servers that were
    killed (their PID no longer runs) are removed when the next one starts.
    """
    _remove_dead_caches()
    folder = Path(tempfile.mkdtemp(prefix=f"{CACHE_PREFIX}{os.getpid()}-"))
    previous = os.environ.get("GRADIO_TEMP_DIR")
    os.environ["GRADIO_TEMP_DIR"] = str(folder)
    try:
        yield folder
    finally:
        if previous is None:
            os.environ.pop("GRADIO_TEMP_DIR", None)
        else:
            os.environ["GRADIO_TEMP_DIR"] = previous
        shutil.rmtree(folder, ignore_errors=True)


def _remove_dead_caches() -> list[Path]:
    """Remove this user's cache folders whose server process no longer exists."""
    removed = []
    for folder in Path(tempfile.gettempdir()).glob(f"{CACHE_PREFIX}*-*"):
        pid = folder.name[len(CACHE_PREFIX) :].split("-", 1)[0]
        try:
            mine = folder.is_dir() and folder.stat().st_uid == os.getuid()
        except OSError:
            continue
        if mine and pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def launch_app(
    blocks: Any,
    limits: AppLimits,
    samples: list[Sample],
    host: str = "127.0.0.1",
    port: int = 7860,
    block: bool = True,
) -> Any:
    """Start the server (blocking unless block=False); only the sample folders are served."""
    import gradio as gr

    theme = gr.themes.Default(
        font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"]
    )  # no web fonts: offline
    return blocks.launch(
        server_name=host,
        server_port=port,
        max_file_size=limits.max_file_bytes,
        allowed_paths=sorted({str(s.path.parent.resolve()) for s in samples}),
        prevent_thread_lock=not block,
        quiet=not block,
        show_error=False,
        share=False,
        inbrowser=False,
        ssr_mode=False,
        theme=theme,
        css=CSS,
    )
