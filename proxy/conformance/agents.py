"""Agent checks: tool calling on Chat Completions, the Anthropic Messages API, the OpenAI
Responses API. Written against the public APIs only, so they judge any proxy.

What is expected comes from the API references as summarised in docs/agents.md §2 (OpenAI chat
tool calls, stream and not), §3 (Anthropic Messages: blocks, event grammar, error objects) and §4
(Responses: output items, streaming events, ``sequence_number``); the diagnoses name the
failures users of emulating proxies report (docs/agents.md §6): tool markup leaking into ``content``
(``tool_markup_in_content``), calls lost in one mode (``tool_calls_dropped``), the same call
repeated (``repeated_call``), arguments that are not JSON (``arguments_not_json``).

A target without ``/v1/messages`` or ``/v1/responses`` (HTTP 404 or 405 that is not about the
model) gets those checks skipped with the reason (``not_offered``).

Diagnosis codes here: ``tool_markup_in_content``, ``tool_calls_dropped``, ``no_tool_call``,
``arguments_not_json``, ``repeated_call``, ``tool_call_shape``, ``wrong_tool``,
``unexpected_arguments``, ``wrong_finish_reason``, ``one_call_only``, ``unexpected_tool_call``,
``result_not_used``, ``not_anthropic_message``, ``not_anthropic_error``, ``event_order``,
``not_responses_object``, ``missing_completed``, plus the shared ones of
:mod:`proxy.conformance.checks` (``http_status``, ``contract_violation``, ``stream_error``,
``upstream_error_in_stream``, ``duplicated_deltas`` for re-sent text, thinking or argument
fragments…).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from openai.types.responses import Response
from pydantic import ValidationError

from proxy.conformance.checks import (
    CheckSpec,
    Context,
    Outcome,
    _contract_failure,
    _delta,
    _error_failure,
    _error_outcome,
    _failed,
    _http_failure,
    _passed,
    _skipped,
    _stream_failure,
)
from proxy.conformance.contract import violations
from proxy.conformance.diagnosis import (
    AssembledCall,
    arguments_problem,
    assemble_tool_call_deltas,
    classify_echo,
    find_duplicated_deltas,
    find_tool_markup,
    repeated_call,
    resent_fragments,
)
from proxy.conformance.probes import (
    ANTHROPIC_VERSION,
    BAD_JSON_BODY,
    ECHO_EN_PROMPT,
    ECHO_EN_SENTENCE,
    PARALLEL_PROMPT,
    ROUNDTRIP_CALL_ID,
    ROUNDTRIP_PROMPT,
    ROUNDTRIP_RESULT,
    TOOL_PROMPT,
    WEATHER_TOOL,
    Exchange,
    Probe,
)

__all__ = [
    "AGENT_CHECKS",
    "anthropic_body",
    "anthropic_roundtrip_messages",
    "anthropic_tool",
    "responses_body",
    "responses_roundtrip_input",
    "responses_tool",
    "tool_chat_body",
]

_TOOL_NAME: str = WEATHER_TOOL["function"]["name"]
_ANTHROPIC_HEADERS = (("anthropic-version", ANTHROPIC_VERSION),)
_ANTHROPIC_STOP = frozenset(
    {"end_turn", "max_tokens", "stop_sequence", "tool_use", "pause_turn", "refusal"}
)
_ANTHROPIC_ERRORS = frozenset(
    {
        "invalid_request_error",
        "authentication_error",
        "permission_error",
        "not_found_error",
        "request_too_large",
        "rate_limit_error",
        "api_error",
        "overloaded_error",
        "billing_error",
        "timeout_error",
    }
)


# -- request bodies (public: the broken-proxy fixtures and profile builders reuse them) --------


def anthropic_tool(tool: dict[str, Any] = WEATHER_TOOL) -> dict[str, Any]:
    """An OpenAI chat function tool in Anthropic's shape (``input_schema``)."""
    fn = tool["function"]
    return {"name": fn["name"], "description": fn["description"], "input_schema": fn["parameters"]}


def responses_tool(tool: dict[str, Any] = WEATHER_TOOL) -> dict[str, Any]:
    """An OpenAI chat function tool in the Responses API's flat shape."""
    fn = tool["function"]
    return {
        "type": "function",
        "name": fn["name"],
        "description": fn["description"],
        "parameters": fn["parameters"],
    }


def tool_chat_body(
    model: str, messages: list[dict[str, Any]], *, stream: bool, **more: Any
) -> dict[str, Any]:
    """A chat request offering :data:`~proxy.conformance.probes.WEATHER_TOOL`."""
    body: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "tools": [WEATHER_TOOL],
        "tool_choice": "auto",
        "stream": stream,
    }
    body.update(more)
    return body


def roundtrip_messages() -> list[dict[str, Any]]:
    """User question, the assistant's call, the tool's result (docs/agents.md §2.4)."""
    call = {
        "id": ROUNDTRIP_CALL_ID,
        "type": "function",
        "function": {"name": _TOOL_NAME, "arguments": '{"city": "Berlin"}'},
    }
    return [
        {"role": "user", "content": ROUNDTRIP_PROMPT},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": ROUNDTRIP_CALL_ID, "content": ROUNDTRIP_RESULT},
    ]


def anthropic_body(
    model: str, prompt: str, *, stream: bool, tools: bool = False, **more: Any
) -> dict[str, Any]:
    """A Messages API request with one user message."""
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": prompt}],
        "stream": stream,
    }
    if tools:
        body["tools"] = [anthropic_tool()]
    body.update(more)
    return body


def anthropic_roundtrip_messages() -> list[dict[str, Any]]:
    """The round trip in Anthropic's blocks: question, ``tool_use``, ``tool_result``."""
    return [
        {"role": "user", "content": ROUNDTRIP_PROMPT},
        {
            "role": "assistant",
            "content": [
                {
                    "type": "tool_use",
                    "id": "toolu_probe0000000000000001",
                    "name": _TOOL_NAME,
                    "input": {"city": "Berlin"},
                }
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_probe0000000000000001",
                    "content": ROUNDTRIP_RESULT,
                }
            ],
        },
    ]


def responses_roundtrip_input() -> list[dict[str, Any]]:
    """The round trip as Responses input items: message, ``function_call``, its output."""
    return [
        {"type": "message", "role": "user", "content": ROUNDTRIP_PROMPT},
        {
            "type": "function_call",
            "call_id": ROUNDTRIP_CALL_ID,
            "name": _TOOL_NAME,
            "arguments": '{"city": "Berlin"}',
        },
        {"type": "function_call_output", "call_id": ROUNDTRIP_CALL_ID, "output": ROUNDTRIP_RESULT},
    ]


def responses_body(
    model: str, prompt: str, *, stream: bool, tools: bool = False, **more: Any
) -> dict[str, Any]:
    """A Responses API request with ``input`` as a string."""
    body: dict[str, Any] = {"model": model, "input": prompt, "stream": stream}
    if tools:
        body["tools"] = [responses_tool()]
    body.update(more)
    return body


# -- probes ------------------------------------------------------------------------------------


def _chat_tool_probe(ctx: Context, id: str, prompt: str, *, stream: bool) -> Probe:
    body = tool_chat_body(ctx.text_model, [{"role": "user", "content": prompt}], stream=stream)
    return Probe.json(id, "/chat/completions", body, stream=stream)


def _anthropic_probe(ctx: Context, id: str, body: dict[str, Any] | bytes) -> Probe:
    stream = isinstance(body, dict) and bool(body.get("stream"))
    if isinstance(body, bytes):
        return Probe(id, "POST", "/messages", body, auth="x-api-key", headers=_ANTHROPIC_HEADERS)
    return Probe.json(
        id, "/messages", body, stream=stream, auth="x-api-key", headers=_ANTHROPIC_HEADERS
    )


def _responses_probe(ctx: Context, id: str, body: dict[str, Any] | bytes) -> Probe:
    if isinstance(body, bytes):
        return Probe(id, "POST", "/responses", body)
    return Probe.json(id, "/responses", body, stream=bool(body.get("stream")))


def _not_offered(ex: Exchange, endpoint: str) -> Outcome | None:
    """A skip when the target has no such endpoint: 404/405 not about the model."""
    if ex.status not in (404, 405):
        return None
    obj = ex.json()
    err = obj.get("error") if isinstance(obj, dict) else None
    if isinstance(err, dict) and any(
        "model" in str(err.get(k, "")).lower() for k in ("code", "message", "param")
    ):
        return None  # a 404 about the model: the endpoint exists
    return _skipped("not_offered", f"the target has no {endpoint} (HTTP {ex.status})")


# -- OpenAI chat tool calls --------------------------------------------------------------------


class _Answer:
    """A tool answer, stream or not: text, calls, finish reasons, shape problems."""

    def __init__(self) -> None:
        self.content = ""
        self.calls: list[AssembledCall] = []
        self.finish: list[str] = []
        self.problems: list[str] = []
        self.contract: Outcome | None = None
        self.ttft_s: float | None = None


def _read_chat(ex: Exchange, ctx: Context) -> tuple[Outcome | None, _Answer]:
    """Decode a chat answer (either mode); the failure when it is not one at all."""
    ans = _Answer()
    if ex.probe.stream:
        fail, s = _stream_failure(ex)
        if fail is not None:
            return fail, ans
        err = _error_failure(ex, s)
        if err is not None:
            return err, ans
        ans.contract = _contract_failure(ex, s)
        ans.content = "".join(s.content)
        ans.calls, ans.problems = assemble_tool_call_deltas(_delta(c) for c in s.chunks)
        for c in s.chunks:
            choices = c.get("choices") if isinstance(c, dict) else None
            if choices and isinstance(choices[0], dict) and choices[0].get("finish_reason"):
                ans.finish.append(str(choices[0]["finish_reason"]))
        ans.ttft_s = s.ttft_s
        return None, ans
    fail = _http_failure(ex)
    if fail is not None:
        return fail, ans
    obj = ex.json()
    if not isinstance(obj, dict):
        return _failed(ex, "not_json", f"the body is not JSON ({ex.content_type})"), ans
    problems = violations("chat.completion", obj, strict=ctx.strict)
    if problems:
        ans.contract = _failed(
            ex,
            "contract_violation",
            "the body is not a ChatCompletion: " + "; ".join(problems[:3]),
            notes=problems[:8],
        )
    choices = obj.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices else {}
    message = choice.get("message") if isinstance(choice, dict) else None
    message = message if isinstance(message, dict) else {}
    content = message.get("content")
    ans.content = content if isinstance(content, str) else ""
    if isinstance(choice, dict) and choice.get("finish_reason"):
        ans.finish.append(str(choice["finish_reason"]))
    raw = message.get("tool_calls")
    for i, item in enumerate(raw if isinstance(raw, list) else []):
        item = item if isinstance(item, dict) else {}
        raw_fn = item.get("function")
        fn: dict[str, Any] = raw_fn if isinstance(raw_fn, dict) else {}
        args = fn.get("arguments")
        call = AssembledCall(
            index=i,
            id=str(item.get("id") or ""),
            type=str(item.get("type") or ""),
            name=str(fn.get("name") or ""),
            arguments=args if isinstance(args, str) else json.dumps(args),
        )
        if not isinstance(args, str):
            ans.problems.append(
                f"call {i}: function.arguments is not a string: a {type(args).__name__}"
            )
        ans.calls.append(call)
    return None, ans


def _notes(ans: _Answer) -> list[str]:
    notes = [f"content: {ans.content[:200]!r}"] if ans.content else []
    notes += [f"call {c.index}: id={c.id!r} {c.name}({c.arguments[:120]})" for c in ans.calls]
    notes += [f"finish_reason: {', '.join(ans.finish) or 'none'}"]
    return notes + ans.problems[:6]


def _judge_calls(
    ex: Exchange,
    ans: _Answer,
    *,
    cities: Sequence[str],
    other_mode: _Answer | None,
) -> Outcome:
    """The verdict on an answer that should call ``get_weather`` once per city."""
    notes = _notes(ans)
    leak = find_tool_markup(ans.content)
    if leak is not None:
        return _failed(
            ex,
            "tool_markup_in_content",
            f"tool-call markup reached `content` instead of `tool_calls`: {leak!r}",
            notes=notes,
            ttft_s=ans.ttft_s,
        )
    if not ans.calls:
        mode = "streamed" if ex.probe.stream else "not streamed"
        if other_mode is not None and other_mode.calls:
            return _failed(
                ex,
                "tool_calls_dropped",
                f"the same request {'not ' if ex.probe.stream else ''}streamed gets "
                f"{len(other_mode.calls)} tool call(s), but {mode} it gets none: the calls are "
                "lost in this mode",
                notes=notes,
                ttft_s=ans.ttft_s,
            )
        return _failed(
            ex,
            "no_tool_call",
            "the answer holds no tool call although a tool was offered for a question that "
            "needs it (tools ignored?)",
            notes=notes,
            ttft_s=ans.ttft_s,
        )
    not_text = [p for p in ans.problems if "arguments is not a string" in p]
    if not_text:
        return _failed(ex, "arguments_not_json", not_text[0], notes=notes)
    for call in ans.calls:
        bad = arguments_problem(call.arguments)
        dup = resent_fragments(call.fragments) if bad is not None else None
        if dup is not None:
            return _failed(
                ex,
                "duplicated_deltas",
                f"call {call.index}'s arguments: {dup.message()}",
                notes=notes,
            )
        if bad is not None:
            return _failed(ex, "arguments_not_json", f"call {call.index}: {bad}", notes=notes)
    again = repeated_call([(c.name, c.arguments) for c in ans.calls])
    if again is not None:
        return _failed(
            ex,
            "repeated_call",
            f"the same call is made twice in one answer: {again[0]}({again[1][:80]})",
            notes=notes,
        )
    if ans.contract is not None:
        return ans.contract
    shape = list(ans.problems)
    for call in ans.calls:
        if not call.id:
            shape.append(f"call {call.index} has no id")
        if call.type != "function":
            shape.append(f"call {call.index} has type {call.type!r}, not 'function'")
    ids = [c.id for c in ans.calls]
    if len(set(ids)) != len(ids):
        shape.append(f"calls share an id: {ids}")
    if shape:
        return _failed(ex, "tool_call_shape", "; ".join(shape[:3]), notes=notes)
    wrong = [c.name for c in ans.calls if c.name != _TOOL_NAME]
    if wrong:
        return _failed(ex, "wrong_tool", f"calls a tool that was not offered: {wrong}", notes=notes)
    if len(ans.finish) != 1 or ans.finish[0] != "tool_calls":
        return _failed(
            ex,
            "wrong_finish_reason",
            f"finish_reason is {ans.finish or 'missing'}, not exactly one 'tool_calls'",
            notes=notes,
        )
    got = [json.loads(c.arguments).get("city", "") for c in ans.calls]
    missing = [c for c in cities if not any(c.lower() in str(g).lower() for g in got)]
    if len(cities) > 1 and len(ans.calls) < len(cities):
        return _failed(
            ex,
            "one_call_only",
            f"{len(ans.calls)} call(s) for {len(cities)} cities: parallel calls are not passed on",
            notes=notes,
        )
    if missing:
        return _failed(
            ex, "unexpected_arguments", f"no call asks for {missing}; got cities {got}", notes=notes
        )
    return _passed(
        ex,
        f"{len(ans.calls)} {'streamed ' if ex.probe.stream else ''}tool call(s) "
        f"{', '.join(f'{c.name}({c.arguments})' for c in ans.calls)}, finish_reason tool_calls",
        notes=notes,
        ttft_s=ans.ttft_s,
    )


async def _tool_pair(ctx: Context, stream: bool) -> Outcome:
    ex = await ctx.client.send(
        _chat_tool_probe(ctx, f"tools.call{'.stream' * stream}", TOOL_PROMPT, stream=stream)
    )
    fail, ans = _read_chat(ex, ctx)
    if fail is not None:
        return fail
    other: _Answer | None = None
    if not ans.calls and find_tool_markup(ans.content) is None:
        other_ex = await ctx.client.send(
            _chat_tool_probe(
                ctx, f"tools.call{'.stream' * (not stream)}", TOOL_PROMPT, stream=not stream
            )
        )
        other_fail, other = _read_chat(other_ex, ctx)
        other = None if other_fail is not None else other
    return _judge_calls(ex, ans, cities=["Paris"], other_mode=other)


async def _tools_call(ctx: Context) -> Outcome:
    return await _tool_pair(ctx, stream=False)


async def _tools_call_stream(ctx: Context) -> Outcome:
    return await _tool_pair(ctx, stream=True)


async def _tools_parallel(ctx: Context) -> Outcome:
    ex = await ctx.client.send(
        _chat_tool_probe(ctx, "tools.parallel", PARALLEL_PROMPT, stream=True)
    )
    fail, ans = _read_chat(ex, ctx)
    if fail is not None:
        return fail
    out = _judge_calls(ex, ans, cities=["Paris", "Tokyo"], other_mode=None)
    if out.status == "passed":
        idx = [c.index for c in ans.calls]
        out.message += f"; indexes {idx}, ids distinct"
    return out


async def _tools_round_trip(ctx: Context) -> Outcome:
    body = tool_chat_body(ctx.text_model, roundtrip_messages(), stream=False)
    ex = await ctx.client.send(Probe.json("tools.round_trip", "/chat/completions", body))
    fail, ans = _read_chat(ex, ctx)
    if fail is not None:
        if ex.status == 400:
            fail.message = (
                "the history with an assistant tool call and a tool result was refused: "
                + fail.message
            )
        return fail
    notes = _notes(ans)
    leak = find_tool_markup(ans.content)
    if leak is not None:
        return _failed(
            ex,
            "tool_markup_in_content",
            f"tool-call markup reached `content`: {leak!r}",
            notes=notes,
        )
    earlier = [(_TOOL_NAME, '{"city": "Berlin"}')]
    again = repeated_call([(c.name, c.arguments) for c in ans.calls], earlier)
    if again is not None:
        return _failed(
            ex,
            "repeated_call",
            f"the model calls {again[0]}({again[1][:80]}) again although the history already "
            "holds that call and its result: an agent would loop",
            notes=notes,
        )
    if ans.calls:
        return _failed(
            ex,
            "unexpected_tool_call",
            "after the tool result the answer calls a tool again instead of answering",
            notes=notes,
        )
    if ans.contract is not None:
        return ans.contract
    if "21" not in ans.content:
        return _failed(
            ex,
            "result_not_used",
            "the answer does not use the tool result (21 °C): was the `tool` message sent on?",
            notes=notes,
        )
    if ans.finish != ["stop"]:
        return _failed(
            ex, "wrong_finish_reason", f"finish_reason is {ans.finish}, not 'stop'", notes=notes
        )
    return _passed(ex, "the answer uses the tool result and calls no tool again", notes=notes)


# -- Anthropic Messages ------------------------------------------------------------------------


def _anthropic_message_problems(obj: Any) -> list[str]:
    """Every way ``obj`` is not a Messages API ``message`` (docs/agents.md §3.2)."""
    if not isinstance(obj, dict):
        return ["(root): not a JSON object"]
    p: list[str] = []
    if obj.get("type") != "message":
        p.append(f"type: {obj.get('type')!r}, not 'message'")
    if obj.get("role") != "assistant":
        p.append(f"role: {obj.get('role')!r}, not 'assistant'")
    if not isinstance(obj.get("id"), str) or not obj.get("id"):
        p.append("id: missing")
    if not isinstance(obj.get("model"), str):
        p.append("model: missing")
    content = obj.get("content")
    if not isinstance(content, list):
        p.append("content: not a list of blocks")
        content = []
    for i, block in enumerate(content):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text" and not isinstance(block.get("text"), str):
            p.append(f"content.{i}.text: not a string")
        elif kind == "tool_use":
            if not isinstance(block.get("input"), dict):
                p.append(f"content.{i}.input: not an object")
            if not block.get("id") or not block.get("name"):
                p.append(f"content.{i}: tool_use without id or name")
        elif kind is None:
            p.append(f"content.{i}: a block without type")
    if obj.get("stop_reason") not in _ANTHROPIC_STOP:
        p.append(f"stop_reason: {obj.get('stop_reason')!r}")
    usage = obj.get("usage")
    if not isinstance(usage, dict) or not all(
        isinstance(usage.get(k), int) and not isinstance(usage.get(k), bool)
        for k in ("input_tokens", "output_tokens")
    ):
        p.append("usage: needs integer input_tokens and output_tokens")
    return p


async def _anthropic_messages(ctx: Context) -> Outcome:
    body = anthropic_body(ctx.text_model, ECHO_EN_PROMPT, stream=False)
    ex = await ctx.client.send(_anthropic_probe(ctx, "anthropic.messages", body))
    skip = _not_offered(ex, "/messages")
    if skip is not None:
        return skip
    fail = _http_failure(ex)
    if fail is not None:
        return fail
    obj = ex.json()
    problems = _anthropic_message_problems(obj)
    if problems:
        return _failed(
            ex,
            "not_anthropic_message",
            "the body is not an Anthropic message: " + "; ".join(problems[:3]),
            notes=problems[:8],
        )
    text = "".join(b.get("text", "") for b in obj["content"] if b.get("type") == "text")
    verdict = classify_echo(ECHO_EN_SENTENCE, text)
    notes = [f"text: {text[:200]!r}", f"stop_reason: {obj['stop_reason']}"]
    if verdict.code != "ok":
        return _failed(ex, verdict.code, verdict.message, notes=notes)
    if obj["stop_reason"] != "end_turn":
        return _failed(ex, "wrong_finish_reason", "stop_reason is not 'end_turn'", notes=notes)
    return _passed(ex, "a message with a text block, end_turn and usage", notes=notes)


class _AnthropicStream:
    def __init__(self) -> None:
        self.text = ""
        self.pieces: dict[str, list[str]] = {"text_delta": [], "thinking_delta": []}
        self.tool_uses: list[dict[str, Any]] = []
        self.stop_reason: str | None = None
        self.problems: list[str] = []
        self.errors: list[str] = []
        self.unknown: list[str] = []
        """Event types outside Anthropic's grammar, ignored as its SDKs ignore them."""
        self.ttft_s: float | None = None

    def notes(self) -> list[str]:
        """A note naming the unknown event types that were ignored, if any."""
        if not self.unknown:
            return []
        return [
            f"ignored {len(self.unknown)} event(s) of unknown type "
            f"{sorted(set(self.unknown))} (new event types may be added; clients skip them)"
        ]


_ANTHROPIC_EVENTS = frozenset(
    {
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
        "ping",
        "error",
    }
)
"""The event types of Anthropic's stream grammar; others are skipped, as the SDKs skip them
(Anthropic's versioning policy: new event types may be added to the stream)."""


def _read_anthropic_stream(ex: Exchange) -> _AnthropicStream:
    """Follow Anthropic's event grammar (docs/agents.md §3.3): message_start, then per block
    content_block_start / _delta* / _stop, then message_delta and message_stop; ping anywhere;
    every frame named by an ``event:`` line equal to its data's ``type``. Events of a type
    outside the grammar are ignored (and listed in ``unknown``), wherever they come."""
    out = _AnthropicStream()
    state = "start"
    open_blocks: dict[int, dict[str, Any]] = {}
    json_parts: dict[int, list[str]] = {}
    for event in ex.sse.events:
        try:
            data = json.loads(event.data)
        except ValueError:
            out.problems.append(f"event data is not JSON: {event.data[:80]!r}")
            continue
        kind = data.get("type") if isinstance(data, dict) else None
        if event.event is None:
            out.problems.append(f"a {kind!r} frame has no `event:` line (the SDK skips it)")
        elif event.event != kind:
            out.problems.append(f"`event: {event.event}` carries data of type {kind!r}")
        if kind == "ping":
            continue
        if isinstance(kind, str) and kind not in _ANTHROPIC_EVENTS:
            out.unknown.append(kind)
            continue
        if kind == "error":
            out.errors.append(str(data.get("error"))[:200])
            continue
        if state == "start":
            if kind != "message_start":
                out.problems.append(f"the first event is {kind!r}, not message_start")
            state = "blocks"
            continue
        if state == "blocks" and kind == "content_block_start":
            i = data.get("index")
            block = data.get("content_block")
            if not isinstance(i, int) or not isinstance(block, dict) or i in open_blocks:
                out.problems.append(f"bad content_block_start: {event.data[:120]}")
                continue
            open_blocks[i] = block
            if block.get("type") == "tool_use":
                json_parts[i] = []
        elif state == "blocks" and kind == "content_block_delta":
            i = data.get("index")
            delta = data.get("delta") if isinstance(data.get("delta"), dict) else {}
            if i not in open_blocks:
                out.problems.append(f"a delta for block {i} that was not started")
                continue
            if delta.get("type") == "text_delta":
                out.text += str(delta.get("text", ""))
                out.pieces["text_delta"].append(str(delta.get("text", "")))
                if out.ttft_s is None:
                    out.ttft_s = ex.time_at(event.end)
            elif delta.get("type") == "thinking_delta":
                out.pieces["thinking_delta"].append(str(delta.get("thinking", "")))
            elif delta.get("type") == "input_json_delta":
                json_parts.setdefault(i, []).append(str(delta.get("partial_json", "")))
        elif state == "blocks" and kind == "content_block_stop":
            i = data.get("index")
            block = open_blocks.pop(i, None) if isinstance(i, int) else None
            if block is None:
                out.problems.append(f"content_block_stop for block {i} that is not open")
            elif block.get("type") == "tool_use":
                out.tool_uses.append(
                    {
                        "id": block.get("id"),
                        "name": block.get("name"),
                        "input": "".join(json_parts.get(i, [])),
                        "fragments": json_parts.get(i, []),
                    }
                )
        elif state == "blocks" and kind == "message_delta":
            if open_blocks:
                out.problems.append(f"message_delta while blocks {sorted(open_blocks)} are open")
            delta = data.get("delta") if isinstance(data.get("delta"), dict) else {}
            out.stop_reason = delta.get("stop_reason")
            state = "delta"
        elif state == "delta" and kind == "message_stop":
            state = "stopped"
        else:
            out.problems.append(f"{kind!r} out of order (after {state})")
    if state != "stopped" and not out.errors:
        out.problems.append("the stream does not end with message_delta then message_stop")
    return out


def anthropic_duplicates(s: _AnthropicStream, expected: str | None = None) -> str | None:
    """Why the ``text_delta`` or ``thinking_delta`` pieces of an Anthropic stream re-send
    earlier text (``expected``: the text the probe asked for), or ``None``."""
    for kind, pieces in s.pieces.items():
        dup = find_duplicated_deltas(pieces, expected=expected if kind == "text_delta" else None)
        if dup is not None:
            return f"{kind}: {dup.message()}"
    return None


async def _anthropic_stream_exchange(
    ctx: Context, id: str, prompt: str, tools: bool
) -> tuple[Exchange, Outcome | None, _AnthropicStream]:
    body = anthropic_body(ctx.text_model, prompt, stream=True, tools=tools)
    ex = await ctx.client.send(_anthropic_probe(ctx, id, body))
    skip = _not_offered(ex, "/messages")
    if skip is not None:
        return ex, skip, _AnthropicStream()
    fail = _http_failure(ex)
    if fail is None and ex.content_type != "text/event-stream":
        fail = _failed(ex, "content_type", f"a stream was asked for, got {ex.content_type}")
    if fail is not None:
        return ex, fail, _AnthropicStream()
    s = _read_anthropic_stream(ex)
    if s.errors:
        return ex, _failed(ex, "stream_error", f"an error event: {s.errors[0]}"), s
    if s.problems:
        return (
            ex,
            _failed(ex, "event_order", "; ".join(s.problems[:3]), notes=s.problems[:8]),
            s,
        )
    return ex, None, s


async def _anthropic_stream(ctx: Context) -> Outcome:
    ex, fail, s = await _anthropic_stream_exchange(
        ctx, "anthropic.stream", ECHO_EN_PROMPT, tools=False
    )
    if fail is not None:
        return fail
    notes = [f"text: {s.text[:200]!r}", f"stop_reason: {s.stop_reason}"]
    dup = anthropic_duplicates(s, ECHO_EN_SENTENCE)
    if dup is not None:
        return _failed(ex, "duplicated_deltas", dup, notes=notes, ttft_s=s.ttft_s)
    verdict = classify_echo(ECHO_EN_SENTENCE, s.text, s.pieces["text_delta"])
    if verdict.code != "ok":
        return _failed(ex, verdict.code, verdict.message, notes=notes, ttft_s=s.ttft_s)
    if s.stop_reason != "end_turn":
        return _failed(ex, "wrong_finish_reason", "stop_reason is not 'end_turn'", notes=notes)
    return _passed(
        ex,
        "Anthropic's event order, text deltas, end_turn",
        notes=[*notes, *s.notes()],
        ttft_s=s.ttft_s,
    )


async def _anthropic_tools(ctx: Context) -> Outcome:
    ex, fail, s = await _anthropic_stream_exchange(
        ctx, "anthropic.tools.stream", TOOL_PROMPT, tools=True
    )
    if fail is not None:
        return fail
    notes = [f"text: {s.text[:200]!r}", f"stop_reason: {s.stop_reason}", *s.notes()]
    notes += [f"tool_use {u['id']!r} {u['name']}({u['input'][:120]})" for u in s.tool_uses]
    dup = anthropic_duplicates(s)
    if dup is not None:
        return _failed(ex, "duplicated_deltas", dup, notes=notes)
    leak = find_tool_markup(s.text)
    if leak is not None:
        return _failed(
            ex, "tool_markup_in_content", f"tool-call markup in a text block: {leak!r}", notes=notes
        )
    if not s.tool_uses:
        return _failed(ex, "no_tool_call", "no tool_use block", notes=notes)
    for use in s.tool_uses:
        bad = arguments_problem(use["input"])
        resent = resent_fragments(use["fragments"]) if bad is not None else None
        if resent is not None:
            return _failed(
                ex, "duplicated_deltas", f"input_json_delta: {resent.message()}", notes=notes
            )
        if bad is not None:
            return _failed(ex, "arguments_not_json", f"input_json_delta pieces: {bad}", notes=notes)
        if not use["id"] or use["name"] != _TOOL_NAME:
            return _failed(ex, "tool_call_shape", f"tool_use block {use}", notes=notes)
    if s.stop_reason != "tool_use":
        return _failed(
            ex, "wrong_finish_reason", f"stop_reason {s.stop_reason!r}, not 'tool_use'", notes=notes
        )
    return _passed(ex, "a streamed tool_use block, stop_reason tool_use", notes=notes)


def _anthropic_tool_uses(obj: dict[str, Any]) -> list[dict[str, Any]]:
    return [b for b in obj.get("content") or [] if b.get("type") == "tool_use"]


def _anthropic_text(obj: dict[str, Any]) -> str:
    return "".join(b.get("text", "") for b in obj.get("content") or [] if b.get("type") == "text")


async def _anthropic_json(
    ctx: Context, id: str, body: dict[str, Any]
) -> tuple[Exchange, Outcome | None, dict[str, Any]]:
    ex = await ctx.client.send(_anthropic_probe(ctx, id, body))
    fail = _not_offered(ex, "/messages") or _http_failure(ex)
    if fail is not None:
        return ex, fail, {}
    obj = ex.json()
    problems = _anthropic_message_problems(obj)
    if problems:
        return (
            ex,
            _failed(
                ex,
                "not_anthropic_message",
                "the body is not an Anthropic message: " + "; ".join(problems[:3]),
                notes=problems[:8],
            ),
            {},
        )
    return ex, None, obj


async def _anthropic_tools_json(ctx: Context) -> Outcome:
    body = anthropic_body(ctx.text_model, TOOL_PROMPT, stream=False, tools=True)
    ex, fail, obj = await _anthropic_json(ctx, "anthropic.tools", body)
    if fail is not None:
        return fail
    uses = _anthropic_tool_uses(obj)
    text = _anthropic_text(obj)
    notes = [f"text: {text[:200]!r}", f"stop_reason: {obj['stop_reason']}"]
    notes += [
        f"tool_use {u.get('id')!r} {u.get('name')}({json.dumps(u.get('input'))})" for u in uses
    ]
    leak = find_tool_markup(text)
    if leak is not None:
        return _failed(
            ex, "tool_markup_in_content", f"tool-call markup in a text block: {leak!r}", notes=notes
        )
    if not uses:
        return _failed(ex, "no_tool_call", "no tool_use block", notes=notes)
    for use in uses:
        if use.get("name") != _TOOL_NAME:
            return _failed(ex, "wrong_tool", f"tool_use of {use.get('name')!r}", notes=notes)
        if "paris" not in json.dumps(use.get("input")).lower():
            return _failed(ex, "unexpected_arguments", f"input {use.get('input')!r}", notes=notes)
    if obj["stop_reason"] != "tool_use":
        return _failed(ex, "wrong_finish_reason", "stop_reason is not 'tool_use'", notes=notes)
    return _passed(ex, "a tool_use block with an input object, stop_reason tool_use", notes=notes)


async def _anthropic_round_trip(ctx: Context) -> Outcome:
    body = {
        "model": ctx.text_model,
        "max_tokens": 1024,
        "tools": [anthropic_tool()],
        "messages": anthropic_roundtrip_messages(),
        "stream": False,
    }
    ex, fail, obj = await _anthropic_json(ctx, "anthropic.round_trip", body)
    if fail is not None:
        if ex.status == 400:
            fail.message = "the history with tool_use and tool_result was refused: " + fail.message
        return fail
    text = _anthropic_text(obj)
    calls = [(str(u.get("name")), json.dumps(u.get("input"))) for u in _anthropic_tool_uses(obj)]
    return _judge_round_trip(ex, text, calls, obj["stop_reason"], "end_turn")


def _judge_round_trip(
    ex: Exchange, text: str, calls: list[tuple[str, str]], stop: Any, want: str
) -> Outcome:
    """After a tool result: use it (21 °C), call nothing again, end normally."""
    notes = [f"text: {text[:200]!r}", f"stop: {stop}"] + [f"call {n}({a})" for n, a in calls]
    leak = find_tool_markup(text)
    if leak is not None:
        return _failed(
            ex, "tool_markup_in_content", f"tool-call markup in the text: {leak!r}", notes=notes
        )
    again = repeated_call(calls, [(_TOOL_NAME, '{"city": "Berlin"}')])
    if again is not None:
        return _failed(
            ex,
            "repeated_call",
            f"the model calls {again[0]}({again[1][:80]}) again although the history already "
            "holds that call and its result: an agent would loop",
            notes=notes,
        )
    if calls:
        return _failed(
            ex, "unexpected_tool_call", "a tool is called again instead of an answer", notes=notes
        )
    if "21" not in text:
        return _failed(
            ex,
            "result_not_used",
            "the answer does not use the tool result (21 °C): was the result sent on?",
            notes=notes,
        )
    if stop != want:
        return _failed(ex, "wrong_finish_reason", f"{stop!r}, not {want!r}", notes=notes)
    return _passed(ex, "the answer uses the tool result and calls no tool again", notes=notes)


def _anthropic_error_outcome(ex: Exchange, accepted: tuple[int, ...], what: str) -> Outcome:
    if ex.status is None:
        return _failed(ex, "transport_error", f"{what}: {ex.error}")
    if ex.status == 200:
        code = "empty_200" if not ex.body.strip() else "error_as_200"
        return _failed(ex, code, f"{what}: HTTP 200 instead of an error status")
    obj = ex.json()
    err = obj.get("error") if isinstance(obj, dict) else None
    if ex.status >= 500:
        return _failed(ex, "server_error", f"{what}: HTTP {ex.status}")
    if ex.status not in accepted:
        return _failed(ex, "wrong_status", f"{what}: HTTP {ex.status}; expected {accepted}")
    if not (
        isinstance(obj, dict)
        and obj.get("type") == "error"
        and isinstance(err, dict)
        and err.get("type") in _ANTHROPIC_ERRORS
        and isinstance(err.get("message"), str)
    ):
        return _failed(
            ex,
            "not_anthropic_error",
            f'{what}: HTTP {ex.status} but not {{"type": "error", "error": {{"type", "message"}}}}'
            " with one of Anthropic's error types",
        )
    return _passed(ex, f"{what}: HTTP {ex.status}, {err['type']}: {str(err['message'])[:120]}")


async def _anthropic_errors(ctx: Context) -> Outcome:
    ex = await ctx.client.send(_anthropic_probe(ctx, "anthropic.errors", BAD_JSON_BODY))
    skip = _not_offered(ex, "/messages")
    if skip is not None:
        return skip
    return _anthropic_error_outcome(ex, (400,), "malformed JSON on /messages")


# -- OpenAI Responses --------------------------------------------------------------------------


def _responses_problems(obj: Any, strict: bool) -> list[str]:
    """Every way ``obj`` is not a ``response`` object (docs/agents.md §4.2); ``strict`` adds the
    openai SDK's ``Response`` type in pydantic strict mode (every required field)."""
    if not isinstance(obj, dict):
        return ["(root): not a JSON object"]
    p: list[str] = []
    if obj.get("object") != "response":
        p.append(f"object: {obj.get('object')!r}, not 'response'")
    if not isinstance(obj.get("id"), str) or not obj.get("id"):
        p.append("id: missing")
    if not isinstance(obj.get("output"), list):
        p.append("output: not a list")
    if obj.get("status") not in ("completed", "incomplete", "failed", "in_progress"):
        p.append(f"status: {obj.get('status')!r}")
    usage = obj.get("usage")
    if usage is not None and not (
        isinstance(usage, dict)
        and all(isinstance(usage.get(k), int) for k in ("input_tokens", "output_tokens"))
        and isinstance(usage.get("total_tokens"), int)
    ):
        p.append("usage: needs integer input_tokens, output_tokens and total_tokens")
    if strict and not p:
        try:
            Response.model_validate(obj, strict=True)
        except ValidationError as exc:
            for err in exc.errors()[:8]:
                loc = ".".join(str(x) for x in err.get("loc", ()))
                p.append(f"{loc}: {err.get('msg')}")
    return p


def _output_text(output: Any) -> str:
    text = ""
    for item in output if isinstance(output, list) else []:
        if isinstance(item, dict) and item.get("type") == "message":
            for part in item.get("content") or []:
                if isinstance(part, dict) and part.get("type") == "output_text":
                    text += str(part.get("text", ""))
    return text


async def _responses_basic(ctx: Context) -> Outcome:
    body = responses_body(ctx.text_model, ECHO_EN_PROMPT, stream=False)
    ex = await ctx.client.send(_responses_probe(ctx, "responses.basic", body))
    skip = _not_offered(ex, "/responses")
    if skip is not None:
        return skip
    fail = _http_failure(ex)
    if fail is not None:
        return fail
    obj = ex.json()
    problems = _responses_problems(obj, ctx.strict)
    if problems:
        return _failed(
            ex,
            "not_responses_object",
            "the body is not a Responses `response`: " + "; ".join(problems[:3]),
            notes=problems[:8],
        )
    text = _output_text(obj["output"])
    verdict = classify_echo(ECHO_EN_SENTENCE, text)
    notes = [f"output_text: {text[:200]!r}", f"status: {obj['status']}"]
    if verdict.code != "ok":
        return _failed(ex, verdict.code, verdict.message, notes=notes)
    if obj["status"] != "completed":
        return _failed(ex, "wrong_finish_reason", "status is not 'completed'", notes=notes)
    return _passed(ex, "a completed response with a message item", notes=notes)


async def _responses_json(
    ctx: Context, id: str, body: dict[str, Any]
) -> tuple[Exchange, Outcome | None, dict[str, Any]]:
    ex = await ctx.client.send(_responses_probe(ctx, id, body))
    fail = _not_offered(ex, "/responses") or _http_failure(ex)
    if fail is not None:
        return ex, fail, {}
    obj = ex.json()
    problems = _responses_problems(obj, ctx.strict)
    if problems:
        return (
            ex,
            _failed(
                ex,
                "not_responses_object",
                "the body is not a Responses `response`: " + "; ".join(problems[:3]),
                notes=problems[:8],
            ),
            {},
        )
    return ex, None, obj


def _function_calls(output: Any) -> list[dict[str, Any]]:
    return (
        [i for i in output if isinstance(i, dict) and i.get("type") == "function_call"]
        if isinstance(output, list)
        else []
    )


async def _responses_tools_json(ctx: Context) -> Outcome:
    body = responses_body(ctx.text_model, TOOL_PROMPT, stream=False, tools=True)
    ex, fail, obj = await _responses_json(ctx, "responses.tools", body)
    if fail is not None:
        return fail
    text = _output_text(obj["output"])
    calls = _function_calls(obj["output"])
    notes = [f"output_text: {text[:200]!r}"] + [
        f"function_call {c.get('call_id')!r} {c.get('name')}({str(c.get('arguments'))[:120]})"
        for c in calls
    ]
    leak = find_tool_markup(text)
    if leak is not None:
        return _failed(
            ex, "tool_markup_in_content", f"markup in output_text: {leak!r}", notes=notes
        )
    if not calls:
        return _failed(ex, "no_tool_call", "no function_call output item", notes=notes)
    for call in calls:
        bad = arguments_problem(call.get("arguments"))
        if bad is not None:
            return _failed(ex, "arguments_not_json", bad, notes=notes)
        if not call.get("call_id") or call.get("name") != _TOOL_NAME:
            return _failed(ex, "tool_call_shape", f"function_call item {call}", notes=notes)
    return _passed(ex, "a function_call item with call_id and JSON arguments", notes=notes)


async def _responses_round_trip(ctx: Context) -> Outcome:
    body = {
        "model": ctx.text_model,
        "input": responses_roundtrip_input(),
        "tools": [responses_tool()],
        "stream": False,
    }
    ex, fail, obj = await _responses_json(ctx, "responses.round_trip", body)
    if fail is not None:
        if ex.status == 400:
            fail.message = (
                "the input with function_call and function_call_output was refused: " + fail.message
            )
        return fail
    calls = [(str(c.get("name")), str(c.get("arguments"))) for c in _function_calls(obj["output"])]
    return _judge_round_trip(ex, _output_text(obj["output"]), calls, obj["status"], "completed")


class _ResponsesStream:
    def __init__(self) -> None:
        self.text = ""
        self.pieces: list[str] = []
        self.arg_pieces: dict[str, list[str]] = {}
        self.done_text: str | None = None
        self.calls: list[dict[str, Any]] = []
        self.args: dict[str, str] = {}
        self.final: dict[str, Any] | None = None
        self.problems: list[str] = []
        self.failed: str | None = None
        self.ttft_s: float | None = None


def _read_responses_stream(ex: Exchange) -> _ResponsesStream:
    """Follow the Responses streaming order (docs/agents.md §4.3): ``response.created`` first;
    ``sequence_number`` increasing on every event; items announced by ``output_item.added``
    before their deltas; ``response.completed`` (or ``.failed``/``.incomplete``) last."""
    out = _ResponsesStream()
    last_seq = -1
    added: set[int] = set()
    for n, event in enumerate(ex.sse.events):
        if event.data.strip() == "[DONE]":
            continue
        try:
            data = json.loads(event.data)
        except ValueError:
            out.problems.append(f"event data is not JSON: {event.data[:80]!r}")
            continue
        kind = data.get("type") if isinstance(data, dict) else None
        if not isinstance(kind, str):
            out.problems.append(f"an event without type: {event.data[:80]!r}")
            continue
        if event.event is not None and event.event != kind:
            out.problems.append(f"`event: {event.event}` carries data of type {kind!r}")
        seq = data.get("sequence_number")
        if not isinstance(seq, int) or seq <= last_seq:
            out.problems.append(f"{kind}: sequence_number {seq!r} after {last_seq}")
        else:
            last_seq = seq
        if n == 0 and kind != "response.created":
            out.problems.append(f"the first event is {kind!r}, not response.created")
        if out.final is not None:
            out.problems.append(f"{kind} after the terminal event")
        index = data.get("output_index")
        if kind == "response.output_item.added" and isinstance(index, int):
            added.add(index)
            item = data.get("item") if isinstance(data.get("item"), dict) else {}
            if item.get("type") == "function_call":
                out.args.setdefault(str(item.get("id")), "")
        elif kind.endswith(".delta") and isinstance(index, int) and index not in added:
            out.problems.append(f"{kind} for output {index} before its output_item.added")
        if kind == "response.output_text.delta":
            out.text += str(data.get("delta", ""))
            out.pieces.append(str(data.get("delta", "")))
            if out.ttft_s is None:
                out.ttft_s = ex.time_at(event.end)
        elif kind == "response.output_text.done":
            out.done_text = (out.done_text or "") + str(data.get("text", ""))
        elif kind == "response.function_call_arguments.delta":
            key = str(data.get("item_id"))
            out.args[key] = out.args.get(key, "") + str(data.get("delta", ""))
            out.arg_pieces.setdefault(key, []).append(str(data.get("delta", "")))
        elif kind == "response.output_item.done":
            item = data.get("item") if isinstance(data.get("item"), dict) else {}
            if item.get("type") == "function_call":
                out.calls.append(item)
        elif kind in ("response.completed", "response.incomplete"):
            resp = data.get("response")
            out.final = resp if isinstance(resp, dict) else {}
        elif kind in ("response.failed", "error"):
            out.failed = str(data.get("response", data))[:200]
            out.final = {}
    return out


async def _responses_stream_exchange(
    ctx: Context, id: str, prompt: str, tools: bool
) -> tuple[Exchange, Outcome | None, _ResponsesStream]:
    body = responses_body(ctx.text_model, prompt, stream=True, tools=tools)
    ex = await ctx.client.send(_responses_probe(ctx, id, body))
    skip = _not_offered(ex, "/responses")
    if skip is not None:
        return ex, skip, _ResponsesStream()
    fail = _http_failure(ex)
    if fail is None and ex.content_type != "text/event-stream":
        fail = _failed(ex, "content_type", f"a stream was asked for, got {ex.content_type}")
    if fail is not None:
        return ex, fail, _ResponsesStream()
    s = _read_responses_stream(ex)
    if s.failed is not None:
        return ex, _failed(ex, "stream_error", f"the response failed: {s.failed}"), s
    if s.final is None:
        return (
            ex,
            _failed(
                ex,
                "missing_completed",
                "the stream ends without response.completed (Codex retries, then fails)",
                notes=s.problems[:8],
            ),
            s,
        )
    if s.problems:
        return ex, _failed(ex, "event_order", "; ".join(s.problems[:3]), notes=s.problems[:8]), s
    problems = _responses_problems(s.final, ctx.strict)
    if problems:
        return (
            ex,
            _failed(
                ex,
                "not_responses_object",
                "response.completed does not carry a `response`: " + "; ".join(problems[:3]),
            ),
            s,
        )
    return ex, None, s


async def _responses_stream(ctx: Context) -> Outcome:
    ex, fail, s = await _responses_stream_exchange(
        ctx, "responses.stream", ECHO_EN_PROMPT, tools=False
    )
    if fail is not None:
        return fail
    notes = [f"deltas: {s.text[:200]!r}"]
    dup = find_duplicated_deltas(s.pieces, expected=ECHO_EN_SENTENCE)
    if dup is not None:
        return _failed(ex, "duplicated_deltas", f"output_text.delta: {dup.message()}", notes=notes)
    verdict = classify_echo(ECHO_EN_SENTENCE, s.text, s.pieces)
    if verdict.code != "ok":
        return _failed(ex, verdict.code, verdict.message, notes=notes, ttft_s=s.ttft_s)
    final_text = _output_text((s.final or {}).get("output"))
    if s.done_text != s.text or final_text != s.text:
        return _failed(
            ex,
            "event_order",
            "output_text.done / response.completed do not hold the text the deltas sent",
            notes=[*notes, f"done: {s.done_text!r}", f"completed: {final_text!r}"],
        )
    return _passed(
        ex, "created … output_text deltas … completed, in order", notes=notes, ttft_s=s.ttft_s
    )


async def _responses_tools(ctx: Context) -> Outcome:
    ex, fail, s = await _responses_stream_exchange(
        ctx, "responses.tools.stream", TOOL_PROMPT, tools=True
    )
    if fail is not None:
        return fail
    notes = [f"text: {s.text[:200]!r}"] + [
        f"function_call {c.get('call_id')!r} {c.get('name')}({str(c.get('arguments'))[:120]})"
        for c in s.calls
    ]
    leak = find_tool_markup(s.text)
    if leak is not None:
        return _failed(
            ex, "tool_markup_in_content", f"markup in output_text: {leak!r}", notes=notes
        )
    if not s.calls:
        return _failed(ex, "no_tool_call", "no function_call output item", notes=notes)
    for call in s.calls:
        bad = arguments_problem(call.get("arguments"))
        if bad is not None:
            return _failed(ex, "arguments_not_json", bad, notes=notes)
        if not call.get("call_id") or call.get("name") != _TOOL_NAME:
            return _failed(ex, "tool_call_shape", f"function_call item {call}", notes=notes)
        streamed = s.args.get(str(call.get("id")))
        resent = resent_fragments(s.arg_pieces.get(str(call.get("id")), []))
        if resent is not None:
            return _failed(
                ex,
                "duplicated_deltas",
                f"function_call_arguments.delta: {resent.message()}",
                notes=notes,
            )
        if streamed is not None and streamed and streamed != call.get("arguments"):
            return _failed(
                ex,
                "tool_call_shape",
                "function_call_arguments deltas differ from the finished item's arguments",
                notes=notes,
            )
    final_calls = [
        i
        for i in (s.final or {}).get("output") or []
        if isinstance(i, dict) and i.get("type") == "function_call"
    ]
    if not final_calls:
        return _failed(
            ex, "tool_call_shape", "response.completed's output has no function_call", notes=notes
        )
    return _passed(ex, "a streamed function_call item, then response.completed", notes=notes)


async def _responses_errors(ctx: Context) -> Outcome:
    ex = await ctx.client.send(_responses_probe(ctx, "responses.errors", BAD_JSON_BODY))
    skip = _not_offered(ex, "/responses")
    if skip is not None:
        return skip
    return _error_outcome(ex, (400, 422), "malformed JSON on /responses")


AGENT_CHECKS: tuple[CheckSpec, ...] = (
    CheckSpec("tools.call", "A tool call, not streamed: message.tool_calls", True, _tools_call),
    CheckSpec(
        "tools.call.stream",
        "A tool call, streamed: tool_calls fragments by index",
        True,
        _tools_call_stream,
    ),
    CheckSpec(
        "tools.parallel",
        "Two calls in one answer: distinct ids and indexes",
        False,
        _tools_parallel,
    ),
    CheckSpec(
        "tools.round_trip",
        "A tool result goes back: the answer uses it, no repeated call",
        True,
        _tools_round_trip,
    ),
    CheckSpec(
        "anthropic.messages",
        "/messages: a message with text, not streamed",
        True,
        _anthropic_messages,
    ),
    CheckSpec(
        "anthropic.stream", "/messages streamed: Anthropic's event order", True, _anthropic_stream
    ),
    CheckSpec(
        "anthropic.tools.stream",
        "/messages with tools: a streamed tool_use block",
        True,
        _anthropic_tools,
    ),
    CheckSpec(
        "anthropic.tools",
        "/messages with tools, not streamed: a tool_use block",
        True,
        _anthropic_tools_json,
    ),
    CheckSpec(
        "anthropic.round_trip",
        "/messages: a tool_result goes back, the answer uses it",
        True,
        _anthropic_round_trip,
    ),
    CheckSpec(
        "anthropic.errors", "/messages errors in Anthropic's error shape", True, _anthropic_errors
    ),
    CheckSpec(
        "responses.basic", "/responses: a completed response, not streamed", True, _responses_basic
    ),
    CheckSpec(
        "responses.stream",
        "/responses streamed: events in order, then completed",
        True,
        _responses_stream,
    ),
    CheckSpec(
        "responses.tools.stream",
        "/responses with tools: a streamed function_call item",
        True,
        _responses_tools,
    ),
    CheckSpec(
        "responses.tools",
        "/responses with tools, not streamed: a function_call item",
        True,
        _responses_tools_json,
    ),
    CheckSpec(
        "responses.round_trip",
        "/responses: a function_call_output goes back, the answer uses it",
        True,
        _responses_round_trip,
    ),
    CheckSpec(
        "responses.errors", "/responses errors as OpenAI error objects", True, _responses_errors
    ),
)
"""The agent checks, in report order."""
