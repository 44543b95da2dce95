"""The OpenAI-compatible app: ``GET /v1/models`` and ``POST /v1/chat/completions``.

A completion runs `geostrata.inference.stream_predict` step by step in worker threads (one token
per step), so the event loop stays free, the deadline is checked between tokens, and streaming
sends each token as an OpenAI ``chat.completion.chunk``. Image decoding and the prompt's forward
pass happen before any response starts: a bad image is a 400, never a half-sent stream. Earlier
user / assistant turns about the image are the prediction's history. The evidence (cues, router
weights, class scores, the answer's boxes, the prompt) rides in a ``geostrata`` field on each
choice. Every error is OpenAI's ``{"error": {...}}`` object, never a traceback.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException

from geostrata.api.bounds import (
    ApiError,
    ApiLimits,
    ASGIApp,
    Guard,
    error_body,
    timeout_error,
)
from geostrata.api.images import load_image_url
from geostrata.api.schema import ChatRequest, ParamError, Said, Turn, last_turn
from geostrata.errors import GeoStrataError, InputError

logger = logging.getLogger(__name__)

TOP_CLASSES = 5
CHAT_PATH = "/v1/chat/completions"


@dataclass(frozen=True)
class Served:
    """The model behind the API and how it is served."""

    loaded: Any  # geostrata.inference.LoadedModel
    name: str = "geostrata"  # the model id clients send
    limits: ApiLimits = field(default_factory=ApiLimits)
    image_root: Path | None = None  # local image paths allowed only under it
    classes: list[str] = field(default_factory=list)  # scene classes to score ([] skips it)
    created: int = field(default_factory=lambda: int(time.time()))


@dataclass(frozen=True)
class Answer:
    """The prediction so far and how many stream_predict steps produced it."""

    pred: Any  # geostrata.inference.Prediction
    steps: int = 1

    def advance(self, pred: Any) -> Answer:
        return Answer(pred, self.steps + 1)

    @property
    def completion_tokens(self) -> int:
        # stream_predict yields once before the first token, once per token and once at the end
        return max(self.steps - 2, 0)


class Steps:
    """A prediction iterator stepped in worker threads, refused past the deadline."""

    def __init__(self, steps: Iterator[Any], deadline: float) -> None:
        self._steps, self.deadline = steps, deadline

    async def next(self) -> Any | None:
        return await in_time(self.deadline, next, self._steps, None)

    async def drain(self, answer: Answer) -> Answer:
        while (pred := await self.next()) is not None:
            answer = answer.advance(pred)
        return answer

    def close(self) -> None:
        """End the generator now (frees its KV cache); it is never mid-step here, since a
        cancelled `next` waits for its worker thread."""
        self._steps.close()


async def in_time(deadline: float, work: Callable[..., Any], *args: Any) -> Any:
    """`work(*args)` in a worker thread, refused once the request's deadline has passed."""
    if time.monotonic() > deadline:
        raise timeout_error()
    return await anyio.to_thread.run_sync(work, *args)


def decode(served: Served, turn: Turn) -> Any:
    """The turn's image as the model takes it (its image processor's `decode`: (H, W, 3) uint8
    for an RGB model), within the served limits."""
    limits = served.limits
    return load_image_url(
        turn.image_url,
        turn.image_param,
        limits.max_image_bytes,
        limits.max_pixels,
        served.image_root,
        served.loaded.processor.image_processor.decode,  # the model's bands
    )


def checked(said: Said, answer: bool = False) -> str:
    """A question (or an earlier answer, which may be empty) fit for the prompt, or a 400
    naming its message."""
    from geostrata.inference import check_question

    if answer and not said.text.strip():
        return ""
    try:
        return check_question(said.text)
    except InputError as exc:
        role = "assistant reply" if answer else "user text"
        raise ParamError(f"{said.param} ({role}): {exc}", said.param) from exc


@dataclass(frozen=True)
class Reply:
    """The fields every object of one completion shares, and its JSON / SSE forms."""

    model: str
    prompt_tokens: int
    max_tokens: int
    image_size: tuple[int, int]  # (width, height) of the input image: the boxes' pixels
    id: str = field(default_factory=lambda: f"chatcmpl-{uuid.uuid4().hex}")
    created: int = field(default_factory=lambda: int(time.time()))

    def _head(self, kind: str) -> dict[str, Any]:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model}

    def finish_reason(self, answer: Answer) -> str:
        return "length" if answer.completion_tokens >= self.max_tokens else "stop"

    def usage(self, answer: Answer) -> dict[str, int]:
        done = answer.completion_tokens
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": done,
            "total_tokens": self.prompt_tokens + done,
        }

    def completion(self, answer: Answer) -> dict[str, Any]:
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": answer.pred.answer},
            "finish_reason": self.finish_reason(answer),
            "logprobs": None,
            "geostrata": self.evidence(answer.pred),
        }
        return {**self._head("chat.completion"), "choices": [choice], "usage": self.usage(answer)}

    def chunk(self, delta: dict[str, Any], finish: str | None = None, pred: Any = None) -> str:
        choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish}
        if pred is not None:
            choice["geostrata"] = self.evidence(pred)
        return sse({**self._head("chat.completion.chunk"), "choices": [choice]})

    def usage_chunk(self, answer: Answer) -> str:
        head = self._head("chat.completion.chunk")
        return sse({**head, "choices": [], "usage": self.usage(answer)})

    def evidence(self, pred: Any) -> dict[str, Any]:
        """The `geostrata` extension field: cues, router, class scores (as `geostrata predict`
        writes them), the answer's boxes (0-100 and in the input image's pixels), the prompt."""
        from geostrata.overlay import boxes_json
        from geostrata.predict import evidence

        boxes = boxes_json(pred.boxes, *self.image_size)
        return {**evidence(pred), **boxes, "prompt": pred.prompt}


def sse(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data)}\n\n"


async def stream_events(
    reply: Reply, first: Answer, steps: Steps, include_usage: bool
) -> AsyncIterator[str]:
    """The SSE body: role + evidence, one chunk per new piece of text, finish, [DONE].

    Errors after the stream has started cannot change the status: they go out as an error
    event (what OpenAI's clients raise on) and end the stream.
    """
    try:
        yield reply.chunk({"role": "assistant", "content": ""}, pred=first.pred)
        answer, sent = first, ""
        while (pred := await steps.next()) is not None:
            answer = answer.advance(pred)
            if pred.answer.startswith(sent) and len(pred.answer) > len(sent):
                yield reply.chunk({"content": pred.answer[len(sent) :]})
                sent = pred.answer
        yield reply.chunk({}, reply.finish_reason(answer), answer.pred)
        if include_usage:
            yield reply.usage_chunk(answer)
        yield "data: [DONE]\n\n"
    except (ApiError, GeoStrataError) as exc:
        yield sse(_as_api_error(exc).body())
    except Exception:  # the boundary of a request: log it, tell the client, keep serving
        logger.exception("streamed completion %s failed", reply.id)
        yield sse(error_body("internal error while answering (see the server log)", "server_error"))
    finally:
        steps.close()


def _as_api_error(exc: Exception) -> ApiError:
    if isinstance(exc, ApiError):
        return exc
    return ApiError(400, str(exc), param=getattr(exc, "param", None))


async def complete(served: Served, request: ChatRequest, deadline: float) -> Any:
    """One chat completion, JSON or streamed (the Guard holds its model slot until the end)."""
    from geostrata.inference import stream_predict

    if request.model != served.name:
        raise ApiError(
            404,
            f"model {request.model!r} is not served here; use {served.name!r}",
            code="model_not_found",
            param="model",
        )
    turn = last_turn(request.messages)
    question = checked(turn.question)
    history = [(checked(q), checked(a, answer=True)) for q, a in turn.history]
    limits = served.limits
    max_tokens = request.answer_budget(limits.default_max_tokens, limits.max_tokens)
    image = await in_time(deadline, decode, served, turn)  # (H, W, 3) uint8; errors: a 400
    reply = Reply(
        served.name,
        len(served.loaded.processor.prompt_ids(question, history)),  # image tokens included
        max_tokens,
        (image.shape[1], image.shape[0]),
    )
    predictions = stream_predict(
        served.loaded, image, question, served.classes, max_tokens, TOP_CLASSES, history=history
    )
    steps = Steps(predictions, deadline)
    first = Answer(await steps.next())  # prompt run: errors are still a 400
    if request.stream:
        usage = bool(request.stream_options and request.stream_options.include_usage)
        events = stream_events(reply, first, steps, usage)
        headers = {"Cache-Control": "no-cache"}
        return StreamingResponse(events, media_type="text/event-stream", headers=headers)
    try:
        answer = await steps.drain(first)
    finally:
        steps.close()
    return JSONResponse(reply.completion(answer))


def create_app(served: Served, api_key: str | None = None) -> ASGIApp:
    """The ASGI app: FastAPI routes behind the key / body-size `Guard`."""

    app = FastAPI(title="GeoStrata", docs_url=None, redoc_url=None, openapi_url=None)
    model = {
        "id": served.name,
        "object": "model",
        "created": served.created,
        "owned_by": "geostrata",
    }

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [model]}

    @app.get("/v1/models/{model_id}")
    async def get_model(model_id: str) -> dict[str, Any]:
        if model_id != served.name:
            raise ApiError(404, f"model {model_id!r} is not served here", code="model_not_found")
        return model

    @app.post(CHAT_PATH)
    async def chat_completions(body: ChatRequest, request: Request) -> Any:
        return await complete(served, body, request.state.deadline)

    add_error_handlers(app)
    return Guard(app, api_key, served.limits, gated=CHAT_PATH)


def add_error_handlers(app: Any) -> None:
    """Every failure becomes OpenAI's error object; only the server log sees a traceback."""

    def respond(exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    async def on_api_error(_: Any, exc: Exception) -> JSONResponse:
        return respond(_as_api_error(exc))

    async def on_invalid(_: Any, exc: RequestValidationError) -> JSONResponse:
        return respond(validation_error(list(exc.errors())))

    async def on_http(request: Request, exc: HTTPException) -> JSONResponse:
        where = f"{request.method} {request.url.path}"
        return respond(ApiError(exc.status_code, f"{where}: {exc.detail}"))

    async def on_crash(_: Any, exc: Exception) -> JSONResponse:
        # Starlette re-raises after this response, so uvicorn logs the traceback once
        body = error_body("internal server error (see the server log)", "server_error")
        return JSONResponse(body, status_code=500)

    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(GeoStrataError, on_api_error)
    app.add_exception_handler(RequestValidationError, on_invalid)
    app.add_exception_handler(HTTPException, on_http)
    app.add_exception_handler(Exception, on_crash)


def validation_error(errors: list[dict[str, Any]]) -> ApiError:
    """pydantic's first complaint as a 400 naming the field (`messages[0].role`)."""
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    if first.get("type") == "json_invalid":
        reason = first.get("ctx", {}).get("error", first.get("msg"))
        return ApiError(400, f"the body is not valid JSON: {reason}")
    loc = [p for p in first.get("loc", ()) if p != "body"]
    param = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".") or None
    return ApiError(400, f"{param or 'body'}: {first.get('msg', 'invalid')}{more}", param=param)


def serve(app: ASGIApp, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Run the app with uvicorn until interrupted."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, timeout_keep_alive=5, log_level="info")
