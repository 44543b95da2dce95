"""The OpenAI chat-completions request, as far as GeoStrata reads it, and the turn it answers.

Unknown request fields are ignored (OpenAI clients send many); the ones GeoStrata cannot honour
are validated (``n`` must be 1) or documented as ignored (``temperature``, ``top_p``: decoding is
greedy). The model answers one question about one image with the earlier turns about that image
as history, so a conversation is reduced to the last user turn's text, the last image in any
user message, and the user / assistant turns from that image's message on (:func:`last_turn`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from geostrata.errors import InputError

MAX_MESSAGES = 64
MAX_HISTORY_TURNS = 16  # earlier (question, answer) turns a request may carry


class ParamError(InputError):
    """A request value GeoStrata refuses; ``param`` names it as OpenAI errors do
    (``messages[1].content[0].image_url``)."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ImageURL(_Lenient):
    url: str
    detail: str | None = None  # accepted, ignored: the processor decides the resolution


class ContentPart(_Lenient):
    """A "text" part (with `text`) or an "image_url" part (with `image_url`)."""

    type: Literal["text", "image_url"]
    text: str | None = None
    image_url: ImageURL | None = None

    @model_validator(mode="after")
    def _has_its_field(self) -> ContentPart:
        if getattr(self, self.type) is None:
            raise ValueError(f'a "{self.type}" part needs a "{self.type}" field')
        return self


class Message(_Lenient):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: list[ContentPart] = Field(default_factory=list)

    @field_validator("content", mode="before")
    @classmethod
    def _text_as_part(cls, value: Any) -> Any:
        """Plain-string content is one text part (no union: errors name one field)."""
        if isinstance(value, str):
            return [{"type": "text", "text": value}]
        return [] if value is None else value


class StreamOptions(_Lenient):
    include_usage: bool = False


class ChatRequest(_Lenient):
    model: str
    messages: list[Message] = Field(min_length=1, max_length=MAX_MESSAGES)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)  # the newer name
    temperature: float | None = Field(default=None, ge=0, le=2)  # accepted; decoding is greedy
    top_p: float | None = Field(default=None, ge=0, le=1)  # accepted; decoding is greedy
    n: int = Field(default=1, ge=1, le=1)

    def answer_budget(self, default: int, ceiling: int) -> int:
        """Tokens to generate: max_completion_tokens, else max_tokens, else `default`."""
        asked = self.max_completion_tokens or self.max_tokens
        if asked is not None and asked > ceiling:
            name = "max_completion_tokens" if self.max_completion_tokens else "max_tokens"
            raise ParamError(f"{name}={asked} exceeds this server's limit of {ceiling}", name)
        return asked or default


@dataclass(frozen=True)
class Said:
    """The text of one or more consecutive messages of one role, and where it sits."""

    text: str
    param: str  # "messages[3]": its first message, for error messages


@dataclass(frozen=True)
class Turn:
    """What the model is asked: one question about one image, after earlier turns about it."""

    question: Said
    image_url: str
    image_param: str  # where the image sits in the request, for error messages
    history: tuple[tuple[Said, Said], ...] = ()  # earlier (question, answer) turns, oldest first


def last_turn(messages: list[Message]) -> Turn:
    """The question (the text of the last user message, with the user messages right before it
    that no assistant message answered), the conversation's last image, and the history: the
    user / assistant turns before the question, from the user message that holds the image on
    (earlier turns were about another image, or none).

    Consecutive messages of one role are one turn (texts joined by a space); system, developer
    and tool messages are left out; a turn without question text (an image alone) is no turn;
    messages after the last user message are ignored.
    """
    users = [i for i, m in enumerate(messages) if m.role == "user"]
    if not users:
        raise ParamError("no user message: the model answers the last user turn", "messages")
    image = _last_image(messages)
    if image is None:
        raise ParamError(
            "no image in the conversation: add an image_url part (a data: URL) to a user message",
            "messages",
        )
    url, param, at = image
    runs = _runs(messages[: users[-1] + 1], at)
    history = [
        (question, answer)
        for (role, question), (next_role, answer) in zip(runs, runs[1:-1], strict=False)
        if role == "user" and next_role == "assistant" and question.text.strip()
    ]
    if len(history) > MAX_HISTORY_TURNS:
        raise ParamError(
            f"the conversation has {len(history)} earlier turns about its image; the limit is "
            f"{MAX_HISTORY_TURNS}: send only the recent ones",
            "messages",
        )
    return Turn(runs[-1][1], url, param, tuple(history))


def _runs(messages: list[Message], start: int) -> list[tuple[str, Said]]:
    """(role, text) of each run of consecutive user or assistant messages from `start` on."""
    runs: list[tuple[str, Said]] = []
    for i in range(start, len(messages)):
        role = messages[i].role
        if role not in ("user", "assistant"):
            continue
        text = _text(messages[i])
        if runs and runs[-1][0] == role:
            said = runs[-1][1]
            runs[-1] = (role, Said(" ".join(t for t in (said.text, text) if t), said.param))
        else:
            runs.append((role, Said(text, f"messages[{i}]")))
    return runs


def _text(message: Message) -> str:
    return " ".join(p.text for p in message.content if p.text is not None)


def _last_image(messages: list[Message]) -> tuple[str, str, int] | None:
    """(url, param, message index) of the last image_url part of any user message."""
    found = None
    for i, message in enumerate(messages):
        if message.role != "user":
            continue
        for j, part in enumerate(message.content):
            if part.image_url is not None:
                found = (part.image_url.url, f"messages[{i}].content[{j}].image_url", i)
    return found
