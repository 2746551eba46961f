"""The OpenAI request shapes the proxy accepts, validated with pydantic.

Parameters are checked with OpenAI's types and ranges, strictly (no coercion: ``"0.5"`` is not
a number, ``"yes"`` is not a boolean), so a bad value is a 400 naming it in ``param`` as
OpenAI answers. Values of the right type that chat.qwen.ai has no slot for (``temperature``,
``top_p``, ``seed``, penalties…) are accepted and ignored (docs/protocol.md §4.1,
"Unsupported/ignored"); unknown fields are accepted too. ``stop`` and ``max_tokens`` /
``max_completion_tokens`` have no slot either; the relay emulates them (:mod:`proxy.stop`).
``tools``, ``tool_choice`` and ``parallel_tool_calls``, content parts, a tool message's
``tool_call_id`` and a ``json_schema`` format's ``json_schema`` are typed loosely here and
checked field by field by the chat front door (:mod:`proxy.frontdoors.openai_chat`), so errors
name the exact ``param``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, Strict, ValidationError

from proxy.errors import ClientRequestError, InvalidJSONError, clip

__all__ = [
    "MAX_JSON_DEPTH",
    "ChatCompletionRequest",
    "ChatMessage",
    "ImageGenerationRequest",
    "Metadata",
    "ResponseFormat",
    "StreamOptions",
    "VideoGenerationRequest",
    "check_json_depth",
    "decode_json",
    "decode_json_body",
    "json_text",
    "nests_too_deep",
    "parse_body",
    "parse_chat_request",
    "parse_form",
]


StrictBool = Annotated[bool, Strict()]
StrictInt = Annotated[int, Strict()]
#: a JSON number (an integer is a number; a boolean or a string is not)
Number = Annotated[float, Strict()]
_UNION_TAGS = frozenset({"str", "int", "float", "bool", "list", "dict", "none"})


def _param(loc: tuple[int | str, ...]) -> str:
    """A pydantic error location as OpenAI's ``param`` (``messages.0.content``), without the
    tags pydantic adds for union members (``stop.str`` → ``stop``)."""
    parts = [
        clip(str(p))  # a key of the client's (metadata, logit_bias) is a part too
        for p in loc
        if not (isinstance(p, str) and (p in _UNION_TAGS or "[" in p or "-" in p))
    ]
    return ".".join(parts)


def _has_text(prompt: str) -> str:
    if not prompt.strip():
        raise ValueError(
            "the prompt holds no text (only whitespace); this gateway refuses such a prompt, as "
            "it refuses chat messages with no text"
        )
    return prompt


def _token_id(key: str) -> str:
    if not (key.isascii() and key.isdigit()):
        raise ValueError("a logit_bias key must be a token id: an integer, as a string ('50256')")
    return key


#: ``logit_bias``: token ids (integers as strings) to a bias from -100 to 100
LogitBias = dict[
    Annotated[str, AfterValidator(_token_id)], Annotated[Number, Field(ge=-100, le=100)]
]


def _sixteen_pairs(value: dict[str, str]) -> dict[str, str]:
    if len(value) > 16:
        raise ValueError(f"metadata holds at most 16 key-value pairs, not {len(value)}")
    return value


#: OpenAI's ``metadata``: at most 16 string values, keys up to 64 characters, values up to 512
Metadata = Annotated[
    dict[Annotated[str, Field(max_length=64)], Annotated[str, Strict(), Field(max_length=512)]],
    AfterValidator(_sixteen_pairs),
]


#: a media prompt: at least one character that is not whitespace (the site answers a blank
#: prompt with nothing; chat refuses messages with no text for the same reason)
Prompt = Annotated[str, Field(min_length=1), AfterValidator(_has_text)]


class StreamOptions(BaseModel):
    """OpenAI ``stream_options``."""

    model_config = ConfigDict(extra="allow")
    include_usage: StrictBool = False


class ResponseFormat(BaseModel):
    """OpenAI ``response_format``: its ``type`` is checked; the format is not enforced."""

    model_config = ConfigDict(extra="allow")
    type: Literal["text", "json_object", "json_schema"]
    json_schema: dict[str, Any] | None = None


class ChatMessage(BaseModel):
    """One OpenAI chat message. ``content`` is a string, a list of content parts, or null."""

    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[Any] | None = None
    tool_call_id: str | None = None
    refusal: Annotated[str, Strict()] | None = None


class ChatCompletionRequest(BaseModel):
    """``POST /v1/chat/completions`` body.

    ``enable_thinking`` (a Qwen-API extension) turns reasoning on for any model that supports
    it, like the ``-thinking`` model suffix does; ``size`` (an extension too) is the aspect ratio
    or ``WxH`` of an ``-image`` model's picture.
    """

    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1, max_length=256, strict=True)
    messages: list[ChatMessage] = Field(min_length=1)
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    enable_thinking: StrictBool | None = None
    n: StrictInt | None = Field(default=None, ge=1, le=1)
    stop: Annotated[str, Strict()] | list[Annotated[str, Strict()]] | None = Field(
        default=None, description="Up to 4 stop sequences."
    )
    max_tokens: StrictInt | None = Field(default=None, ge=1)
    max_completion_tokens: StrictInt | None = Field(default=None, ge=1)
    tools: list[Any] | None = None
    tool_choice: Any = None
    parallel_tool_calls: StrictBool | None = None
    size: str | None = Field(
        default=None,
        strict=True,
        description="Qwen extension: aspect ratio or WxH for -image models.",
    )
    # OpenAI parameters chat.qwen.ai cannot honour: type-checked, then ignored
    temperature: Number | None = Field(default=None, ge=0, le=2)
    top_p: Number | None = Field(default=None, ge=0, le=1)
    presence_penalty: Number | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: Number | None = Field(default=None, ge=-2, le=2)
    seed: StrictInt | None = None
    logprobs: StrictBool | None = None
    top_logprobs: StrictInt | None = Field(default=None, ge=0, le=20)
    logit_bias: LogitBias | None = None
    user: Annotated[str, Strict()] | None = None
    store: StrictBool | None = None
    response_format: ResponseFormat | None = None
    reasoning_effort: Annotated[str, Strict()] | None = None
    metadata: Metadata | None = None
    service_tier: Annotated[str, Strict()] | None = None
    modalities: list[Annotated[str, Strict()]] | None = None
    audio: dict[str, Any] | None = None
    prediction: dict[str, Any] | None = None
    verbosity: Annotated[str, Strict()] | None = None
    web_search_options: dict[str, Any] | None = None
    prompt_cache_key: Annotated[str, Strict()] | None = None
    safety_identifier: Annotated[str, Strict()] | None = None
    functions: list[dict[str, Any]] | None = None  # deprecated by OpenAI: ignored
    function_call: Annotated[str, Strict()] | dict[str, Any] | None = None


class ImageGenerationRequest(BaseModel):
    """``POST /v1/images/generations`` body (also the fields of ``/v1/images/edits``).

    ``size``: an OpenAI size (``1024x1024``…), any ``WxH`` or an aspect ratio (``16:9``);
    ``n``: 1 to 4 images (one upstream turn each). ``quality``, ``style``, ``output_format``,
    ``background``, ``moderation``, ``output_compression`` and ``user`` are checked against
    OpenAI's values and types, then ignored (the site has no slot for them). Strict like chat:
    ``"n": "2"``, ``2.0`` or ``true`` is a 400 naming ``n``. A ``prompt`` of only whitespace is
    a 400 naming ``prompt``, like a chat message with no text.
    """

    model_config = ConfigDict(extra="allow", strict=True)
    prompt: Prompt
    model: str | None = None
    n: int = Field(default=1, ge=1, le=4)
    size: str | None = None
    response_format: Literal["url", "b64_json"] | None = None
    # OpenAI parameters the site has no slot for: checked, then ignored
    quality: Literal["standard", "hd", "low", "medium", "high", "auto"] | None = None
    style: Literal["vivid", "natural"] | None = None
    output_format: Literal["png", "jpeg", "webp"] | None = None
    background: Literal["transparent", "opaque", "auto"] | None = None
    moderation: Literal["low", "auto"] | None = None
    output_compression: int | None = Field(default=None, ge=0, le=100)
    user: str | None = None


class VideoGenerationRequest(BaseModel):
    """``POST /v1/videos/generations`` body: ``prompt`` (not only whitespace), optional ``model``
    and ``size``."""

    model_config = ConfigDict(extra="allow")
    prompt: Prompt
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
        raise _invalid(exc) from None


def parse_form[M: BaseModel](model: type[M], fields: dict[str, str]) -> M:
    """Validate the text fields of a multipart form as ``model``: each value is the text of a
    field, so ``"2"`` is read as the number 2 where the model wants one (and ``"two"`` is a
    400 naming the field, as :func:`parse_body` answers)."""
    try:
        return model.model_validate_strings(fields)
    except ValidationError as exc:
        raise _invalid(exc) from None


def parse_chat_request(obj: Any) -> ChatCompletionRequest:
    """Validate a decoded JSON body. Raises :class:`ClientRequestError` naming the bad field."""
    if not isinstance(obj, dict):
        raise ClientRequestError("the request body must be a JSON object")
    try:
        return ChatCompletionRequest.model_validate(obj)
    except ValidationError as exc:
        raise _invalid(exc) from None


def _invalid(exc: ValidationError) -> ClientRequestError:
    """The 400 for a validation failure: its first error, with the field as ``param``. The
    client's value is quoted at most 80 characters long wherever the message repeats it (a
    validator's own message may), and the message is cut to 300."""
    first = exc.errors()[0]
    loc = _param(first.get("loc", ()))
    msg = str(first.get("msg", "invalid value"))
    if len(msg) > 80:  # long enough to hold a long value
        value = first.get("input")
        for text in {str(value), repr(value)}:
            if len(text) > 80 and text in msg:
                msg = msg.replace(text, clip(text))
    return ClientRequestError(f"invalid request: {loc}: {clip(msg, 300)}", param=loc or None)


def json_text(value: Any, param: str) -> str:
    """``value`` (a client's JSON value: call arguments, a tool's output) as compact JSON text.
    Raises :class:`ClientRequestError` naming ``param`` for what JSON cannot hold (an integer
    beyond 64 bits given to the parser directly; bodies decoded from JSON text never hold one)."""
    try:
        return orjson.dumps(value).decode()
    except TypeError as exc:
        raise ClientRequestError(f"`{param}` is not a JSON value: {exc}", param=param) from None


#: The deepest nesting of objects and arrays a request body may have (the body itself is
#: level 1). Far beyond any real tool schema, and far below the 254 levels orjson can encode:
#: what the gateway stores and answers nests a client's values a few levels deeper, and a
#: body it could not encode again failed with a 500 after the upstream call (quota spent).
MAX_JSON_DEPTH = 64


def _too_deep(value: dict[str, Any] | list[Any], levels: int) -> bool:
    """Whether ``value`` (a container) nests more than ``levels`` levels of containers,
    itself included."""
    if levels <= 0:
        return True
    for child in value.values() if type(value) is dict else value:
        if (type(child) is dict or type(child) is list) and _too_deep(child, levels - 1):
            return True
    return False


def nests_too_deep(value: Any) -> bool:
    """Whether ``value`` (any decoded JSON value) nests objects and arrays more than
    :data:`MAX_JSON_DEPTH` levels deep: JSON text a client or the model wrote inside a string
    (call arguments), refused or left as text where it is decoded."""
    return (type(value) is dict or type(value) is list) and _too_deep(value, MAX_JSON_DEPTH)


def check_json_depth(obj: Any) -> None:
    """Refuse a decoded body nesting objects and arrays more than :data:`MAX_JSON_DEPTH` levels
    deep. Raises :class:`ClientRequestError` naming the top-level field that does, as
    ``param``. Visits containers only (a string is not looked into)."""
    if type(obj) is dict:
        for key, value in obj.items():
            if (type(value) is dict or type(value) is list) and _too_deep(
                value, MAX_JSON_DEPTH - 1
            ):
                raise _nested_too_deep(clip(key, 64))
    elif type(obj) is list and _too_deep(obj, MAX_JSON_DEPTH):
        raise _nested_too_deep(None)


def _nested_too_deep(param: str | None) -> ClientRequestError:
    where = f"`{param}`" if param is not None else "the request body"
    return ClientRequestError(
        f"{where} nests objects and arrays more than {MAX_JSON_DEPTH} levels deep (the body "
        "counts as one level); this gateway accepts at most that many",
        param=param,
    )


def decode_json_body(raw: bytes) -> Any:
    """:func:`decode_json`, then :func:`check_json_depth`: a decoded body no deeper than
    :data:`MAX_JSON_DEPTH`. Raises :class:`InvalidJSONError` or :class:`ClientRequestError`."""
    obj = decode_json(raw)
    check_json_depth(obj)
    return obj


def decode_json(raw: bytes) -> Any:
    """Decode a request body as UTF-8 JSON (RFC 8259 §8.1: JSON text is UTF-8), at any depth
    (see :func:`decode_json_body`).

    A leading UTF-8 BOM is tolerated. Raises :class:`InvalidJSONError`; when the bytes are not
    UTF-8 but decode as GBK/GB18030 the message says so, since that is the usual cause of
    garbled Chinese on Windows clients (docs/protocol.md §11.9).
    """
    if not raw.strip():
        raise InvalidJSONError("the request body is empty; send a JSON object")
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        return orjson.loads(raw)  # checks the UTF-8 too: the body is read once when it is good
    except orjson.JSONDecodeError as exc:
        error = exc
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
    raise InvalidJSONError(f"the request body is not valid JSON: {error}") from None
