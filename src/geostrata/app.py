"""The GeoStrata web app (Gradio Blocks): ask about an image, see the answer and why.

The page shows the streamed answer, the knowledge-base cues retrieved per semantic level (with
scores), the router's weight on each level's expert, and the top scene classes. All of it comes
from the one inference API (`stream_predict`). The request handlers are plain methods of
`Handlers`, returning dataclasses, so tests call them without a browser; `build_app` only wires
them to components. Every bound (file size, megapixels, question length, queue) lives in
`AppLimits`, and a bad request becomes a message in the page, never a crashed worker.
"""

import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from geostrata.atomic import process_alive
from geostrata.errors import ConfigError, GeoStrataError, InputError

logger = logging.getLogger(__name__)

IMAGE_TYPES = [".png", ".jpg", ".jpeg", ".tif", ".tiff"]
PREVIEW_SIDE = 256  # small tiles are shown enlarged (nearest neighbour) so details are visible
ERROR_ID, ANSWER_ID, CUES_ID = "geostrata-error", "geostrata-answer", "geostrata-cues"
CSS = f"#{ANSWER_ID} p {{font-size: 1.5em; font-weight: 600; margin: 0.2em 0}}"
CACHE_PREFIX = "geostrata-app-"  # + PID + "-": the server's own Gradio cache folder


@dataclass(frozen=True)
class AppLimits:
    """Bounds on one request and on the server's work at once."""

    max_file_bytes: int = 20 * 1024 * 1024  # upload size
    max_pixels: int = 25_000_000  # decoded H * W (decompression-bomb guard)
    max_question_chars: int = 500  # the inference API's own bound is the ceiling
    max_new_tokens: int = 16
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


@dataclass
class AnswerView:
    """One update of the answer panel (the handler streams several)."""

    answer: str = ""
    cues: dict[str, list[tuple[str, float]]] = field(default_factory=dict)  # level -> (cue, score)
    router: dict[str, float] = field(default_factory=dict)  # level -> weight
    classes: dict[str, float] = field(default_factory=dict)  # class -> probability
    message: str = ""  # markdown; non-empty means the request was refused
    done: bool = False  # the last update of a request


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
        """Decode an uploaded file within the limits, or raise a GeoStrataError saying why."""
        from geostrata.model.processing import load_image

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
        return load_image(path, max_pixels=self.limits.max_pixels)  # the processor's decoding

    def preview(self, path: str | Path | None) -> ImageView:
        """Show the uploaded image as the model will see it, or say why it cannot be used."""
        if not path:
            return ImageView(None)
        try:
            return ImageView(self.read(path))
        except (GeoStrataError, OSError) as exc:
            return ImageView(None, _error(_short(exc)))

    def ask(self, path: str | Path | None, question: str | None) -> Iterator[AnswerView]:
        """Stream the answer: cues and routing first, then the answer as it grows, then classes."""
        from geostrata.inference import check_question, stream_predict

        try:
            question = check_question(question or "")
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
            ):
                view = _answer_view(pred)
                yield view
            view.done = True
            yield view
        except (GeoStrataError, OSError) as exc:
            yield AnswerView(message=_error(_short(exc)), done=True)
        except Exception:  # the boundary of a request: log it, tell the user, keep serving
            logger.exception("request failed: question %r, image %s", question, path)
            yield AnswerView(
                message=_error("internal error while answering (see the server log)"), done=True
            )


def _short(exc: Exception) -> str:
    """Error text for the page: a file's own name, not the server's upload path."""
    return re.sub(r"(?<![\w.])(?:/[^\s/:,'\"]+)+", lambda m: Path(m.group()).name, str(exc))


def _answer_view(pred: Any) -> AnswerView:
    cues = {level: [(cue.name, cue.score) for cue in found] for level, found in pred.cues.items()}
    classes = {name.replace("_", " "): prob for name, prob in pred.class_probs}
    return AnswerView(pred.answer, cues, dict(pred.router), classes)


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
            "## GeoStrata: ask about a remote-sensing image\nThe answer comes with its "
            "evidence: knowledge-base cues retrieved per semantic level, the router's "
            "weight on each level's expert, and the most likely scene classes."
        )
        with gr.Row():
            image = _image_column(gr, samples)
            question, ask, out = _answer_column(gr, limits)
        _wire(gr, handlers, samples, image, question, ask, out)
    blocks.queue(default_concurrency_limit=limits.concurrency, max_size=limits.queue_size)
    return blocks


def _wire(
    gr: Any,
    handlers: Handlers,
    samples: list[Sample],
    image: tuple[Any, Any, Any],
    question: Any,
    ask: Any,
    out: list[Any],
) -> None:
    """Events: a sample pick fills the upload, an upload is previewed, Ask (or Enter) streams."""
    upload, preview, gallery = image

    def pick(evt: gr.SelectData) -> str | None:  # annotation read by Gradio: must be the class
        return str(samples[evt.index].path) if samples and 0 <= evt.index < len(samples) else None

    def show(path: str | None) -> tuple[Any, str]:
        view = handlers.preview(path)
        return _enlarged(view.image), view.message

    def answer(path: str | None, text: str | None) -> Iterator[tuple[Any, ...]]:
        for view in handlers.ask(path, text):
            yield _answer_outputs(view)

    gallery.select(pick, None, upload, api_visibility="private")
    upload.change(show, upload, [preview, out[-1]], api_visibility="private")
    ask.click(answer, [upload, question], out, api_name="ask")
    question.submit(answer, [upload, question], out, api_visibility="private")


def _image_column(gr: Any, samples: list[Sample]) -> tuple[Any, Any, Any]:
    with gr.Column(scale=2, min_width=300):
        upload = gr.File(
            label="Image (PNG, JPEG or GeoTIFF)",
            file_types=IMAGE_TYPES,
            type="filepath",
            elem_id="geostrata-upload",
            height=120,
        )
        preview = gr.Image(
            label="What the model sees", interactive=False, height=280, elem_id="geostrata-preview"
        )
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
    return upload, preview, gallery


def _answer_column(gr: Any, limits: AppLimits) -> tuple[Any, Any, list[Any]]:
    with gr.Column(scale=3, min_width=400):
        with gr.Row(equal_height=True):
            question = gr.Textbox(
                label="Question",
                placeholder="Is there a ship?",
                scale=4,
                max_length=limits.max_question_chars,
                elem_id="geostrata-question",
            )
            ask = gr.Button("Ask", variant="primary", scale=1, elem_id="geostrata-ask")
        error = gr.Markdown(elem_id=ERROR_ID)
        answer = gr.Markdown(label="Answer", elem_id=ANSWER_ID, container=True)
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
    return question, ask, [answer, cues, router, classes, error]


def _enlarged(image: np.ndarray | None) -> np.ndarray | None:
    """Tiles smaller than PREVIEW_SIDE scaled up by a whole factor (nearest), others as they are."""
    if image is None or max(image.shape[:2]) >= PREVIEW_SIDE:
        return image
    factor = PREVIEW_SIDE // max(image.shape[:2])
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)  # (H*f, W*f, 3)


def _answer_outputs(view: AnswerView) -> tuple[Any, ...]:
    import pandas as pd

    if view.message:
        import gradio as gr

        gr.Warning(view.message.strip("*⚠ "))
    router = pd.DataFrame({"level": list(view.router), "weight": list(view.router.values())})
    cues = pd.DataFrame(
        [
            [level, " · ".join(f"{name} ({score:.2f})" for name, score in found)]
            for level, found in view.cues.items()
        ],
        columns=["level", "cues"],
    )
    return _answer_text(view), cues, router, view.classes or None, view.message


def _answer_text(view: AnswerView) -> str:
    """'Answer: yes' when done, with a trailing ellipsis while tokens are still coming."""
    if view.message:
        return ""
    if view.done:
        return f"Answer: {view.answer or '(no answer)'}"
    return f"Answer: {view.answer} …"


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
