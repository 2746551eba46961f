"""The Anthropic Messages front door: request parsing, stream and body renderers, error objects.

Pure (no aiohttp, no I/O). ``POST /v1/messages`` bodies become one :class:`Conversation`
(:func:`parse_messages`); the translator's events become Anthropic SSE bytes
(:class:`AnthropicStream`) or one ``message`` object (:class:`AnthropicBody`); every
:class:`~proxy.errors.ProxyError` becomes ``{"type": "error", "error": {type, message}}``
(:func:`render_error`). ``POST /v1/messages/count_tokens`` is answered from the request alone
(:func:`count_tokens`, an estimate: no tokenizer runs and nothing is sent upstream).

Wire facts relied on (docs/agents.md §3, §5.1; Anthropic's Messages, streaming and errors
documentation; anthropic-sdk-python's ``types`` and ``_streaming.py``):

- Request: ``model``, ``max_tokens`` and ``messages`` are required; ``system`` is a string or text
  blocks; message content is a string or blocks (``text``, ``image`` with a ``base64`` or ``url``
  source, ``document``, ``tool_use``, ``tool_result``, ``thinking``, ``redacted_thinking``);
  ``tools`` carry ``input_schema``; ``tool_choice`` is ``auto|any|none|tool`` (+
  ``disable_parallel_tool_use``); ``thinking`` is ``enabled|disabled|adaptive``. Unknown fields
  (``cache_control``, ``metadata``, ``context_management``, ``temperature``…) are ignored.
- Stream: ``message_start`` → per block ``content_block_start`` / ``content_block_delta``* /
  ``content_block_stop`` → ``message_delta`` (``stop_reason``, ``stop_sequence``, cumulative
  ``usage``) → ``message_stop``; ``ping`` anywhere; ``error`` after a 200. Every frame has an
  ``event:`` line naming its ``type`` (the SDK dispatches on it). A ``tool_use`` block starts
  with ``input: {}`` and its JSON arrives as ``input_json_delta`` fragments.
- Errors: 400 ``invalid_request_error``, 401 ``authentication_error``, 403
  ``permission_error``, 404 ``not_found_error``, 413 ``request_too_large``, 429
  ``rate_limit_error``, 500 ``api_error``, 529 ``overloaded_error``.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator

from proxy.api_models import json_text, parse_body
from proxy.conversation import Conversation, ToolCallRecord, ToolChoice, ToolSpec, Turn
from proxy.errors import ClientRequestError, ProxyError, UnsupportedContentError, quote
from proxy.frontdoors import FrontDoor
from proxy.qwen.translate import (
    Failure,
    Finish,
    Media,
    OutEvent,
    Text,
    ToolCall,
    Usage,
)
from proxy.tools.prompt import build_prompt
from proxy.tools.validate import check_tool_schema

__all__ = [
    "ANTHROPIC",
    "AnthropicBody",
    "AnthropicStream",
    "CountTokensRequest",
    "MessagesRequest",
    "count_tokens",
    "error_type",
    "estimate_tokens",
    "message_id",
    "model_info",
    "models_page",
    "parse_count_tokens",
    "parse_messages",
    "render_error",
    "resolve_model",
    "tool_use_id",
]

#: Tokens counted for one image or document block (Anthropic's own ceiling for an image is
#: about 1,600 tokens; the proxy does not decode images to measure them).
IMAGE_TOKENS = 1600


# -- request models -----------------------------------------------------------------------------


class MessageParam(BaseModel):
    """One Anthropic message: ``role`` and ``content`` (a string or a list of blocks)."""

    model_config = ConfigDict(extra="allow", strict=True)
    role: Literal["user", "assistant"]
    content: str | list[dict[str, Any]]


class CountTokensRequest(BaseModel):
    """``POST /v1/messages/count_tokens`` body (a Messages request without ``max_tokens``).

    Types are checked strictly, as Anthropic does (``"stream": "yes"`` or ``"max_tokens":
    "50"`` is a 400 naming the field, not coerced)."""

    model_config = ConfigDict(extra="allow", strict=True)
    model: str = Field(min_length=1)
    messages: list[MessageParam] = Field(min_length=1)
    system: str | list[dict[str, Any]] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: dict[str, Any] | None = None
    thinking: dict[str, Any] | None = None


class MessagesRequest(CountTokensRequest):
    """``POST /v1/messages`` body. Fields not listed here are accepted and ignored."""

    max_tokens: int = Field(ge=1)
    stop_sequences: list[str] | None = None
    stream: bool = False
    temperature: float | None = Field(default=None, ge=0, le=1)
    top_p: float | None = Field(default=None, ge=0, le=1)
    top_k: int | None = Field(default=None, ge=0)
    # accepted and ignored, type-checked as Anthropic does
    metadata: dict[str, Any] | None = None
    service_tier: str | None = None
    container: str | dict[str, Any] | None = None
    mcp_servers: list[dict[str, Any]] | None = None

    @field_validator("metadata")
    @classmethod
    def _user_id(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and not isinstance(value.get("user_id", ""), str | None):
            raise ValueError("metadata.user_id must be a string")
        return value


# -- model names --------------------------------------------------------------------------------


def resolve_model(name: str, model_map: Mapping[str, str], default: str) -> str:
    """The Qwen model for an Anthropic request's ``model``.

    ``model_map`` keys are exact names or shell-style patterns (``claude-*haiku*``), compared
    case-insensitively: an exact key wins, else the first matching pattern in the map's order.
    An unmatched ``claude…`` name gets ``default``; any other name (``qwen3-max``,
    ``qwen3-max-thinking``) passes through unchanged.
    """
    lower = name.lower()
    for key, target in model_map.items():
        if key.lower() == lower:
            return target
    for key, target in model_map.items():
        if fnmatchcase(lower, key.lower()):
            return target
    if lower.startswith("claude"):
        return default
    return name


# -- request -> Conversation --------------------------------------------------------------------


def parse_messages(
    obj: Any,
    *,
    model_map: Mapping[str, str] | None = None,
    default_model: str = "qwen3-max",
    interleaved_thinking: bool = False,
) -> Conversation:
    """Validate a decoded ``/v1/messages`` body and convert it into a :class:`Conversation`.

    ``Conversation.model`` is the Qwen model (:func:`resolve_model`); ``metadata`` holds
    ``requested_model`` (the client's name, echoed in answers). Raises
    :class:`ClientRequestError` (400, with ``param``) for a malformed body and
    :class:`UnsupportedContentError` for blocks or tools the proxy cannot carry.

    ``thinking.budget_tokens`` must be below ``max_tokens``, as Anthropic requires, unless
    ``interleaved_thinking`` (the request's ``anthropic-beta`` names
    ``interleaved-thinking-…``, as Claude Code's does): then the budget spans the whole turn
    and may exceed ``max_tokens``.
    """
    req = parse_body(MessagesRequest, obj)
    conv = _conversation(req, model_map or {}, default_model)
    budget = req.thinking.get("budget_tokens") if req.thinking else None
    if (
        conv.thinking
        and isinstance(budget, int)
        and budget >= req.max_tokens
        and not interleaved_thinking
    ):
        raise _bad(
            f"thinking.budget_tokens ({budget}) must be less than max_tokens ({req.max_tokens})",
            "thinking.budget_tokens",
        )
    conv.stream = req.stream
    conv.max_output_tokens = req.max_tokens
    if req.stop_sequences:
        conv.stop = tuple(s for s in req.stop_sequences if s)
    return conv


def parse_count_tokens(
    obj: Any, *, model_map: Mapping[str, str] | None = None, default_model: str = "qwen3-max"
) -> Conversation:
    """Validate a decoded ``/v1/messages/count_tokens`` body into a :class:`Conversation`
    (same rules and errors as :func:`parse_messages`; ``max_tokens`` is not needed)."""
    req = parse_body(CountTokensRequest, obj)
    return _conversation(req, model_map or {}, default_model)


def _conversation(
    req: CountTokensRequest, model_map: Mapping[str, str], default_model: str
) -> Conversation:
    turns: list[Turn] = []
    system = _system_text(req.system)
    if system:
        turns.append(Turn(role="system", content=system))
    names: dict[str, str] = {}  # tool_use id -> tool name, for the results
    for i, message in enumerate(req.messages):
        if message.role == "assistant":
            turns.append(_assistant_turn(message.content, f"messages.{i}.content", names))
        else:
            turns.extend(_user_turns(message.content, f"messages.{i}.content", names))
    tools = _tools(req.tools)
    choice, parallel = _tool_choice(req.tool_choice, tools)
    return Conversation(
        model=resolve_model(req.model, model_map, default_model),
        turns=turns,
        tools=tools,
        tool_choice=choice,
        parallel_tool_calls=parallel,
        thinking=_thinking(req.thinking),
        metadata={"requested_model": req.model},
    )


def _bad(message: str, param: str) -> ClientRequestError:
    return ClientRequestError(message, param=param)


def _block_type(block: Any, param: str) -> str:
    if not isinstance(block, dict):
        raise _bad("a content block must be an object", param)
    kind = block.get("type")
    if not isinstance(kind, str):
        raise _bad("a content block needs a string `type`", f"{param}.type")
    return kind


def _str_field(block: dict[str, Any], key: str, param: str) -> str:
    value = block.get(key)
    if not isinstance(value, str):
        raise _bad(f"`{key}` must be a string", f"{param}.{key}")
    return value


def _system_text(system: str | list[dict[str, Any]] | None) -> str:
    if system is None or isinstance(system, str):
        return system or ""
    texts = []
    for j, block in enumerate(system):
        param = f"system.{j}"
        if _block_type(block, param) != "text":
            raise _bad("system blocks must be of type `text`", f"{param}.type")
        texts.append(_str_field(block, "text", param))
    return "\n\n".join(t for t in texts if t)


def _image_part(block: dict[str, Any], param: str) -> dict[str, Any]:
    """An Anthropic ``image`` block as an OpenAI ``image_url`` part (uploaded like one)."""
    source = block.get("source")
    if not isinstance(source, dict):
        raise _bad("an image block needs a `source` object", f"{param}.source")
    kind = source.get("type")
    if kind == "base64":
        media_type = _str_field(source, "media_type", f"{param}.source")
        data = _str_field(source, "data", f"{param}.source")
        return {"type": "image_url", "image_url": {"url": f"data:{media_type};base64,{data}"}}
    if kind == "url":
        url = _str_field(source, "url", f"{param}.source")
        return {"type": "image_url", "image_url": {"url": url}}
    raise UnsupportedContentError(
        f"image sources of type {quote(kind)} are not supported; send `base64` or `url`",
        param=f"{param}.source.type",
    )


def _document_part(block: dict[str, Any], param: str) -> dict[str, Any]:
    """An Anthropic ``document`` block as an OpenAI ``file`` part, or text for text sources."""
    source = block.get("source")
    if not isinstance(source, dict):
        raise _bad("a document block needs a `source` object", f"{param}.source")
    kind = source.get("type")
    title = block.get("title") if isinstance(block.get("title"), str) else None
    if kind == "text":
        text = _str_field(source, "data", f"{param}.source")
        return {"type": "text", "text": f"{title}\n\n{text}" if title else text}
    if kind == "content":
        inner = source.get("content")
        if isinstance(inner, str):
            return {"type": "text", "text": inner}
        if isinstance(inner, list):
            texts = [
                _str_field(b, "text", f"{param}.source.content.{k}")
                for k, b in enumerate(inner)
                if _block_type(b, f"{param}.source.content.{k}") == "text"
            ]
            return {"type": "text", "text": "\n".join(texts)}
        raise _bad("a content source needs `content`", f"{param}.source.content")
    if kind == "base64":
        media_type = _str_field(source, "media_type", f"{param}.source")
        data = _str_field(source, "data", f"{param}.source")
        file: dict[str, Any] = {"file_data": f"data:{media_type};base64,{data}"}
    elif kind == "url":
        file = {"file_url": _str_field(source, "url", f"{param}.source")}
    else:
        raise UnsupportedContentError(
            f"document sources of type {quote(kind)} are not supported; send `base64`, `url`, "
            "`text` or `content`",
            param=f"{param}.source.type",
        )
    if title:
        file["filename"] = title
    return {"type": "file", "file": file}


def _carried(block: dict[str, Any], param: str) -> str:
    """The path of what a block at ``param`` carries, for the errors about it: its ``text``, or
    its source's ``data``, ``url`` or ``content``."""
    if block.get("type") == "text":
        return f"{param}.text"
    source = block.get("source")
    kind = source.get("type") if isinstance(source, dict) else None
    return f"{param}.source.{kind if kind in ('url', 'content') else 'data'}"


def _tool_result_content(
    block: dict[str, Any], param: str
) -> tuple[str | list[dict[str, Any]], tuple[str, ...]]:
    """A ``tool_result`` block's content as turn content, and (when that is a list) the path of
    what each part carries."""
    content = block.get("content")
    parts: list[dict[str, Any]] = []
    params: list[str] = []
    if content is None:
        pass
    elif isinstance(content, str):
        parts.append({"type": "text", "text": content})
        params.append(f"{param}.content")
    elif isinstance(content, list):
        for k, inner in enumerate(content):
            p = f"{param}.content.{k}"
            kind = _block_type(inner, p)
            if kind == "text":
                parts.append({"type": "text", "text": _str_field(inner, "text", p)})
            elif kind == "image":
                parts.append(_image_part(inner, p))
            elif kind == "document":
                parts.append(_document_part(inner, p))
            else:
                raise UnsupportedContentError(
                    f"tool_result content blocks of type {quote(kind)} are not supported",
                    param=f"{p}.type",
                )
            params.append(_carried(inner, p))
    else:
        raise _bad("`content` must be a string or a list of blocks", f"{param}.content")
    if block.get("is_error") is True:
        parts.insert(0, {"type": "text", "text": "Error:"})
        params.insert(0, f"{param}.is_error")
    simple = _simplify(parts)
    return simple, tuple(params) if isinstance(simple, list) else ()


def _simplify(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    """Text-only parts become one string (what a single text message would be)."""
    if all(p["type"] == "text" for p in parts):
        return "\n".join(p["text"] for p in parts)
    return parts


def _user_turns(
    content: str | list[dict[str, Any]], param: str, names: dict[str, str]
) -> list[Turn]:
    if isinstance(content, str):
        return [Turn(role="user", content=content, where=param)]
    turns: list[Turn] = []
    parts: list[dict[str, Any]] = []
    params: list[str] = []

    def flush() -> None:
        if parts:
            simple = _simplify(parts.copy())
            at = tuple(params) if isinstance(simple, list) else ()
            turns.append(Turn(role="user", content=simple, where=param, part_params=at))
            parts.clear()
            params.clear()

    for j, block in enumerate(content):
        p = f"{param}.{j}"
        kind = _block_type(block, p)
        if kind == "text":
            parts.append({"type": "text", "text": _str_field(block, "text", p)})
        elif kind == "image":
            parts.append(_image_part(block, p))
        elif kind == "document":
            parts.append(_document_part(block, p))
        elif kind == "tool_result":
            flush()
            call_id = _str_field(block, "tool_use_id", p)
            result, at = _tool_result_content(block, p)
            turns.append(
                Turn(
                    role="tool",
                    content=result,
                    tool_call_id=call_id,
                    name=names.get(call_id),
                    where=f"{p}.content",
                    part_params=at,
                )
            )
            continue
        elif kind in ("tool_use", "thinking", "redacted_thinking"):
            raise _bad(f"`{kind}` blocks belong in assistant messages", f"{p}.type")
        else:
            raise UnsupportedContentError(
                f"content blocks of type {quote(kind)} are not supported by this proxy",
                param=f"{p}.type",
            )
        params.append(_carried(block, p))
    flush()
    return turns


def _assistant_turn(content: str | list[dict[str, Any]], param: str, names: dict[str, str]) -> Turn:
    if isinstance(content, str):
        return Turn(role="assistant", content=content)
    texts: list[str] = []
    reasoning: list[str] = []
    calls: list[ToolCallRecord] = []
    for j, block in enumerate(content):
        p = f"{param}.{j}"
        kind = _block_type(block, p)
        if kind == "text":
            texts.append(_str_field(block, "text", p))
        elif kind == "tool_use":
            call_id = _str_field(block, "id", p)
            name = _str_field(block, "name", p)
            args = block.get("input", {})
            if not isinstance(args, dict):
                raise _bad("`input` must be an object", f"{p}.input")
            names[call_id] = name
            calls.append(ToolCallRecord(call_id, name, json_text(args, f"{p}.input")))
        elif kind == "thinking":
            reasoning.append(_str_field(block, "thinking", p))
        elif kind == "redacted_thinking":
            continue  # encrypted by Anthropic; nothing the model here could read
        elif kind in ("tool_result", "image", "document"):
            raise _bad(f"`{kind}` blocks belong in user messages", f"{p}.type")
        else:
            raise UnsupportedContentError(
                f"content blocks of type {quote(kind)} are not supported by this proxy",
                param=f"{p}.type",
            )
    text = "".join(texts)
    return Turn(
        role="assistant",
        content=text or None,
        tool_calls=tuple(calls),
        reasoning="\n\n".join(reasoning) or None,
    )


def _tools(tools: list[dict[str, Any]] | None) -> tuple[ToolSpec, ...]:
    if not tools:
        return ()
    specs: list[ToolSpec] = []
    seen: set[str] = set()
    for i, tool in enumerate(tools):
        p = f"tools.{i}"
        kind = tool.get("type")
        if kind not in (None, "custom"):
            raise UnsupportedContentError(
                f"tools of type {quote(kind)} (run by Anthropic's servers or with a built-in "
                "schema) are not supported by this proxy; declare the tool with `name` and "
                "`input_schema`",
                param=f"{p}.type",
            )
        name = tool.get("name")
        if not isinstance(name, str) or not name:
            raise _bad("a tool needs a non-empty string `name`", f"{p}.name")
        if name in seen:
            raise _bad(f"the tool name {quote(name)} is used twice", f"{p}.name")
        seen.add(name)
        schema = tool.get("input_schema")
        if not isinstance(schema, dict):
            raise _bad("a tool needs an `input_schema` object (JSON Schema)", f"{p}.input_schema")
        check_tool_schema(schema, param=f"{p}.input_schema")  # as chat checks `parameters`
        if schema.get("type") != "object":  # Anthropic's InputSchema: type "object", required
            raise _bad(
                f"`input_schema.type` must be 'object', not {quote(schema.get('type'))}",
                f"{p}.input_schema.type",
            )
        description = tool.get("description")
        if description is not None and not isinstance(description, str):
            raise _bad("`description` must be a string", f"{p}.description")
        specs.append(ToolSpec(name=name, description=description or "", parameters=schema))
    return tuple(specs)


def _tool_choice(
    choice: dict[str, Any] | None, tools: Sequence[ToolSpec]
) -> tuple[ToolChoice, bool]:
    if choice is None:
        return ToolChoice(), True
    kind = choice.get("type")
    parallel = choice.get("disable_parallel_tool_use") is not True
    if kind == "auto":
        return ToolChoice("auto"), parallel
    if kind == "any":
        mode: Literal["required", "none"] = "required"
    elif kind == "none":
        mode = "none"
    elif kind == "tool":
        name = choice.get("name")
        if not isinstance(name, str) or name not in {t.name for t in tools}:
            raise _bad(
                f"tool_choice names {quote(name)}, which is not one of the request's tools",
                "tool_choice.name",
            )
        return ToolChoice("named", name), parallel
    else:
        raise _bad(
            f"tool_choice.type must be `auto`, `any`, `tool` or `none`, not {quote(kind)}",
            "tool_choice.type",
        )
    if mode == "required" and not tools:
        raise _bad("tool_choice `any` needs `tools`", "tool_choice.type")
    return ToolChoice(mode), parallel


#: the smallest ``thinking.budget_tokens`` Anthropic takes
MIN_THINKING_BUDGET = 1024


def _thinking(thinking: dict[str, Any] | None) -> bool | None:
    if thinking is None:
        return None
    kind = thinking.get("type")
    if kind == "disabled":  # (a budget beside it is moot)
        return False
    budget = thinking.get("budget_tokens")
    if budget is not None and (type(budget) is not int or budget < 1):
        raise _bad(
            "thinking.budget_tokens must be a positive integer (a number of tokens)",
            "thinking.budget_tokens",
        )
    if kind == "enabled":
        if budget is not None and budget < MIN_THINKING_BUDGET:
            raise _bad(
                f"thinking.budget_tokens must be at least {MIN_THINKING_BUDGET}, not {budget}",
                "thinking.budget_tokens",
            )
        return True
    if kind == "adaptive":
        return None
    raise _bad(
        f"thinking.type must be `enabled`, `disabled` or `adaptive`, not {quote(kind)}",
        "thinking.type",
    )


# -- token estimate -----------------------------------------------------------------------------


def estimate_tokens(text: str) -> int:
    """A tokenizer-free token estimate for ``text``: one token per 4 ASCII characters (rounded
    up) plus one per non-ASCII character (CJK text is about one token per character in Qwen's
    and Claude's vocabularies). O(len(text)), no allocation beyond one ASCII copy."""
    if not text:
        return 0
    ascii_chars = len(text.encode("ascii", "ignore"))
    return -(-ascii_chars // 4) + (len(text) - ascii_chars)


def count_tokens(conv: Conversation) -> int:
    """The ``input_tokens`` estimate for a conversation (``/v1/messages/count_tokens``).

    :func:`estimate_tokens` of the prompt the proxy sends for it
    (:func:`proxy.tools.prompt.build_prompt`: the system text, the tool section when tools are
    offered, every turn with its tool calls and results, flattened), plus
    :data:`IMAGE_TOKENS` per image or document part. An estimate, documented as such; never
    below 1.
    """
    media = sum(
        1
        for turn in conv.turns
        if isinstance(turn.content, list)
        for part in turn.content
        if part.get("type") != "text"
    )
    prompt = build_prompt(conv, allow_empty=True)
    return max(estimate_tokens(prompt) + media * IMAGE_TOKENS, 1)


# -- ids ----------------------------------------------------------------------------------------


def message_id() -> str:
    """A fresh message id, ``msg_`` + 32 hex characters."""
    return "msg_" + uuid.uuid4().hex


def tool_use_id(call_id: str) -> str:
    """The Anthropic id of a tool call: ``call_<hex>`` becomes ``toolu_<hex>``; ids that are
    already Anthropic-style pass through."""
    if call_id.startswith("toolu_"):
        return call_id
    return "toolu_" + call_id.removeprefix("call_")


# -- events -> Anthropic ------------------------------------------------------------------------

_STOP_REASONS = {"tool_calls": "tool_use", "length": "max_tokens", "stop": "end_turn"}


def _stop_reason(finish: Finish) -> tuple[str, str | None]:
    stop_sequence = getattr(finish, "stop_sequence", None)
    if stop_sequence:
        return "stop_sequence", stop_sequence
    return _STOP_REASONS.get(finish.reason, "end_turn"), None


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


class _OutputCounter:
    """Counts emitted text for the ``output_tokens`` estimate (when upstream sent no usage)."""

    __slots__ = ("_ascii", "_other")

    def __init__(self) -> None:
        self._ascii = 0
        self._other = 0

    def add(self, text: str) -> None:
        n = len(text.encode("ascii", "ignore"))
        self._ascii += n
        self._other += len(text) - n

    def tokens(self) -> int:
        return -(-self._ascii // 4) + self._other


InputTokens = int | Callable[[], int]
"""The request's ``input_tokens`` estimate, or a function computing it (only called when
chat.qwen.ai sent no usage: the estimate builds the whole prompt once more)."""


def _once(estimate: InputTokens) -> InputTokens:
    """``estimate``, computed at most once when it is a function."""
    return functools.cache(estimate) if callable(estimate) else estimate


def _usage(usage: Usage | None, estimate: InputTokens, output: _OutputCounter) -> dict[str, int]:
    if usage is not None and (usage.prompt_tokens or usage.completion_tokens):
        return {"input_tokens": usage.prompt_tokens, "output_tokens": usage.completion_tokens}
    return {
        "input_tokens": estimate() if callable(estimate) else estimate,
        "output_tokens": output.tokens(),
    }


class AnthropicStream:
    """Renders translator events as Anthropic Messages SSE bytes for one message.

    ``head()`` is empty: ``message_start`` (then one ``ping``, as Anthropic does) leaves with
    the first :meth:`render` call, so its ``usage.input_tokens`` can be chat.qwen.ai's count
    when the first frames carried one (else ``input_tokens``, the request's estimate). Blocks
    are numbered in order across kinds: reasoning opens a ``thinking`` block
    (``thinking_delta``; ``signature`` stays empty: there is nothing to sign), answer text and
    media Markdown a ``text`` block (``text_delta``), each :class:`ToolCall` one ``tool_use``
    block (``input_json_delta`` with the whole arguments JSON). :class:`Finish` closes the open
    block and sends ``message_delta`` (``stop_reason`` ``end_turn``, ``tool_use``,
    ``max_tokens`` or ``stop_sequence``; cumulative usage) and ``message_stop``.
    :class:`Failure` sends one ``error`` event and nothing after it. Search sources are not
    rendered (the Messages API has no slot for them without citations).
    """

    content_type = "text/event-stream; charset=utf-8"
    #: Reasoning must arrive as its own events (thinking blocks), whatever ``reasoning`` says.
    reasoning_mode = "field"

    __slots__ = (
        "_block",
        "_delta_head",
        "_index",
        "_input_tokens",
        "_model",
        "_out",
        "_started",
        "id",
    )

    def __init__(self, *, model: str, input_tokens: InputTokens, msg_id: str | None = None) -> None:
        self.id = msg_id or message_id()
        self._model = model
        self._input_tokens = _once(input_tokens)
        self._started = False
        self._block: str | None = None  # the open block's type
        self._delta_head = b""  # the open text/thinking block's delta frame, up to the text
        self._index = -1
        self._out = _OutputCounter()

    def head(self) -> bytes:
        """Nothing: ``message_start`` is sent with the first events (see the class doc)."""
        return b""

    def keepalive(self) -> bytes:
        """A ``ping`` event."""
        return b'event: ping\ndata: {"type":"ping"}\n\n'

    def render(self, events: Sequence[OutEvent], usage: Usage | None) -> bytes:
        """The SSE bytes for ``events`` (``usage``: chat.qwen.ai's cumulative counts so far)."""
        out = bytearray()
        if not self._started:
            self._started = True
            out += self._message_start(usage)
            out += self.keepalive()  # Anthropic sends a ping right after message_start too
        for event in events:
            kind = type(event)
            if kind is Text:
                assert isinstance(event, Text)
                if event.text:
                    if event.kind == "content":
                        self._delta(out, "text", "text_delta", "text", event.text)
                    else:
                        self._delta(out, "thinking", "thinking_delta", "thinking", event.text)
            elif kind is Media:
                assert isinstance(event, Media)
                self._delta(out, "text", "text_delta", "text", event.markdown())
            elif kind is ToolCall:
                assert isinstance(event, ToolCall)
                self._tool_use(out, event)
            elif kind is Finish:
                assert isinstance(event, Finish)
                self._close(out)
                reason, sequence = _stop_reason(event)
                out += _sse(
                    "message_delta",
                    {
                        "type": "message_delta",
                        "delta": {"stop_reason": reason, "stop_sequence": sequence},
                        "usage": _usage(usage, self._input_tokens, self._out),
                    },
                )
                out += b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
            elif kind is Failure:
                assert isinstance(event, Failure)
                _, _, body = render_error(event.error)
                out += _sse("error", body)
        return bytes(out)

    def _message_start(self, usage: Usage | None) -> bytes:
        start_usage = _usage(usage, self._input_tokens, self._out)
        start_usage["output_tokens"] = 0
        return _sse(
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": self.id,
                    "type": "message",
                    "role": "assistant",
                    "model": self._model,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": start_usage,
                },
            },
        )

    def _open(self, out: bytearray, block: dict[str, Any]) -> None:
        self._close(out)
        self._index += 1
        self._block = block["type"]
        out += _sse(
            "content_block_start",
            {"type": "content_block_start", "index": self._index, "content_block": block},
        )

    def _close(self, out: bytearray) -> None:
        if self._block is None:
            return
        self._block = None
        out += _sse("content_block_stop", {"type": "content_block_stop", "index": self._index})

    def _delta(self, out: bytearray, block: str, delta: str, key: str, text: str) -> None:
        if self._block != block:
            self._open(
                out,
                {"type": "text", "text": ""}
                if block == "text"
                else {"type": "thinking", "thinking": "", "signature": ""},
            )
            # Every delta of this block is this head + the JSON string + "}}": encoded once.
            self._delta_head = (
                b'event: content_block_delta\ndata: {"type":"content_block_delta","index":'
                + str(self._index).encode()
                + b',"delta":{"type":"'
                + delta.encode()
                + b'","'
                + key.encode()
                + b'":'
            )
        self._out.add(text)
        out += self._delta_head
        out += orjson.dumps(text)
        out += b"}}\n\n"

    def _tool_use(self, out: bytearray, call: ToolCall) -> None:
        self._open(
            out,
            {"type": "tool_use", "id": tool_use_id(call.id), "name": call.name, "input": {}},
        )
        self._out.add(call.name)
        self._out.add(call.arguments)
        out += _sse(
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": self._index,
                "delta": {"type": "input_json_delta", "partial_json": call.arguments},
            },
        )
        self._close(out)


class AnthropicBody:
    """Folds translator events into one Anthropic ``message`` object (the non-stream answer).

    Same blocks, order and stop reasons as :class:`AnthropicStream`; consecutive text (or
    reasoning) pieces merge into one block; ``tool_use.input`` is the arguments as an object.
    :meth:`body` raises the recorded :class:`~proxy.errors.UpstreamError` if the stream failed.
    """

    reasoning_mode = "field"

    __slots__ = ("_blocks", "_failure", "_finish", "_input_tokens", "_model", "_out", "id")

    def __init__(self, *, model: str, input_tokens: InputTokens, msg_id: str | None = None) -> None:
        self.id = msg_id or message_id()
        self._model = model
        self._input_tokens = _once(input_tokens)
        self._blocks: list[dict[str, Any]] = []
        self._finish: Finish | None = None
        self._failure: Failure | None = None
        self._out = _OutputCounter()

    def add(self, event: OutEvent) -> None:
        """Record one event."""
        if isinstance(event, Text):
            if event.text:
                if event.kind == "content":
                    self._append("text", event.text)
                else:
                    self._append("thinking", event.text)
        elif isinstance(event, Media):
            self._append("text", event.markdown())
        elif isinstance(event, ToolCall):
            self._out.add(event.name + event.arguments)
            self._blocks.append(
                {
                    "type": "tool_use",
                    "id": tool_use_id(event.id),
                    "name": event.name,
                    "input": orjson.loads(event.arguments) if event.arguments else {},
                }
            )
        elif isinstance(event, Finish):
            self._finish = event
        elif isinstance(event, Failure):
            self._failure = event

    def _append(self, kind: str, text: str) -> None:
        self._out.add(text)
        last = self._blocks[-1] if self._blocks else None
        if last is not None and last["type"] == kind:
            last[kind] += text
        elif kind == "text":
            self._blocks.append({"type": "text", "text": text})
        else:
            self._blocks.append({"type": "thinking", "thinking": text, "signature": ""})

    def body(self, usage: Usage | None) -> dict[str, Any]:
        """The ``message`` object. Raises the recorded error if the stream failed."""
        if self._failure is not None:
            raise self._failure.error
        reason, sequence = _stop_reason(self._finish or Finish())
        return {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": self._blocks,
            "stop_reason": reason,
            "stop_sequence": sequence,
            "usage": {
                **_usage(usage, self._input_tokens, self._out),
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
            },
        }


# -- models -------------------------------------------------------------------------------------


def model_info(entry: Mapping[str, Any]) -> dict[str, Any]:
    """One OpenAI model object (``id``, ``object``, ``created`` in Unix seconds, ``owned_by``)
    with Anthropic's ``ModelInfo`` fields added: ``type: "model"``, ``display_name`` (the id) and
    ``created_at`` (RFC 3339). Both SDKs read the result."""
    created = entry.get("created")
    stamp = datetime.fromtimestamp(created if isinstance(created, int) else 0, UTC)
    return {
        **entry,
        "type": "model",
        "display_name": entry["id"],
        "created_at": stamp.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def models_page(openai_list: Mapping[str, Any]) -> dict[str, Any]:
    """``GET /v1/models`` for an Anthropic client (``anthropic-version`` header): the OpenAI list
    with :func:`model_info` entries and Anthropic's page fields (``has_more: false``,
    ``first_id``, ``last_id``); every model is on the one page."""
    data = [model_info(m) for m in openai_list.get("data", [])]
    return {
        **openai_list,
        "data": data,
        "has_more": False,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }


# -- errors -------------------------------------------------------------------------------------

_TYPES_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}

OVERLOADED_STATUS = 529
"""Anthropic's status for ``overloaded_error``: the proxy's 503s (every account resting, or the
site's captcha wall) become 529 here, so Anthropic clients treat them as "overloaded, retry"."""


def error_type(exc: ProxyError) -> tuple[int, str]:
    """``(status, Anthropic error type)`` for one of the proxy's errors.

    The status is the one the OpenAI side uses (:meth:`ProxyError.http_status`), except that 503
    becomes 529 ``overloaded_error``. Types by status: 400 and other 4xx
    ``invalid_request_error``, 401 ``authentication_error``, 403 ``permission_error``, 404
    ``not_found_error``, 413 ``request_too_large``, 429 ``rate_limit_error``, other 5xx
    ``api_error``.
    """
    status = exc.http_status()
    if status == 503:
        status = OVERLOADED_STATUS
    kind = _TYPES_BY_STATUS.get(status)
    if kind is None:
        kind = "invalid_request_error" if 400 <= status < 500 else "api_error"
    return status, kind


SHOULD_RETRY_LIMIT_S = 60
"""A ``Retry-After`` longer than this (seconds) also gets ``x-should-retry: false``: Anthropic's
SDKs (and Claude Code) retry 429 and 5xx at once when the wait is over a minute, which for a
used-up quota (hours) or a captcha wall (10 minutes) only hits the wall again."""


def _retry_after(headers: Mapping[str, str]) -> int:
    value = headers.get("Retry-After", "")
    return int(value) if value.isdigit() else 0


def render_error(exc: BaseException) -> tuple[int, dict[str, str], dict[str, Any]]:
    """``(status, headers, body)`` of the Anthropic error for any exception.

    Body: ``{"type": "error", "error": {"type", "message"}, "request_id"}``; headers: the
    error's own (``Retry-After`` on 429 and on the overloaded cases) plus ``request-id``, and
    ``x-should-retry: false`` when ``Retry-After`` exceeds :data:`SHOULD_RETRY_LIMIT_S`.
    Exceptions outside the proxy's tree become a bare 500 ``api_error``.
    """
    if not isinstance(exc, ProxyError):
        exc = ProxyError("internal error in the proxy; see its log")
    status, kind = error_type(exc)
    request_id = "req_" + uuid.uuid4().hex
    headers = {**exc.headers(), "request-id": request_id}
    if _retry_after(headers) > SHOULD_RETRY_LIMIT_S:
        headers["x-should-retry"] = "false"  # a quota or captcha wait: retrying now is futile
    message = exc.message
    if exc.param and exc.param not in message:
        message = f"{exc.param}: {message}"  # Anthropic names the field in the message
    body = {
        "type": "error",
        "error": {"type": kind, "message": message},
        "request_id": request_id,
    }
    return status, headers, body


ANTHROPIC = FrontDoor("anthropic", render_error)
"""The Anthropic Messages API (``/v1/messages``, ``/v1/messages/count_tokens``)."""
