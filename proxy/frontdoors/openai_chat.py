"""The OpenAI Chat Completions front door (``POST /v1/chat/completions``), pure.

- :func:`parse_chat` / :func:`conversation_of`: the request body -> :class:`Conversation`
  (roles ``developer`` -> ``system``, ``function`` -> ``tool``; content parts kept as OpenAI
  chat parts, so media uploads work unchanged). ``tools`` (``type: "function"`` only; names
  ``[a-zA-Z0-9_-]{1,64}``, unique; ``parameters`` a JSON Schema object), ``tool_choice``
  (``auto``, ``none``, ``required`` or ``{"type": "function", "function": {"name"}}`` naming an
  offered tool) and assistant ``tool_calls`` are checked here: a malformed one is a 400 whose
  ``param`` points at it (``tools[0].function.name``…); so are content parts (a ``text`` that
  is a string, ``image_url.detail``, ``input_audio.format``), a tool message's
  ``tool_call_id`` and a ``json_schema`` format's ``json_schema.name``. ``stop`` (a string or
  up to 4) and ``max_completion_tokens`` / ``max_tokens`` are emulated by the relay
  (:mod:`proxy.stop`).
- :class:`ChatStream`: the :class:`~proxy.relay.StreamRenderer`, OpenAI ``chat.completion.chunk``
  SSE bytes (:class:`~proxy.qwen.translate.ChunkEncoder`), ending ``data: [DONE]``; a failure is
  ``data: {"error": {...}}`` and no ``[DONE]``.
- :class:`ChatBody`: the :class:`~proxy.relay.BodyRenderer`, one ``chat.completion``
  (:class:`~proxy.qwen.translate.Aggregate`).
- :func:`render_error`: :func:`proxy.errors.to_openai`.
"""

from __future__ import annotations

import json
import random
import re
import time
from typing import Any

from proxy.api_models import (
    ChatCompletionRequest,
    ChatMessage,
    ResponseFormat,
    check_json_depth,
    decode_json,
    parse_chat_request,
)
from proxy.conversation import (
    Conversation,
    Role,
    ToolCallRecord,
    ToolChoice,
    ToolSpec,
    Turn,
)
from proxy.errors import (
    ClientRequestError,
    ProxyError,
    UnsupportedContentError,
    quote,
    to_openai,
)
from proxy.frontdoors import FrontDoor
from proxy.qwen.translate import Aggregate, ChunkEncoder, OutEvent, Usage
from proxy.tools.validate import check_tool_schema

__all__ = [
    "OPENAI_CHAT",
    "ChatBody",
    "ChatStream",
    "conversation_of",
    "new_completion_id",
    "parse_chat",
    "plain_chat",
    "render_error",
]

_ROLES: dict[str, Role] = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
    "tool": "tool",
    "function": "tool",
}


def new_completion_id() -> str:
    """A fresh ``chatcmpl-<32 hex>`` id (``random``'s generator: unique, no system call)."""
    return f"chatcmpl-{random.getrandbits(128):032x}"


def parse_chat(raw: bytes) -> Conversation:
    """Decode and validate a ``/v1/chat/completions`` body. Raises
    :class:`~proxy.errors.InvalidJSONError` or :class:`~proxy.errors.ClientRequestError`
    (with ``param``).

    A plain body (text messages and the usual sampling parameters: what the OpenAI SDK and
    most chat apps send) is read by :func:`plain_chat`; every other body, and every invalid
    one, is validated by the pydantic model (:func:`~proxy.api_models.parse_chat_request`).
    Both give the same :class:`Conversation`.
    """
    obj = decode_json(raw)
    conv = plain_chat(obj)  # a plain body nests 3 levels: its depth needs no check
    if conv is not None:
        return conv
    check_json_depth(obj)
    return conversation_of(parse_chat_request(obj))


def _range(name: str) -> tuple[float, float]:
    """The ``ge``/``le`` bounds of a number field of :class:`ChatCompletionRequest`."""
    low = high = None
    for rule in ChatCompletionRequest.model_fields[name].metadata:
        low = getattr(rule, "ge", low)
        high = getattr(rule, "le", high)
    assert low is not None and high is not None, name
    return low, high


#: the numbers a plain body may carry (accepted and ignored: chat.qwen.ai has no slot for
#: them), each with the range the validated path allows
_PLAIN_NUMBERS = {
    name: _range(name) for name in ("temperature", "top_p", "presence_penalty", "frequency_penalty")
}
#: the keys of a body :func:`plain_chat` reads, and of each of its messages
_PLAIN_KEYS = frozenset({"model", "messages", "stream", "stream_options", "max_tokens"}) | set(
    _PLAIN_NUMBERS
)
_PLAIN_MESSAGE_KEYS = frozenset({"role", "content"})
_PLAIN_OPTION_KEYS = frozenset({"include_usage"})
#: the roles it reads (a tool result, with its call id, takes the validated path)
_PLAIN_ROLES: dict[str, Role] = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
}


def plain_chat(obj: object) -> Conversation | None:
    """The :class:`Conversation` of a plain decoded body, or ``None`` for any other body,
    which :func:`parse_chat` then validates in full. A plain body is made only of:

    - ``model``: a string of 1-256 characters;
    - ``messages``: a non-empty list of ``{"role", "content"}`` objects, ``role`` one of
      system, developer, user and assistant, ``content`` a string;
    - optionally ``stream`` (a boolean), ``stream_options`` (an object with at most an
      ``include_usage`` boolean), ``max_tokens`` (an integer from 1), and ``temperature``,
      ``top_p``, ``presence_penalty`` and ``frequency_penalty`` (numbers in the ranges of
      :class:`~proxy.api_models.ChatCompletionRequest`, which accepts and ignores them);
      all of these but ``stream`` may be ``null``.

    Why: such bodies are the most common requests, and parsing one is on the first token's
    path, where the caches are cold at concurrency 1. There, validating a body with the
    35-field :class:`~proxy.api_models.ChatCompletionRequest` and :func:`conversation_of` made
    :func:`parse_chat` take about 35 µs; through this function it takes 13 µs, the JSON
    decoding included (bench/README.md, "2026-11-29, the plain chat body"). The answer is the
    one :func:`conversation_of` gives for the same body (``tests/test_plain_chat.py`` checks it
    on generated bodies). It raises nothing: a body it does not read is not judged.
    """
    if type(obj) is not dict or not obj.keys() <= _PLAIN_KEYS:
        return None
    model = obj.get("model")
    messages = obj.get("messages")
    stream = obj.get("stream", False)
    if (
        type(model) is not str
        or not 0 < len(model) <= 256
        or type(messages) is not list
        or not messages
        or type(stream) is not bool
    ):
        return None
    max_tokens = None
    include_usage = False
    if len(obj) > 2 + ("stream" in obj):  # optional parameters (model and messages are in)
        max_tokens = obj.get("max_tokens")
        if max_tokens is not None and (type(max_tokens) is not int or max_tokens < 1):
            return None
        for name, (low, high) in _PLAIN_NUMBERS.items():
            value = obj.get(name)
            if value is not None and (type(value) not in (int, float) or not low <= value <= high):
                return None
        options = obj.get("stream_options")
        if options is not None:
            if type(options) is not dict or not options.keys() <= _PLAIN_OPTION_KEYS:
                return None
            include_usage = options.get("include_usage", False)
            if type(include_usage) is not bool:
                return None
    turns: list[Turn] = []
    for message in messages:
        if type(message) is not dict or not message.keys() <= _PLAIN_MESSAGE_KEYS:
            return None
        role = message.get("role")
        content = message.get("content")
        if type(role) is not str or role not in _PLAIN_ROLES or type(content) is not str:
            return None
        turns.append(Turn(_PLAIN_ROLES[role], content))
    return Conversation(
        model, turns, stream=stream, max_output_tokens=max_tokens, include_usage=include_usage
    )


_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


def _bad(message: str, param: str) -> ClientRequestError:
    return ClientRequestError(message, param=param)


def _tools(raw: list[Any] | None) -> tuple[ToolSpec, ...]:
    if raw is None:
        return ()
    specs: list[ToolSpec] = []
    for i, tool in enumerate(raw):
        where = f"tools[{i}]"
        if not isinstance(tool, dict):
            raise _bad("each tool must be an object", where)
        if tool.get("type") != "function":
            raise _bad(
                f"tool type {quote(tool.get('type'))} is not supported; only 'function' tools",
                f"{where}.type",
            )
        fn = tool.get("function")
        if not isinstance(fn, dict):
            raise _bad("a function tool needs a `function` object", f"{where}.function")
        name = fn.get("name")
        if not isinstance(name, str) or not _TOOL_NAME.match(name):
            raise _bad(
                "a function name must be 1-64 characters of a-z, A-Z, 0-9, _ and -",
                f"{where}.function.name",
            )
        if any(s.name == name for s in specs):
            raise _bad(f"the tool name {quote(name)} is used twice", f"{where}.function.name")
        description = fn.get("description", "")
        if description is None:
            description = ""
        if not isinstance(description, str):
            raise _bad("a function description must be a string", f"{where}.function.description")
        params = fn.get("parameters")
        if params is not None:
            params = check_tool_schema(params, param=f"{where}.function.parameters")
        specs.append(ToolSpec(name, description, params))
    return tuple(specs)


def _tool_choice(raw: Any, tools: tuple[ToolSpec, ...]) -> ToolChoice:
    if raw is None:
        return ToolChoice("auto")
    if raw in ("auto", "none", "required"):
        if raw == "required" and not tools:
            raise _bad("tool_choice 'required' needs `tools`", "tool_choice")
        return ToolChoice(raw)
    if isinstance(raw, dict) and raw.get("type") == "allowed_tools":
        # {"type": "allowed_tools", "allowed_tools": {"mode", "tools"}}: its mode is used, the
        # list is not (as /v1/responses does): the model sees every tool of `tools`
        allowed = raw.get("allowed_tools")
        mode = allowed.get("mode") if isinstance(allowed, dict) else None
        if mode not in ("auto", "required"):
            raise _bad(
                f"tool_choice.allowed_tools.mode must be 'auto' or 'required', not {quote(mode)}",
                "tool_choice.allowed_tools.mode",
            )
        if mode == "required" and not tools:
            raise _bad("tool_choice 'required' needs `tools`", "tool_choice")
        return ToolChoice(mode)
    if isinstance(raw, dict) and raw.get("type") == "function":
        fn = raw.get("function")
        name = fn.get("name") if isinstance(fn, dict) else None
        if not isinstance(name, str):
            raise _bad("a named tool_choice needs `function.name`", "tool_choice.function.name")
        if not any(t.name == name for t in tools):
            raise _bad(
                f"tool_choice names {quote(name)}, which is not in `tools`",
                "tool_choice.function.name",
            )
        return ToolChoice("named", name)
    raise _bad(
        "tool_choice must be 'auto', 'none', 'required', "
        '{"type": "function", "function": {"name": ...}} or '
        '{"type": "allowed_tools", "allowed_tools": {"mode": ..., "tools": [...]}}',
        "tool_choice",
    )


def _tool_calls(raw: list[Any] | None, where: str) -> tuple[ToolCallRecord, ...]:
    if not raw:
        return ()
    out: list[ToolCallRecord] = []
    for i, call in enumerate(raw):
        at = f"{where}.tool_calls[{i}]"
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise _bad("a tool call needs `function.name`", f"{at}.function.name")
        args = fn.get("arguments", "{}")
        if isinstance(args, dict):  # lenient: an object instead of JSON text
            args = json.dumps(args, ensure_ascii=False)
        if not isinstance(args, str):
            raise _bad("tool call arguments must be a JSON string", f"{at}.function.arguments")
        call_id = call.get("id")
        if call_id is not None and not isinstance(call_id, str):
            raise _bad("a tool call's `id` must be a string", f"{at}.id")
        kind = call.get("type", "function")
        if not isinstance(kind, str):
            raise _bad("a tool call's `type` must be a string (`function`)", f"{at}.type")
        out.append(
            ToolCallRecord(call_id if isinstance(call_id, str) else f"call_{i}", fn["name"], args)
        )
    return tuple(out)


def _stops(raw: str | list[str] | None) -> tuple[str, ...]:
    stops = [raw] if isinstance(raw, str) else (raw or [])
    if len(stops) > 4:
        raise _bad("at most 4 stop sequences are allowed", "stop")
    return tuple(s for s in stops if s)


_MEDIA_TYPES = frozenset({"image_url", "input_image", "input_audio", "file", "input_file"})
#: OpenAI's ``image_url.detail`` and ``input_audio.format`` values
_DETAILS = frozenset({"auto", "low", "high", "original"})
_AUDIO_FORMATS = frozenset({"wav", "mp3"})


def _part_params(content: list[dict[str, Any]], where: str) -> tuple[str, ...]:
    """Check the content parts of the message whose content is at ``where``
    (``messages[0].content``) as OpenAI does, and return the path of what each part carries (its
    text, URL or data: ``messages[0].content[1].image_url.url``), which errors about it name.
    Raises :class:`ClientRequestError` naming the field: a ``text`` that is not a string, an
    ``image_url.detail`` or ``input_audio.format`` OpenAI does not take (a missing format is
    read as ``wav``), a part type this gateway cannot carry (``type``)."""
    params: list[str] = []
    for j, part in enumerate(content):
        at = f"{where}[{j}]"
        kind = part.get("type")
        if kind == "text" or (kind is None and "text" in part):
            if not isinstance(part.get("text"), str):
                raise _bad("a text content part needs `text`, a string", f"{at}.text")
            params.append(f"{at}.text")
        elif not isinstance(kind, str) or kind not in _MEDIA_TYPES:  # (any JSON value)
            raise UnsupportedContentError(
                f"message content parts of type {quote(kind)} are not supported by this proxy; "
                "send text, image_url, input_audio or file parts",
                param=f"{at}.type",
            )
        elif kind == "input_audio":
            audio = part.get("input_audio")
            fmt = audio.get("format") if isinstance(audio, dict) else None
            if fmt is not None and (not isinstance(fmt, str) or fmt not in _AUDIO_FORMATS):
                raise _bad(
                    f"input_audio.format must be 'wav' or 'mp3', not {quote(fmt)}",
                    f"{at}.input_audio.format",
                )
            params.append(f"{at}.input_audio.data")
        elif kind in ("file", "input_file"):
            inner = part.get("file")
            ref: dict[str, Any] = inner if isinstance(inner, dict) else part
            key = "file_url" if not ref.get("file_data") and ref.get("file_url") else "file_data"
            params.append(f"{at}.file.{key}" if isinstance(inner, dict) else f"{at}.{key}")
        else:  # image_url, input_image
            img = part.get("image_url")
            if not isinstance(img, dict):  # tolerated: the URL itself
                params.append(f"{at}.image_url")
                continue
            detail = img.get("detail")
            if detail is not None and (not isinstance(detail, str) or detail not in _DETAILS):
                raise _bad(
                    "image_url.detail must be 'auto', 'low', 'high' or 'original', not "
                    f"{quote(detail)}",
                    f"{at}.image_url.detail",
                )
            params.append(f"{at}.image_url.url")
    return tuple(params)


def _turn(message: ChatMessage, i: int) -> Turn:
    role = _ROLES[message.role]
    content = message.content
    if message.role == "tool" and message.tool_call_id is None:
        raise _bad(
            "a `tool` message needs `tool_call_id`, the id of the call it answers",
            f"messages[{i}].tool_call_id",
        )
    if role == "assistant" and isinstance(content, list):
        content = _refusals_as_text(content, i)
    return Turn(
        role=role,
        content=content,
        name=message.name,
        tool_calls=_tool_calls(message.tool_calls, f"messages[{i}]") if role == "assistant" else (),
        tool_call_id=message.tool_call_id if role == "tool" else None,
        part_params=_part_params(content, f"messages[{i}].content")
        if isinstance(content, list)
        else (),
    )


def _refusals_as_text(content: list[dict[str, Any]], i: int) -> list[dict[str, Any]]:
    """An assistant message's content parts with each ``{"type": "refusal", "refusal": …}``
    part (what OpenAI answers in place of text when the model refuses, sent back in the
    history) read as the text it is. Raises :class:`ClientRequestError` for a ``refusal`` that
    is not a string."""
    if not any(p.get("type") == "refusal" for p in content):
        return content
    out: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        if part.get("type") == "refusal":
            text = part.get("refusal")
            if not isinstance(text, str):
                raise _bad(
                    "a refusal content part needs `refusal`, a string",
                    f"messages[{i}].content[{j}].refusal",
                )
            part = {"type": "text", "text": text}
        out.append(part)
    return out


_SCHEMA_NAME = _TOOL_NAME  # the same rule: 1-64 of a-z, A-Z, 0-9, _ and -


def _response_format(fmt: ResponseFormat | None) -> None:
    """A ``json_schema`` format needs its ``json_schema`` object and in it a ``name``, as OpenAI
    answers (the format is not enforced: checked, then ignored)."""
    if fmt is None or fmt.type != "json_schema":
        return
    spec = fmt.json_schema
    if spec is None:
        raise _bad(
            "response_format of type 'json_schema' needs `json_schema`: "
            '{"name": ..., "schema": {...}}',
            "response_format.json_schema",
        )
    name = spec.get("name")
    if not isinstance(name, str) or not _SCHEMA_NAME.match(name):
        raise _bad(
            "response_format.json_schema needs a `name` of 1-64 characters of a-z, A-Z, 0-9, _ "
            "and -",
            "response_format.json_schema.name",
        )
    if not isinstance(spec.get("schema", {}), dict):
        raise _bad(
            "response_format.json_schema.schema must be a JSON Schema object",
            "response_format.json_schema.schema",
        )


def conversation_of(req: ChatCompletionRequest) -> Conversation:
    """The :class:`Conversation` of a validated chat request. Raises
    :class:`ClientRequestError` (with ``param``) for malformed tools, tool_choice, calls,
    content parts, a tool message without its call's id or a ``json_schema`` format without
    its schema's name."""
    _response_format(req.response_format)
    tools = _tools(req.tools)
    return Conversation(
        model=req.model,
        turns=[_turn(m, i) for i, m in enumerate(req.messages)],
        tools=tools,
        tool_choice=_tool_choice(req.tool_choice, tools),
        parallel_tool_calls=req.parallel_tool_calls is not False,
        stream=req.stream,
        stop=_stops(req.stop),
        max_output_tokens=req.max_completion_tokens or req.max_tokens,
        thinking=req.enable_thinking,
        size=req.size,
        include_usage=bool(req.stream_options and req.stream_options.include_usage),
    )


class ChatStream:
    """Streams one completion as OpenAI ``chat.completion.chunk`` events (see module doc)."""

    __slots__ = ("_encoder", "content_type", "id")

    def __init__(self, conv: Conversation, *, completion_id: str | None = None) -> None:
        self.id = completion_id or new_completion_id()
        self.content_type = "text/event-stream; charset=utf-8"
        self._encoder = ChunkEncoder(
            completion_id=self.id,
            model=conv.model,
            created=int(time.time()),
            include_usage=conv.include_usage,
        )

    def head(self) -> bytes:
        """The role chunk."""
        return self._encoder.role()

    def render(self, events: list[OutEvent], usage: Usage | None) -> bytes:
        """The chunks of ``events`` (``[DONE]`` after the finish, none after a failure)."""
        enc = self._encoder
        if len(events) == 1:
            return enc.encode(events[0], usage)
        return b"".join([enc.encode(e, usage) for e in events])

    def keepalive(self) -> bytes:
        """An SSE comment line."""
        return b": keep-alive\n\n"


class ChatBody:
    """Folds the events into one OpenAI ``chat.completion`` object."""

    __slots__ = ("_agg", "_created", "_model", "id")

    def __init__(self, conv: Conversation, *, completion_id: str | None = None) -> None:
        self.id = completion_id or new_completion_id()
        self._model = conv.model
        self._created = int(time.time())
        self._agg = Aggregate()

    def add(self, event: OutEvent) -> None:
        """Record one event."""
        self._agg.add(event)

    def body(self, usage: Usage | None) -> dict[str, Any]:
        """The ``chat.completion``; raises the stream's error if it failed."""
        return self._agg.completion(
            completion_id=self.id, model=self._model, created=self._created, usage=usage
        )


def render_error(exc: ProxyError) -> tuple[int, dict[str, str], dict[str, Any]]:
    """``(status, headers, {"error": {message, type, param, code}})``."""
    return to_openai(exc)


OPENAI_CHAT = FrontDoor("openai_chat", render_error)
