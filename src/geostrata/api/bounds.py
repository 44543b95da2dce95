"""The API server's bounds and its errors in OpenAI's shape.

`ApiLimits` holds every bound. `Guard` (plain ASGI, in front of FastAPI) checks the API key and
the body size before the app sees a request: a declared Content-Length over the limit is refused
unread, and a chunked body is read only up to the limit. `Gate` admits `concurrency` requests to
the model and `queue_size` more to wait; the next one gets a 429 at once instead of piling up.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
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
    """At most `concurrency` holders; up to `queue_size` more wait; beyond that, ApiError(429)."""

    def __init__(self, concurrency: int, queue_size: int) -> None:
        self._slots = asyncio.Semaphore(concurrency)
        self._admitted, self._capacity = 0, concurrency + queue_size

    @property
    def admitted(self) -> int:
        return self._admitted

    @asynccontextmanager
    async def slot(self, timeout_s: float) -> AsyncIterator[None]:
        if self._admitted >= self._capacity:
            raise ApiError(
                429,
                f"server busy: {self._capacity} requests already running or queued; retry later",
                "rate_limit_error",
                "rate_limit_exceeded",
            )
        self._admitted += 1
        try:
            await asyncio.wait_for(self._slots.acquire(), max(timeout_s, 0.0))
        except TimeoutError:
            self._admitted -= 1
            raise timeout_error() from None
        try:
            yield
        finally:
            self._slots.release()
            self._admitted -= 1


def timeout_error() -> ApiError:
    return ApiError(504, "the request ran past the server's time limit", "timeout_error", "timeout")


class Guard:
    """ASGI middleware: Bearer key (when set), then the body bounded in size and reading time."""

    def __init__(self, app: ASGIApp, api_key: str | None, limits: ApiLimits) -> None:
        self.app, self.api_key, self.limits = app, api_key, limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            self._check_key(scope)
            body = await self._bounded_body(scope, receive)
        except ApiError as exc:
            await send_json(send, exc.status, exc.body())
            return
        await self.app(scope, _replay(body, receive), send)

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
