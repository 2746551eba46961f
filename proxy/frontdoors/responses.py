"""The OpenAI Responses API front door (``POST /v1/responses``): request parsing and renderers.

Pure: no aiohttp, no clock or randomness of its own beyond id generation in :func:`new_ids`.

- :func:`parse_request` validates a request body into a :class:`ResponsesRequest` (input items
  become API-neutral :class:`~proxy.conversation.Turn` objects), and :func:`build_conversation`
  joins it with the history of ``previous_response_id`` into the one internal
  :class:`~proxy.conversation.Conversation`.
- :class:`ResponsesStreamRenderer` turns the translator's events into the documented event
  stream (``response.created``, ``response.in_progress``, ``response.output_item.added``,
  ``response.content_part.added``, ``response.output_text.delta`` …, ``response.completed``),
  every event with an increasing ``sequence_number``; :class:`ResponsesBodyRenderer` folds the
  same events into one ``response`` object. Both build the output through the same
  :class:`_Output`, so a streamed and a non-streamed answer hold the same items.
- :func:`dump_entry` / :func:`load_entry` are the bytes kept per response for
  ``previous_response_id`` (the conversation so far plus the response object).
- :func:`render_error` gives the OpenAI error object (the Responses API uses the same shape as
  Chat Completions).

Sources: the OpenAI OpenAPI spec (CreateResponse, Response, Response*Event) and the
openai-python types and stream accumulator; Codex CLI's reader (history built from
``response.output_item.done``, ``response.completed`` required); docs/agents.md §4, §5.2.
Reasoning is returned as a ``reasoning`` item with a ``summary_text`` part (what Codex and the
SDKs display), streamed with ``response.reasoning_summary_*`` events.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator

from proxy.api_models import Metadata, json_text, parse_body
from proxy.conversation import Conversation, ToolCallRecord, ToolChoice, ToolSpec, Turn
from proxy.errors import (
    ClientRequestError,
    ProxyError,
    UnsupportedContentError,
    UpstreamRateLimitedError,
    quote,
    to_openai,
)
from proxy.frontdoors import FrontDoor
from proxy.qwen.translate import (
    Failure,
    Finish,
    Media,
    OutEvent,
    Source,
    Sources,
    Text,
    ToolCall,
    Usage,
)
from proxy.tools.validate import check_tool_schema

__all__ = [
    "RESPONSES",
    "ResponseIds",
    "ResponsesBodyRenderer",
    "ResponsesRequest",
    "ResponsesStreamRenderer",
    "StoredResponse",
    "build_conversation",
    "dump_entry",
    "input_items_page",
    "load_entry",
    "new_ids",
    "parse_request",
    "render_error",
]

_TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
#: Tool types other than ``function`` that are accepted and not offered to the model (hosted
#: OpenAI tools this gateway cannot run). They are reported in ``ResponsesRequest.ignored_tools``.
_HOSTED_TOOL_PREFIXES = (
    "web_search",
    "file_search",
    "computer",
    "code_interpreter",
    "image_generation",
    "local_shell",
    "mcp",
    "shell",
    "apply_patch",
    "tool_search",
    "custom",
)


# -- request ---------------------------------------------------------------------------------


class _TextFormat(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    type: Literal["text", "json_object", "json_schema"]


class _TextConfig(BaseModel):
    """``text``: checked, then echoed as sent (the format is not enforced)."""

    model_config = ConfigDict(extra="allow", strict=True)
    format: _TextFormat | None = None
    verbosity: str | None = None


class _Body(BaseModel):
    """The top level of a ``POST /v1/responses`` body (fields the gateway acts on or echoes).
    Types are checked strictly, as OpenAI does: ``"stream": "yes"`` is a 400, not coerced."""

    model_config = ConfigDict(extra="allow", strict=True)
    model: str = Field(min_length=1)
    input: str | list[Any] | None = None
    instructions: str | None = None
    tools: list[Any] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    stream: bool | None = False
    previous_response_id: str | None = None
    reasoning: dict[str, Any] | None = None
    store: bool | None = True
    max_output_tokens: int | None = Field(default=None, ge=1)
    metadata: Metadata | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    text: dict[str, Any] | None = None
    truncation: Literal["auto", "disabled"] | None = None
    user: str | None = None
    include: list[str] | None = None
    # accepted and ignored, type-checked as OpenAI does
    background: bool | None = None
    max_tool_calls: int | None = Field(default=None, ge=1)
    prompt: dict[str, Any] | None = None
    prompt_cache_key: str | None = None
    safety_identifier: str | None = None
    service_tier: str | None = None
    stream_options: dict[str, Any] | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)

    @field_validator("text")
    @classmethod
    def _text_config(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            _TextConfig.model_validate(value)
        return value


@dataclass(slots=True)
class ResponsesRequest:
    """A validated Responses request.

    ``turns`` are the ``input`` items as history turns (``instructions`` not included: they
    belong to this request only and are not carried to a follow-up, as on OpenAI).
    ``thinking`` is ``None`` unless ``reasoning.effort`` says on (``low``…``xhigh``) or off
    (``none``, ``minimal``). ``echo`` holds the request fields the response object repeats;
    ``ignored_tools`` the types of hosted tools that were accepted but not offered;
    ``namespaces`` maps a tool offered from a ``namespace`` tool to that namespace's name;
    ``input_items`` the ``input`` as items with ids (for ``GET …/input_items``);
    ``answers_elsewhere`` the ``(index, call_id)`` of each ``function_call_output`` item whose
    ``function_call`` is not in ``input`` (it must be in the previous response).
    """

    model: str
    turns: list[Turn]
    instructions: str | None = None
    tools: tuple[ToolSpec, ...] = ()
    tool_choice: ToolChoice = field(default_factory=ToolChoice)
    parallel_tool_calls: bool = True
    stream: bool = False
    previous_response_id: str | None = None
    thinking: bool | None = None
    store: bool = True
    max_output_tokens: int | None = None
    echo: dict[str, Any] = field(default_factory=dict)
    ignored_tools: tuple[str, ...] = ()
    namespaces: dict[str, str] = field(default_factory=dict)
    input_items: list[dict[str, Any]] = field(default_factory=list)
    answers_elsewhere: tuple[tuple[int, str], ...] = ()


def parse_request(obj: Any) -> ResponsesRequest:
    """Validate a decoded ``POST /v1/responses`` body.

    Raises :class:`~proxy.errors.ClientRequestError` (400, ``param`` naming the field, e.g.
    ``input[2].call_id``) for malformed input and :class:`~proxy.errors.UnsupportedContentError`
    for item or part types the gateway cannot carry (``item_reference``, ``file_id`` images).
    """
    body = parse_body(_Body, obj)
    if body.model_extra and body.model_extra.get("conversation"):
        raise UnsupportedContentError(
            "`conversation` objects are not supported by this gateway; continue a conversation "
            "with `previous_response_id`, or send the history in `input`",
            param="conversation",
        )
    turns = _input_turns(body.input) if body.input is not None else []
    elsewhere = _answers_elsewhere(body.input) if isinstance(body.input, list) else ()
    if body.input is None and body.previous_response_id is None:
        raise ClientRequestError("`input` is required", param="input")
    toolset = _tools(body.tools or [])
    tools = tuple(toolset.specs)
    choice, choice_echo = _tool_choice(body.tool_choice, tools)
    thinking, reasoning_echo = _reasoning(body.reasoning)
    parallel = True if body.parallel_tool_calls is None else body.parallel_tool_calls
    echo = {
        "instructions": body.instructions,
        "max_output_tokens": body.max_output_tokens,
        "metadata": body.metadata or {},
        "parallel_tool_calls": parallel,
        "previous_response_id": body.previous_response_id,
        "reasoning": reasoning_echo,
        "store": body.store is not False,
        "temperature": body.temperature if body.temperature is not None else 1.0,
        "text": body.text or {"format": {"type": "text"}},
        "tool_choice": choice_echo,
        "tools": toolset.echo,
        "top_p": body.top_p if body.top_p is not None else 1.0,
        "truncation": body.truncation or "disabled",
        "user": body.user,
    }
    return ResponsesRequest(
        model=body.model,
        turns=turns,
        instructions=body.instructions or None,
        tools=tools,
        tool_choice=choice,
        parallel_tool_calls=parallel,
        stream=bool(body.stream),
        previous_response_id=body.previous_response_id or None,
        thinking=thinking,
        store=body.store is not False,
        max_output_tokens=body.max_output_tokens,
        echo=echo,
        ignored_tools=tuple(toolset.ignored),
        namespaces=toolset.namespaces,
        input_items=_input_items(body.input) if body.input is not None else [],
        answers_elsewhere=elsewhere,
    )


def build_conversation(req: ResponsesRequest, history: Sequence[Turn] = ()) -> Conversation:
    """The internal conversation: ``instructions`` (a system turn), then the stored ``history``
    of ``previous_response_id``, then this request's input turns.

    A ``function_call_output`` whose call is known (in the history or the input) gets the
    tool's name. Raises :class:`ClientRequestError`: param ``input`` when no turn is left;
    ``input[i].call_id`` for a ``function_call_output`` that answers no ``function_call`` of
    the input or the history, as OpenAI refuses it ("No tool call found for function call
    output").
    """
    if req.answers_elsewhere:
        made = {c.id for t in history for c in t.tool_calls}
        for i, call_id in req.answers_elsewhere:
            if call_id not in made:
                where = "`input`" + (" or the previous response" if history else "")
                raise ClientRequestError(
                    f"no function_call with the call_id {quote(call_id)} is in {where}: a "
                    "function_call_output answers a call the model made",
                    param=f"input[{i}].call_id",
                )
    turns: list[Turn] = []
    if req.instructions:
        turns.append(Turn(role="system", content=req.instructions))
    turns.extend(_copy_turn(t) for t in history)
    turns.extend(_copy_turn(t) for t in req.turns)
    names: dict[str, str] = {}
    for turn in turns:
        for call in turn.tool_calls:
            names[call.id] = call.name
        if turn.role == "tool" and turn.name is None and turn.tool_call_id in names:
            turn.name = names[turn.tool_call_id]
    if not any(t.role != "system" for t in turns):
        raise ClientRequestError("`input` holds no message to answer", param="input")
    return Conversation(
        model=req.model,
        turns=turns,
        tools=req.tools,
        tool_choice=req.tool_choice,
        parallel_tool_calls=req.parallel_tool_calls,
        stream=req.stream,
        thinking=req.thinking,
        max_output_tokens=req.max_output_tokens,
        include_usage=True,
        metadata={"front_door": "responses"},
        turns_param="input",
    )


def _copy_turn(t: Turn) -> Turn:
    content = list(t.content) if isinstance(t.content, list) else t.content
    return Turn(
        role=t.role,
        content=content,
        tool_calls=t.tool_calls,
        tool_call_id=t.tool_call_id,
        name=t.name,
        reasoning=t.reasoning,
        where=t.where,
        part_params=t.part_params,
    )


def _str_field(item: dict[str, Any], key: str, param: str) -> str:
    """``item[key]`` as a non-empty string, else a 400 naming ``<param>.<key>``."""
    value = item.get(key)
    if isinstance(value, str) and value:
        return value
    raise ClientRequestError(f"`{param}.{key}` must be a non-empty string", param=f"{param}.{key}")


def _input_turns(value: str | list[Any]) -> list[Turn]:
    """``input`` as turns. Items: messages (``type: "message"`` or just a ``role``),
    ``function_call``, ``function_call_output`` and ``reasoning``."""
    if isinstance(value, str):
        if not value:
            raise ClientRequestError("`input` is an empty string", param="input")
        return [Turn(role="user", content=value, where="input")]
    turns: list[Turn] = []
    pending_reasoning: list[str] = []

    def assistant_turn() -> Turn:
        """The assistant turn function calls attach to (the last one, or a new one)."""
        if turns and turns[-1].role == "assistant":
            return turns[-1]
        turn = Turn(role="assistant", content=None)
        _take_reasoning(turn, pending_reasoning)
        turns.append(turn)
        return turn

    for i, item in enumerate(value):
        param = f"input[{i}]"
        if isinstance(item, str):  # tolerated: a bare string is a user message
            turns.append(Turn(role="user", content=item, where=param))
            continue
        if not isinstance(item, dict):
            raise ClientRequestError(f"`{param}` must be an object", param=param)
        kind = item.get("type")
        if kind is None and "role" in item:
            kind = "message"
        if kind == "message":
            turn = _message_turn(item, param)
            if turn.role == "assistant":
                if turns and turns[-1].role == "assistant" and not turns[-1].tool_calls:
                    prev = turns[-1]  # an assistant answer split over several message items
                    prev.content = _join_content(prev.content, turn.content)
                    continue
                _take_reasoning(turn, pending_reasoning)
            turns.append(turn)
        elif kind == "function_call":
            call = ToolCallRecord(
                id=_str_field(item, "call_id", param),
                name=_str_field(item, "name", param),
                arguments=_arguments(item.get("arguments"), param),
            )
            owner = assistant_turn()
            owner.tool_calls = (*owner.tool_calls, call)
        elif kind == "function_call_output":
            content, part_params = _output_content(item.get("output"), f"{param}.output")
            turns.append(
                Turn(
                    role="tool",
                    content=content,
                    tool_call_id=_str_field(item, "call_id", param),
                    where=f"{param}.output",
                    part_params=part_params,
                )
            )
        elif kind == "reasoning":
            text = _reasoning_text(item)
            if text:
                pending_reasoning.append(text)
        elif kind == "item_reference":
            raise UnsupportedContentError(
                "`item_reference` input items are not supported by this gateway; send the items "
                "themselves or use `previous_response_id`",
                param=param,
            )
        else:
            raise UnsupportedContentError(
                f"input items of type {quote(kind)} are not supported by this gateway (supported: "
                "message, function_call, function_call_output, reasoning)",
                param=f"{param}.type",
            )
    return turns


def _answers_elsewhere(items: list[Any]) -> tuple[tuple[int, str], ...]:
    """``(index, call_id)`` of the (validated) ``function_call_output`` items of ``items`` whose
    call is no ``function_call`` item of ``items``."""
    made = {
        item["call_id"]
        for item in items
        if isinstance(item, dict) and item.get("type") == "function_call"
    }
    return tuple(
        (i, item["call_id"])
        for i, item in enumerate(items)
        if isinstance(item, dict)
        and item.get("type") == "function_call_output"
        and item["call_id"] not in made
    )


_ITEM_PREFIX = {"message": "msg", "function_call": "fc", "function_call_output": "fco"}


def _input_items(value: str | list[Any]) -> list[dict[str, Any]]:
    """The (already validated) ``input`` as the API lists it back: every item a typed object
    with an ``id`` and ``status``, message text as ``input_text`` (``output_text`` for the
    assistant) parts."""
    raw: list[Any] = [value] if isinstance(value, str) else value
    out: list[dict[str, Any]] = []
    for item in raw:
        d: dict[str, Any] = (
            {"role": "user", "content": item} if isinstance(item, str) else dict(item)
        )
        kind = d.get("type") or "message"
        d["type"] = kind
        if kind == "message" and isinstance(d.get("content"), str):
            part = "output_text" if d.get("role") == "assistant" else "input_text"
            d["content"] = [{"type": part, "text": d["content"]}]
        d.setdefault("id", _item_id(_ITEM_PREFIX.get(kind, "item")))
        d.setdefault("status", "completed")
        out.append(d)
    return out


def _take_reasoning(turn: Turn, pending: list[str]) -> None:
    if pending:
        turn.reasoning = "\n\n".join(pending)
        pending.clear()


def _join_content(
    a: str | list[dict[str, Any]] | None, b: str | list[dict[str, Any]] | None
) -> str | list[dict[str, Any]] | None:
    if a is None or a == "":
        return b
    if b is None or b == "":
        return a
    if isinstance(a, str) and isinstance(b, str):
        return a + "\n\n" + b
    la = [{"type": "text", "text": a}] if isinstance(a, str) else a
    lb = [{"type": "text", "text": b}] if isinstance(b, str) else b
    return [*la, *lb]


_ROLES: dict[str, Literal["system", "user", "assistant"]] = {
    "user": "user",
    "system": "system",
    "developer": "system",
    "assistant": "assistant",
}


def _message_turn(item: dict[str, Any], param: str) -> Turn:
    raw_role = item.get("role")
    role = _ROLES.get(raw_role) if isinstance(raw_role, str) else None
    if role is None:
        raise ClientRequestError(
            f"`{param}.role` must be one of user, assistant, system, developer",
            param=f"{param}.role",
        )
    content = item.get("content")
    where = f"{param}.content"
    if isinstance(content, str):
        return Turn(role=role, content=content, where=where)
    if not isinstance(content, list):
        raise ClientRequestError(
            f"`{param}.content` must be a string or a list of content parts", param=where
        )
    parts = [_part(p, f"{where}[{j}]") for j, p in enumerate(content)]
    if all(p.get("type") == "text" for p, _ in parts):
        return Turn(role=role, content="\n".join(p["text"] for p, _ in parts), where=where)
    if role != "user":
        raise UnsupportedContentError(
            f"only user messages may carry images or files (`{param}` is {item.get('role')})",
            param=where,
        )
    return Turn(
        role=role,
        content=[p for p, _ in parts],
        where=where,
        part_params=tuple(at for _, at in parts),
    )


def _part(part: Any, param: str) -> tuple[dict[str, Any], str]:
    """One Responses content part as an OpenAI chat content part, and the path of what it
    carries (its text, URL or data) for the errors about it."""
    if not isinstance(part, dict):
        raise ClientRequestError(f"`{param}` must be an object", param=param)
    kind = part.get("type")
    if kind in ("input_text", "output_text", "text", "summary_text"):
        text = part.get("text")
        if not isinstance(text, str):
            raise ClientRequestError(f"`{param}.text` must be a string", param=f"{param}.text")
        return {"type": "text", "text": text}, f"{param}.text"
    if kind == "refusal":
        return {"type": "text", "text": str(part.get("refusal") or "")}, f"{param}.refusal"
    if kind == "input_image":
        url = part.get("image_url")
        at = f"{param}.image_url"
        if isinstance(url, dict):  # tolerated: the chat shape {"url": ...}
            url = url.get("url")
            at += ".url"
        if isinstance(url, str) and url:
            return {"type": "image_url", "image_url": {"url": url}}, at
        if part.get("file_id"):
            raise UnsupportedContentError(
                "`input_image` with a `file_id` is not supported; send `image_url` (an https URL "
                "or a data: URI)",
                param=f"{param}.file_id",
            )
        raise ClientRequestError(
            f"`{param}.image_url` must be a URL or a data: URI", param=f"{param}.image_url"
        )
    if kind == "input_file":
        key = "file_data" if part.get("file_data") else "file_url"
        data = part.get(key)
        if not isinstance(data, str) or not data:
            raise UnsupportedContentError(
                "`input_file` parts must carry `file_data` (a data: URI) or `file_url`; uploaded "
                "`file_id`s are not supported",
                param=param,
            )
        ref: dict[str, Any] = {"file_data": data}
        if isinstance(part.get("filename"), str):
            ref["filename"] = part["filename"]
        return {"type": "file", "file": ref}, f"{param}.{key}"
    raise UnsupportedContentError(
        f"content parts of type {quote(kind)} are not supported (supported: input_text, "
        "input_image, input_file, output_text)",
        param=f"{param}.type",
    )


def _arguments(value: Any, param: str) -> str:
    if isinstance(value, str):
        return value or "{}"
    if isinstance(value, dict):  # tolerated: arguments as an object
        return json_text(value, f"{param}.arguments")
    raise ClientRequestError(
        f"`{param}.arguments` must be a JSON string", param=f"{param}.arguments"
    )


def _output_content(value: Any, param: str) -> tuple[str | list[dict[str, Any]], tuple[str, ...]]:
    """A ``function_call_output``'s ``output`` (at ``param``) as turn content, and the path of
    each of its parts when it is a list of parts."""
    if isinstance(value, str):
        return value, ()
    if isinstance(value, list):
        parts = [_part(p, f"{param}[{j}]") for j, p in enumerate(value)]
        if all(p["type"] == "text" for p, _ in parts):
            return "\n".join(p["text"] for p, _ in parts), ()
        return [p for p, _ in parts], tuple(at for _, at in parts)
    if value is None:
        raise ClientRequestError(f"`{param}` is required", param=param)
    return json_text(value, param), ()  # tolerated: a JSON value


def _reasoning_text(item: dict[str, Any]) -> str:
    texts: list[str] = []
    for key in ("summary", "content"):
        parts = item.get(key)
        if isinstance(parts, list):
            texts.extend(
                p["text"] for p in parts if isinstance(p, dict) and isinstance(p.get("text"), str)
            )
    return "\n\n".join(t for t in texts if t)


@dataclass(slots=True)
class _ToolSet:
    specs: list[ToolSpec] = field(default_factory=list)
    echo: list[dict[str, Any]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    namespaces: dict[str, str] = field(default_factory=dict)


def _tools(raw: list[Any]) -> _ToolSet:
    """Function tools, also those grouped in a ``namespace`` tool (offered under their own
    names; a call of one carries ``namespace``). Hosted tool types are ignored (listed)."""
    out = _ToolSet()
    for i, tool in enumerate(raw):
        param = f"tools[{i}]"
        if not isinstance(tool, dict):
            raise ClientRequestError(f"`{param}` must be an object", param=param)
        kind = tool.get("type")
        if kind == "namespace" and isinstance(tool.get("tools"), list):
            ns = tool.get("name")
            for j, inner in enumerate(tool["tools"]):
                if isinstance(inner, dict) and inner.get("type") == "function":
                    name = _function_tool(inner, f"{param}.tools[{j}]", out)
                    if isinstance(ns, str) and ns:
                        out.namespaces[name] = ns
            out.echo.append(tool)
            continue
        if kind != "function":
            if isinstance(kind, str) and kind.startswith(_HOSTED_TOOL_PREFIXES):
                out.ignored.append(kind)
                continue
            raise ClientRequestError(
                f"`{param}.type` {quote(kind)} is not supported; use function tools",
                param=f"{param}.type",
            )
        fn = tool.get("function")
        if isinstance(fn, dict) and "name" not in tool:  # tolerated: the Chat Completions shape
            tool = {"type": "function", **fn}
        _function_tool(tool, param, out)
        out.echo.append(
            {
                "type": "function",
                "name": tool["name"],
                "description": tool.get("description"),
                "parameters": tool.get("parameters"),
                "strict": bool(tool.get("strict", False)),
            }
        )
    return out


def _function_tool(tool: dict[str, Any], param: str, out: _ToolSet) -> str:
    """Validate one function tool and add its spec; returns its name."""
    name = tool.get("name")
    if not isinstance(name, str) or not _TOOL_NAME.match(name):
        raise ClientRequestError(
            f"`{param}.name` must be 1-64 characters of a-z, A-Z, 0-9, _ and -",
            param=f"{param}.name",
        )
    if any(s.name == name for s in out.specs):
        raise ClientRequestError(
            f"`{param}.name`: the tool `{name}` is defined twice", param=f"{param}.name"
        )
    params = tool.get("parameters")
    if params is not None:
        params = check_tool_schema(params, param=f"{param}.parameters")
    description = tool.get("description")
    if description is not None and not isinstance(description, str):
        raise ClientRequestError(
            f"`{param}.description` must be a string", param=f"{param}.description"
        )
    out.specs.append(ToolSpec(name=name, description=description or "", parameters=params))
    return name


def _tool_choice(value: Any, tools: Sequence[ToolSpec]) -> tuple[ToolChoice, Any]:
    """``tool_choice``: ``auto`` / ``none`` / ``required``, ``{"type": "function", "name"}`` or
    ``{"type": "allowed_tools", "mode", "tools"}`` (its mode is used; the list is not)."""
    names = {t.name for t in tools}
    if value is None:
        return ToolChoice("auto"), "auto"
    if value in ("auto", "none", "required"):
        if value == "required" and not tools:
            raise ClientRequestError("`tool_choice` 'required' needs `tools`", param="tool_choice")
        return ToolChoice(value), value
    if isinstance(value, dict):
        kind = value.get("type")
        if kind == "function":
            fn = value.get("function")
            name = value.get("name") or (fn.get("name") if isinstance(fn, dict) else None)
            if not isinstance(name, str) or name not in names:
                raise ClientRequestError(
                    f"`tool_choice` names the function {quote(name)}, which is not in `tools`",
                    param="tool_choice",
                )
            return ToolChoice("named", name), {"type": "function", "name": name}
        if kind == "allowed_tools":
            mode = value.get("mode", "auto")
            if mode in ("auto", "required"):
                return ToolChoice(mode), value
    raise ClientRequestError(
        '`tool_choice` must be auto, none, required or {"type": "function", "name": ...}',
        param="tool_choice",
    )


_EFFORTS_OFF = frozenset({"none", "minimal"})
_EFFORTS_ON = frozenset({"low", "medium", "high", "xhigh"})


def _reasoning(value: dict[str, Any] | None) -> tuple[bool | None, dict[str, Any]]:
    if not value:
        return None, {"effort": None, "summary": None}
    effort = value.get("effort")
    if effort is not None and (
        not isinstance(effort, str) or effort not in _EFFORTS_OFF | _EFFORTS_ON
    ):
        raise ClientRequestError(
            "`reasoning.effort` must be none, minimal, low, medium, high or xhigh",
            param="reasoning.effort",
        )
    thinking = None if effort is None else effort in _EFFORTS_ON
    return thinking, {"effort": effort, "summary": value.get("summary")}


# -- ids ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ResponseIds:
    """The id (``resp_`` + 32 hex) and ``created_at`` (Unix seconds) of one response."""

    response_id: str
    created_at: int


def new_ids() -> ResponseIds:
    """Fresh ids for one response."""
    return ResponseIds(f"resp_{uuid.uuid4().hex}", int(time.time()))


def _item_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


# -- output ------------------------------------------------------------------------------------

Event = dict[str, Any]


def _usage(usage: Usage | None) -> dict[str, Any]:
    u = usage or Usage(0, 0)
    return {
        "input_tokens": u.prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": u.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": u.total_tokens,
    }


def _annotation(s: Source) -> dict[str, Any]:
    return {
        "type": "url_citation",
        "url": s.url,
        "title": s.title,
        "start_index": 0,
        "end_index": 0,
    }


def _failed_code(error: ProxyError) -> str:
    """``response.error.code`` from the spec's list: rate limits, else ``server_error``."""
    return "rate_limit_exceeded" if isinstance(error, UpstreamRateLimitedError) else "server_error"


def _failed_message(error: ProxyError) -> str:
    message = error.message
    if isinstance(error, UpstreamRateLimitedError) and error.retry_after_s:
        # Codex reads the delay from this wording ("try again in Ns").
        message += f" Please try again in {error.retry_after_s}s."
    return message


class _Output:
    """The output items of one response, built from translator events.

    Each ``on_*`` method updates the items and returns the stream events it implies (with
    sequence numbers). Items: at most one ``message`` or ``reasoning`` item is open at a time;
    text of the other kind, a tool call or the end closes it. The response object is
    :meth:`response`.
    """

    def __init__(self, req: ResponsesRequest, ids: ResponseIds) -> None:
        self.req = req
        self.ids = ids
        self.items: list[dict[str, Any]] = []
        self.status = "in_progress"
        self.error: ProxyError | None = None
        self.incomplete_reason: str | None = None
        self.usage: Usage | None = None
        self._seq = 0
        self._open: dict[str, Any] | None = None
        self._open_index = -1
        self._text: list[str] = []
        self._delta_head = b""
        self._annotations: list[dict[str, Any]] = []
        self._pending_sources: list[Source] = []
        self._calls: list[ToolCall] = []

    # events

    def _ev(self, kind: str, body: dict[str, Any]) -> Event:
        ev = {"type": kind, **body, "sequence_number": self._seq}
        self._seq += 1
        return ev

    def response(self) -> dict[str, Any]:
        """The response object in its current state."""
        echo = self.req.echo
        error = None
        if self.error is not None:
            error = {"code": _failed_code(self.error), "message": _failed_message(self.error)}
        return {
            "id": self.ids.response_id,
            "object": "response",
            "created_at": self.ids.created_at,
            "status": self.status,
            "background": False,
            "error": error,
            "incomplete_details": (
                {"reason": self.incomplete_reason} if self.incomplete_reason else None
            ),
            "instructions": echo.get("instructions"),
            "max_output_tokens": echo.get("max_output_tokens"),
            "model": self.req.model,
            "output": [dict(i) for i in self.items],
            "parallel_tool_calls": echo.get("parallel_tool_calls", True),
            "previous_response_id": echo.get("previous_response_id"),
            "reasoning": echo.get("reasoning", {"effort": None, "summary": None}),
            "service_tier": "default",
            "store": echo.get("store", True),
            "temperature": echo.get("temperature", 1.0),
            "text": echo.get("text", {"format": {"type": "text"}}),
            "tool_choice": echo.get("tool_choice", "auto"),
            "tools": echo.get("tools", []),
            "top_p": echo.get("top_p", 1.0),
            "truncation": echo.get("truncation", "disabled"),
            "usage": _usage(self.usage) if self.status != "in_progress" else None,
            "user": echo.get("user"),
            "metadata": echo.get("metadata", {}),
        }

    def start(self) -> list[Event]:
        """``response.created`` and ``response.in_progress``."""
        return [
            self._ev("response.created", {"response": self.response()}),
            self._ev("response.in_progress", {"response": self.response()}),
        ]

    def on_event(self, event: OutEvent, usage: Usage | None) -> list[Event]:
        """The stream events for one translator event (``usage``: the latest counts)."""
        if type(event) is Text:
            if event.kind == "content":
                return self._content(event.text)
            return self._reasoning(event.text)
        if isinstance(event, Media):
            return self._content(event.markdown())
        if isinstance(event, Sources):
            return self._sources(event.items)
        if isinstance(event, ToolCall):
            return self._tool_call(event)
        if isinstance(event, Finish):
            return self._finish(event.reason, usage)
        if isinstance(event, Failure):
            return self._failure(event.error, usage)
        raise TypeError(f"unknown event {event!r}")

    # items

    def _close(self, status: str = "completed") -> list[Event]:
        item = self._open
        if item is None:
            return []
        self._open = None
        text = "".join(self._text)
        self._text = []
        idx = self._open_index
        base = {"item_id": item["id"], "output_index": idx}
        if item["type"] == "message":
            part = {
                "type": "output_text",
                "text": text,
                "annotations": self._annotations,
                "logprobs": [],
            }
            self._annotations = []
            item.update(status=status, content=[part])
            events = [
                self._ev(
                    "response.output_text.done",
                    {**base, "content_index": 0, "text": text, "logprobs": []},
                ),
                self._ev("response.content_part.done", {**base, "content_index": 0, "part": part}),
            ]
        else:
            part = {"type": "summary_text", "text": text}
            item.update(summary=[part])
            events = [
                self._ev(
                    "response.reasoning_summary_text.done",
                    {**base, "summary_index": 0, "text": text},
                ),
                self._ev(
                    "response.reasoning_summary_part.done",
                    {**base, "summary_index": 0, "part": part},
                ),
            ]
        events.append(
            self._ev("response.output_item.done", {"output_index": idx, "item": dict(item)})
        )
        return events

    def _open_item(self, item: dict[str, Any]) -> Event:
        self.items.append(item)
        self._open = item
        self._open_index = len(self.items) - 1
        # The constant head of this item's delta frames, encoded once (the hot path).
        if item["type"] == "message":
            kind, where = "response.output_text.delta", b'"content_index":0,"logprobs":[]'
        else:
            kind, where = "response.reasoning_summary_text.delta", b'"summary_index":0'
        self._delta_head = (
            f'event: {kind}\ndata: {{"type":"{kind}","item_id":"{item["id"]}",'
            f'"output_index":{self._open_index},'.encode()
            + where
            + b',"delta":'
        )
        return self._ev(
            "response.output_item.added", {"output_index": self._open_index, "item": dict(item)}
        )

    def delta_frame(self, text: Text) -> bytes | None:
        """The SSE frame of ``text`` when it continues the open item (same bytes as the
        ``response.output_text.delta`` / ``response.reasoning_summary_text.delta`` event, built
        from a cached head), else ``None`` (use :meth:`on_event`)."""
        item = self._open
        if item is None or item["type"] != ("message" if text.kind == "content" else "reasoning"):
            return None
        self._text.append(text.text)
        seq = self._seq
        self._seq += 1
        return (
            self._delta_head
            + orjson.dumps(text.text)
            + b',"sequence_number":'
            + str(seq).encode()
            + b"}\n\n"
        )

    def _content(self, text: str) -> list[Event]:
        events: list[Event] = []
        if self._open is None or self._open["type"] != "message":
            events.extend(self._close())
            item_id = _item_id("msg")
            events.append(
                self._open_item(
                    {
                        "id": item_id,
                        "type": "message",
                        "status": "in_progress",
                        "role": "assistant",
                        "content": [],
                    }
                )
            )
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            events.append(
                self._ev(
                    "response.content_part.added",
                    {
                        "item_id": item_id,
                        "output_index": self._open_index,
                        "content_index": 0,
                        "part": part,
                    },
                )
            )
            if self._pending_sources:
                events.extend(self._annotate(self._pending_sources))
                self._pending_sources = []
        assert self._open is not None
        self._text.append(text)
        events.append(
            self._ev(
                "response.output_text.delta",
                {
                    "item_id": self._open["id"],
                    "output_index": self._open_index,
                    "content_index": 0,
                    "delta": text,
                    "logprobs": [],
                },
            )
        )
        return events

    def _reasoning(self, text: str) -> list[Event]:
        events: list[Event] = []
        if self._open is None or self._open["type"] != "reasoning":
            events.extend(self._close())
            item_id = _item_id("rs")
            events.append(self._open_item({"id": item_id, "type": "reasoning", "summary": []}))
            events.append(
                self._ev(
                    "response.reasoning_summary_part.added",
                    {
                        "item_id": item_id,
                        "output_index": self._open_index,
                        "summary_index": 0,
                        "part": {"type": "summary_text", "text": ""},
                    },
                )
            )
        assert self._open is not None
        self._text.append(text)
        events.append(
            self._ev(
                "response.reasoning_summary_text.delta",
                {
                    "item_id": self._open["id"],
                    "output_index": self._open_index,
                    "summary_index": 0,
                    "delta": text,
                },
            )
        )
        return events

    def _sources(self, items: Iterable[Source]) -> list[Event]:
        if self._open is not None and self._open["type"] == "message":
            return self._annotate(items)
        self._pending_sources.extend(items)
        return []

    def _annotate(self, items: Iterable[Source]) -> list[Event]:
        assert self._open is not None
        events = []
        for s in items:
            ann = _annotation(s)
            self._annotations.append(ann)
            events.append(
                self._ev(
                    "response.output_text.annotation.added",
                    {
                        "item_id": self._open["id"],
                        "output_index": self._open_index,
                        "content_index": 0,
                        "annotation_index": len(self._annotations) - 1,
                        "annotation": ann,
                    },
                )
            )
        return events

    def _tool_call(self, call: ToolCall) -> list[Event]:
        events = self._close()
        self._calls.append(call)
        suffix = call.id.removeprefix("call_")
        item = {
            "id": f"fc_{suffix}",
            "type": "function_call",
            "status": "in_progress",
            "call_id": call.id,
            "name": call.name,
            "arguments": "",
        }
        namespace = self.req.namespaces.get(call.name)
        if namespace is not None:
            item["namespace"] = namespace
        self.items.append(item)
        idx = len(self.items) - 1
        events.append(
            self._ev("response.output_item.added", {"output_index": idx, "item": dict(item)})
        )
        base = {"item_id": item["id"], "output_index": idx}
        events.append(
            self._ev("response.function_call_arguments.delta", {**base, "delta": call.arguments})
        )
        events.append(
            self._ev(
                "response.function_call_arguments.done",
                {**base, "name": call.name, "arguments": call.arguments},
            )
        )
        item.update(status="completed", arguments=call.arguments)
        events.append(
            self._ev("response.output_item.done", {"output_index": idx, "item": dict(item)})
        )
        return events

    def _finish(self, reason: str, usage: Usage | None) -> list[Event]:
        self.usage = usage
        if reason == "length":
            events = self._close("incomplete")
            self.status = "incomplete"
            self.incomplete_reason = "max_output_tokens"
            events.append(self._ev("response.incomplete", {"response": self.response()}))
            return events
        events = self._close()
        self.status = "completed"
        events.append(self._ev("response.completed", {"response": self.response()}))
        return events

    def _failure(self, error: ProxyError, usage: Usage | None) -> list[Event]:
        """A failure after output began: the open item stays ``incomplete`` (no done events),
        then an ``error`` event and ``response.failed``."""
        self.usage = usage
        if self._open is not None:
            if self._open["type"] == "message":
                self._open.update(
                    status="incomplete",
                    content=[
                        {
                            "type": "output_text",
                            "text": "".join(self._text),
                            "annotations": self._annotations,
                            "logprobs": [],
                        }
                    ],
                )
            else:
                self._open.update(summary=[{"type": "summary_text", "text": "".join(self._text)}])
            self._open = None
        self.status = "failed"
        self.error = error
        return [
            self._ev(
                "error",
                {"code": error.error_code(), "message": error.message, "param": error.param},
            ),
            self._ev("response.failed", {"response": self.response()}),
        ]

    # history

    def assistant_turn(self) -> Turn:
        """This response's output as one assistant turn of history: the message text, the
        reasoning summary and the function calls."""
        texts: list[str] = []
        reasoning: list[str] = []
        for item in self.items:
            if item["type"] == "message":
                texts.extend(p["text"] for p in item["content"] if p.get("text"))
            elif item["type"] == "reasoning":
                reasoning.extend(p["text"] for p in item["summary"] if p.get("text"))
        return Turn(
            role="assistant",
            content="\n\n".join(texts) if texts else None,
            tool_calls=tuple(ToolCallRecord(c.id, c.name, c.arguments) for c in self._calls),
            reasoning="\n\n".join(reasoning) if reasoning else None,
        )


def _sse(event: Event) -> bytes:
    return b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


class ResponsesStreamRenderer:
    """Renders translator events as the Responses event stream (``text/event-stream``).

    Every frame is ``event: <type>\\ndata: <json>\\n\\n`` and carries ``sequence_number`` (0, 1,
    …). :meth:`head` (``response.created``, ``response.in_progress``) is sent first; the
    stream ends with ``response.completed`` (``response.incomplete`` when cut at
    ``max_output_tokens``), or, on a failure after the head was sent, an ``error`` event then
    ``response.failed``. There is no ``[DONE]`` line in this API.
    """

    content_type = "text/event-stream; charset=utf-8"
    #: Reasoning as separate events (reasoning items), whatever the ``reasoning`` setting says
    #: for chat (the relay reads it).
    reasoning_mode: Literal["field"] = "field"

    def __init__(self, req: ResponsesRequest, ids: ResponseIds) -> None:
        self.id = ids.response_id
        self.output = _Output(req, ids)
        # Built now, so it shows the response as it starts (no output yet) and holds sequence
        # numbers 0 and 1, whether the relay asks for it before or after the first render.
        self._head = b"".join(_sse(e) for e in self.output.start())

    def head(self) -> bytes:
        """``response.created`` and ``response.in_progress`` (sequence numbers 0 and 1), as of
        the start of the response (the same bytes whenever it is called)."""
        return self._head

    def render(self, events: list[OutEvent], usage: Usage | None) -> bytes:
        """The frames for a batch of translator events (the closing event included)."""
        out = self.output
        parts: list[bytes] = []
        for ev in events:
            if type(ev) is Text:
                frame = out.delta_frame(ev)
                if frame is not None:
                    parts.append(frame)
                    continue
            parts.extend(_sse(e) for e in out.on_event(ev, usage))
        return b"".join(parts)

    def keepalive(self) -> bytes:
        """An SSE comment line (ignored by SSE readers)."""
        return b": keep-alive\n\n"

    @property
    def done(self) -> bool:
        """True once a terminal event was rendered."""
        return self.output.status != "in_progress"


class ResponsesBodyRenderer:
    """Folds translator events into one ``response`` object (``stream: false``)."""

    reasoning_mode: Literal["field"] = "field"

    def __init__(self, req: ResponsesRequest, ids: ResponseIds) -> None:
        self.id = ids.response_id
        self.output = _Output(req, ids)

    def add(self, event: OutEvent) -> None:
        """Record one event."""
        self.output.on_event(event, None)

    def body(self, usage: Usage | None) -> dict[str, Any]:
        """The response object. Raises the recorded :class:`UpstreamError` if the answer failed
        (the client then gets an HTTP error, as with Chat Completions)."""
        out = self.output
        if out.error is not None:
            raise out.error
        out.usage = usage
        if out.status == "in_progress":  # no closing event: treated as completed
            out.on_event(Finish("stop"), usage)
        return out.response()


def render_error(exc: ProxyError) -> tuple[int, dict[str, str], dict[str, Any]]:
    """``(status, headers, body)`` for an error before the stream began: the Responses API uses
    the OpenAI error object ``{"error": {message, type, param, code}}`` (:func:`to_openai`)."""
    return to_openai(exc)


RESPONSES = FrontDoor("responses", render_error)
"""The Responses API front door (for the app's error middleware)."""


# -- stored responses (previous_response_id) ---------------------------------------------------


@dataclass(slots=True)
class StoredResponse:
    """What is kept per response: the whole conversation after it (input and output turns,
    without ``instructions``), the response object (for ``GET /v1/responses/{id}``) and the
    ``scope`` of the client that made it (a hash of its API key, ``""`` without one); its
    ``input_items`` (:attr:`ResponsesRequest.input_items`)."""

    turns: list[Turn]
    response: dict[str, Any]
    scope: str = ""
    input_items: list[dict[str, Any]] = field(default_factory=list)


def _turn_dict(t: Turn) -> dict[str, Any]:
    d: dict[str, Any] = {"role": t.role}
    if t.content is not None:
        d["content"] = t.content
    if t.tool_calls:
        d["tool_calls"] = [[c.id, c.name, c.arguments] for c in t.tool_calls]
    if t.tool_call_id is not None:
        d["tool_call_id"] = t.tool_call_id
    if t.name is not None:
        d["name"] = t.name
    if t.reasoning is not None:
        d["reasoning"] = t.reasoning
    return d


def _turn_of(d: dict[str, Any]) -> Turn:
    return Turn(
        role=d["role"],
        content=d.get("content"),
        tool_calls=tuple(ToolCallRecord(*c) for c in d.get("tool_calls", ())),
        tool_call_id=d.get("tool_call_id"),
        name=d.get("name"),
        reasoning=d.get("reasoning"),
    )


def dump_entry(
    turns: Sequence[Turn],
    response: dict[str, Any],
    *,
    scope: str = "",
    input_items: Sequence[dict[str, Any]] = (),
) -> bytes:
    """The bytes stored for a finished response: the conversation after it (``turns``: the
    previous history, its input, its output as an assistant turn), the response object, the
    client's ``scope`` and the request's ``input_items``."""
    return orjson.dumps(
        {
            "v": 1,
            "turns": [_turn_dict(t) for t in turns],
            "response": response,
            "scope": scope,
            "input_items": list(input_items),
        }
    )


def load_entry(data: bytes) -> StoredResponse:
    """Decode :func:`dump_entry`'s bytes. Raises ``ValueError`` for bytes of another shape."""
    obj = orjson.loads(data)
    if not isinstance(obj, dict) or obj.get("v") != 1:
        raise ValueError("not a stored response (version 1)")
    return StoredResponse(
        [_turn_of(d) for d in obj["turns"]],
        obj["response"],
        str(obj.get("scope", "")),
        list(obj.get("input_items", [])),
    )


def input_items_page(
    items: Sequence[dict[str, Any]],
    *,
    order: str = "desc",
    limit: int = 20,
    after: str | None = None,
) -> dict[str, Any]:
    """One page of ``GET /v1/responses/{id}/input_items``: ``{"object": "list", "data",
    "first_id", "last_id", "has_more"}``, ``order`` ``asc``/``desc`` (default, newest first),
    at most ``limit`` (1-100) items after the item ``after``. Raises :class:`ClientRequestError`
    (``param`` ``order``, ``limit`` or ``after``)."""
    if order not in ("asc", "desc"):
        raise ClientRequestError("`order` must be asc or desc", param="order")
    if not 1 <= limit <= 100:
        raise ClientRequestError("`limit` must be between 1 and 100", param="limit")
    ordered = list(items) if order == "asc" else list(reversed(items))
    if after is not None:
        ids = [i.get("id") for i in ordered]
        if after not in ids:
            raise ClientRequestError(f"no input item has the id {quote(after)}", param="after")
        ordered = ordered[ids.index(after) + 1 :]
    data = ordered[:limit]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": len(ordered) > limit,
    }
