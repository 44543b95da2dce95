"""The API server's bounds and its errors in OpenAI's shape.

`ApiLimits` holds every bound. `Guard` (plain ASGI, in front of FastAPI) does everything that
must happen before the app sees a request: the API key; admission through the `Gate`
(`concurrency` requests at the model, `queue_size` more waiting, the next one a 429 at once, so
at most that many bodies are ever held in memory); the body size (a declared Content-Length over
the limit is refused unread, a chunked body read only up to the limit); the wait for a model slot
against the request's deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import asdict, dataclass
from typing import Any

from geostrata.errors import ConfigError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass(frozen=True)
class ApiLimits:
    """Bounds on one request and on the work the server takes on at once."""

    max_body_bytes: int = 32 * 2**20  # a 20 MB image is ~27 MB as base64
    max_image_bytes: int = 20 * 2**20  # decoded file size
    max_pixels: int = 25_000_000  # H * W, checked by the decoder before it allocates
    default_max_tokens: int = 16  # answers are short (VQA)
    max_tokens: int = 256  # the largest max_tokens a request may ask for
    concurrency: int = 2  # requests the model works on at once
    queue_size: int = 8  # requests waiting for a slot; one more gets a 429
    timeout_s: float = 60.0  # from arrival (queueing included) to the last token

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ConfigError(f"ApiLimits.{name} must be a positive number, got {value!r}")
        if self.default_max_tokens > self.max_tokens:
            raise ConfigError(
                f"ApiLimits.default_max_tokens={self.default_max_tokens} exceeds "
                f"max_tokens={self.max_tokens}"
            )


class ApiError(Exception):
    """A refusal with its HTTP status and OpenAI error fields."""

    def __init__(
        self,
        status: int,
        message: str,
        kind: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.kind, self.code, self.param = status, kind, code, param

    def body(self) -> dict[str, Any]:
        return error_body(str(self), self.kind, self.code, self.param)


def error_body(
    message: str, kind: str, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


class Gate:
    """Admission and model slots: `admit` refuses at once (429) when `concurrency` requests are
    running and `queue_size` more are admitted; `acquire` waits for one of the model slots."""

    def __init__(self, concurrency: int, queue_size: int) -> None:
        self._slots = asyncio.Semaphore(concurrency)
        self._admitted, self._capacity = 0, concurrency + queue_size

    def admit(self) -> None:
        if self._admitted >= self._capacity:
            raise ApiError(
                429,
                f"server busy: {self._capacity} requests already running or queued; retry later",
                "rate_limit_error",
                "rate_limit_exceeded",
            )
        self._admitted += 1

    def leave(self) -> None:
        self._admitted -= 1

    async def acquire(self, deadline: float) -> None:
        try:
            await asyncio.wait_for(self._slots.acquire(), max(deadline - time.monotonic(), 0.0))
        except TimeoutError:
            raise timeout_error() from None

    def release(self) -> None:
        self._slots.release()


def timeout_error() -> ApiError:
    return ApiError(504, "the request ran past the server's time limit", "timeout_error", "timeout")


class Guard:
    """ASGI middleware in front of the app, in this order: the Bearer key (when set); for the
    gated path, admission (else 429, the body discarded unparsed); the body, bounded in size and
    reading time; a model slot, waited for until the deadline (else 504). The slot is held until
    the app has sent its last byte, streams included. The deadline (monotonic seconds) is left
    in ``scope["state"]["deadline"]`` for the app."""

    def __init__(self, app: ASGIApp, api_key: str | None, limits: ApiLimits, gated: str) -> None:
        self.app, self.api_key, self.limits, self.gated = app, api_key, limits, gated
        self.gate = Gate(limits.concurrency, limits.queue_size)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        deadline = time.monotonic() + self.limits.timeout_s
        scope.setdefault("state", {})["deadline"] = deadline
        try:
            self._check_key(scope)
            gated = scope["path"] == self.gated and scope["method"] == "POST"
            if gated:
                self.gate.admit()
        except ApiError as exc:
            await _discard(receive, self.limits.max_body_bytes)  # a clean reply, not a reset
            await send_json(send, exc.status, exc.body())
            return
        try:
            await self._handle(scope, receive, send, gated, deadline)
        finally:
            if gated:
                self.gate.leave()

    async def _handle(
        self, scope: Scope, receive: Receive, send: Send, gated: bool, deadline: float
    ) -> None:
        try:
            body = await self._bounded_body(scope, receive)
            if gated:
                await self.gate.acquire(deadline)
        except ApiError as exc:
            await send_json(send, exc.status, exc.body())
            return
        try:
            await self.app(scope, _replay(body, receive), send)
        finally:
            if gated:
                self.gate.release()

    def _check_key(self, scope: Scope) -> None:
        if self.api_key is None:
            return
        given = _header(scope, b"authorization").removeprefix(b"Bearer ").strip()
        if not hmac.compare_digest(given, self.api_key.encode()):
            raise ApiError(
                401,
                "missing or wrong API key: send the header 'Authorization: Bearer <key>'",
                code="invalid_api_key",
            )

    async def _bounded_body(self, scope: Scope, receive: Receive) -> bytes:
        limit = self.limits.max_body_bytes
        declared = _header(scope, b"content-length")
        if declared.isdigit() and int(declared) > limit:
            raise _too_large(int(declared), limit)
        try:
            async with asyncio.timeout(self.limits.timeout_s):
                return await _read_body(receive, limit)
        except TimeoutError:
            raise ApiError(
                408, "the request body took too long to arrive", code="timeout"
            ) from None


async def _discard(receive: Receive, limit: int, seconds: float = 5.0) -> None:
    """Read and drop up to `limit` body bytes, so a refusal reaches the client before the close."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            size, more = 0, True
            while more and size <= limit:
                message = await receive()
                size += len(message.get("body", b""))
                more = message["type"] == "http.request" and message.get("more_body", False)


async def _read_body(receive: Receive, limit: int) -> bytes:
    chunks, size, more = [], 0, True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        if size > limit:
            raise _too_large(size, limit)
        more = message.get("more_body", False)
    return b"".join(chunks)


def _too_large(size: int, limit: int) -> ApiError:
    return ApiError(
        413,
        f"request body of {size} bytes or more; the limit is {limit} bytes",
        code="request_too_large",
    )


def _replay(body: bytes, receive: Receive) -> Receive:
    """The app reads the body once; later reads wait on the client (to see a disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


def _header(scope: Scope, name: bytes) -> bytes:
    return next((value for key, value in scope["headers"] if key.lower() == name), b"")


async def send_json(send: Send, status: int, body: dict[str, Any]) -> None:
    import json

    data = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(data))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})
