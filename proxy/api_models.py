"""The OpenAI request shapes the proxy accepts, validated with pydantic.

Only the fields the proxy acts on are typed; every other OpenAI parameter (``temperature``,
``top_p``, ``seed``…) is accepted and ignored, because chat.qwen.ai has no slot for it
(PROTOCOL.md §4.1, "Unsupported/ignored"). ``stop`` and ``max_tokens`` /
``max_completion_tokens`` have no slot either; the relay emulates them (:mod:`proxy.stop`).
``tools``, ``tool_choice`` and ``parallel_tool_calls`` are typed loosely here and checked field
by field by the chat front door (:mod:`proxy.frontdoors.openai_chat`), so errors name the exact
``param``.
"""

from __future__ import annotations

from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from proxy.errors import ClientRequestError, InvalidJSONError

__all__ = [
    "ChatCompletionRequest",
    "ChatMessage",
    "ImageGenerationRequest",
    "StreamOptions",
    "VideoGenerationRequest",
    "decode_json_body",
    "parse_body",
    "parse_chat_request",
]


class StreamOptions(BaseModel):
    """OpenAI ``stream_options``."""

    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class ChatMessage(BaseModel):
    """One OpenAI chat message. ``content`` is a string, a list of content parts, or null."""

    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[Any] | None = None
    tool_call_id: str | None = None


class ChatCompletionRequest(BaseModel):
    """``POST /v1/chat/completions`` body.

    ``enable_thinking`` (a Qwen-API extension) turns reasoning on for any model that supports
    it, like the ``-thinking`` model suffix does; ``size`` (an extension too) is the aspect ratio
    or ``WxH`` of an ``-image`` model's picture.
    """

    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    enable_thinking: bool | None = None
    n: int | None = Field(default=None, ge=1, le=1)
    stop: str | list[str] | None = Field(default=None, description="Up to 4 stop sequences.")
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    tools: list[Any] | None = None
    tool_choice: Any = None
    parallel_tool_calls: bool | None = Field(default=None, strict=True)
    size: str | None = Field(
        default=None, description="Qwen extension: aspect ratio or WxH for -image models."
    )


class ImageGenerationRequest(BaseModel):
    """``POST /v1/images/generations`` body (also the fields of ``/v1/images/edits``).

    ``size``: an OpenAI size (``1024x1024``…), any ``WxH`` or an aspect ratio (``16:9``);
    ``n``: 1 to 4 images (one upstream turn each); ``quality``, ``style``, ``user``… are
    accepted and ignored.
    """

    model_config = ConfigDict(extra="allow")
    prompt: str = Field(min_length=1)
    model: str | None = None
    n: int = Field(default=1, ge=1, le=4)
    size: str | None = None
    response_format: Literal["url", "b64_json"] | None = None


class VideoGenerationRequest(BaseModel):
    """``POST /v1/videos/generations`` body: ``prompt``, optional ``model`` and ``size``."""

    model_config = ConfigDict(extra="allow")
    prompt: str = Field(min_length=1)
    model: str | None = None
    size: str | None = None


def parse_body[M: BaseModel](model: type[M], obj: Any) -> M:
    """Validate a decoded body as ``model``. Raises :class:`ClientRequestError` naming the
    bad field."""
    if not isinstance(obj, dict):
        raise ClientRequestError("the request body must be a JSON object")
    try:
        return model.model_validate(obj)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first.get("loc", ()))
        msg = first.get("msg", "invalid value")
        raise ClientRequestError(f"invalid request: {loc}: {msg}", param=loc or None) from None


def parse_chat_request(obj: Any) -> ChatCompletionRequest:
    """Validate a decoded JSON body. Raises :class:`ClientRequestError` naming the bad field."""
    if not isinstance(obj, dict):
        raise ClientRequestError("the request body must be a JSON object")
    try:
        return ChatCompletionRequest.model_validate(obj)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first.get("loc", ()))
        msg = first.get("msg", "invalid value")
        raise ClientRequestError(f"invalid request: {loc}: {msg}", param=loc or None) from None


def decode_json_body(raw: bytes) -> Any:
    """Decode a request body as UTF-8 JSON (RFC 8259 §8.1: JSON text is UTF-8).

    A leading UTF-8 BOM is tolerated. Raises :class:`InvalidJSONError`; when the bytes are not
    UTF-8 but decode as GBK/GB18030 the message says so, since that is the usual cause of
    garbled Chinese on Windows clients (PROTOCOL.md §11.9).
    """
    if not raw.strip():
        raise InvalidJSONError("the request body is empty; send a JSON object")
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        hint = ""
        try:
            raw.decode("gb18030")
            hint = (
                " The bytes decode as GBK/GB18030: the client sent Chinese text in a legacy "
                "encoding. Send the body as UTF-8 (set the client's charset to UTF-8)."
            )
        except UnicodeDecodeError:
            pass
        raise InvalidJSONError(
            f"the request body is not valid UTF-8 (invalid byte at offset {exc.start}).{hint}",
            encoding_error=True,
        ) from None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidJSONError(f"the request body is not valid JSON: {exc}") from None
