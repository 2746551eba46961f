"""Fixtures: OpenAI-side cassettes that answer the conformance probes as broken proxies do.

Each fixture is one cassette standing in for a whole OpenAI-compatible proxy: the replay server
serves it (``recorder/matching.py`` matches ``/v1/chat/completions`` on model, stream and the
last user message, ``/v1/images/generations`` on model and prompt), and ``qwen-proxy check`` runs
against it. :func:`healthy` answers every probe correctly; each broken fixture changes only the
answers that show one failure users of other Qwen proxies report (docs/landscape.md §3.2 empty
200s, §3.7/§3.10 ``![image](null)``, §3.8 duplicated streamed text, §3.13 garbled Chinese, §3.14
opaque errors)
and :data:`BROKEN` names the checks that must fail and the diagnosis each must give.

Everything here is synthetic (provenance ``kind: synthetic``), written from those descriptions,
not captured. Regenerate the files after a change with::

    .venv/bin/python tests/broken_proxies.py

``tests/test_conformance_broken.py`` fails when the files differ from this builder.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from proxy.conformance.agents import (
    anthropic_body,
    anthropic_roundtrip_messages,
    anthropic_tool,
    responses_body,
    responses_roundtrip_input,
    responses_tool,
    roundtrip_messages,
    tool_chat_body,
)
from proxy.conformance.diagnosis import cp1252_mojibake, gbk_mojibake, latin1_mojibake
from proxy.conformance.probes import (
    AUTH_PROMPT,
    BAD_JSON_BODY,
    ECHO_EN_PROMPT,
    ECHO_EN_SENTENCE,
    ECHO_ZH_PROMPT,
    ECHO_ZH_SENTENCE,
    IMAGE_PROMPT,
    OVERSIZE_PROMPT,
    PARALLEL_PROMPT,
    STREAM_PROMPT,
    THINK_PROMPT,
    TOOL_PROMPT,
    UNKNOWN_MODEL,
    UNKNOWN_MODEL_PROMPT,
)
from proxy.conformance.profiles import PROFILES
from recorder.cassette import Cassette, Interaction, Provenance

BROKEN_DIR = Path(__file__).resolve().parent / "cassettes" / "broken"
ROOT = "http://broken-proxy.test"
BASE = f"{ROOT}/v1"
TEXT, THINKING, IMAGE = "qwen3-max", "qwen3-max-thinking", "qwen3-max-image"
IMAGE_URL = "https://images.broken-proxy.test/probe/red-apple.png"
"""The image URL the healthy fixture returns; tests rewrite it to a local image server."""
CREATED = 1795341600
SECTIONS = [
    "docs/landscape.md §3",
    "docs/protocol.md §5.4",
    "docs/protocol.md §6.4",
    "docs/protocol.md §11.9",
    "docs/agents.md §2, §3, §4, §6",
    "docs/clients.md §9",
]
_JSON = {"Content-Type": ["application/json"]}
_REQ_HEADERS = {"Content-Type": ["application/json"]}

EN_PIECES = ("The quick", " brown fox", " jumps over", " the lazy", " dog near", " the quiet")
EN_PIECES += (" river", ".")
ZH_PIECES = ("我们", "在北京", "的咖啡馆", "里讨论", "量子", "计算", "。")
_WORDS = "one two three four five six seven eight nine ten eleven twelve".split()
_WORD_PIECES = tuple(f" {w}" if i else w.capitalize() for i, w in enumerate(_WORDS))
STREAM_PIECES = tuple(p for w in _WORD_PIECES for p in (w, ","))[:-1]
STREAM_PIECES = (*STREAM_PIECES, ".")
THINK_REASONING = ("221 is odd.", " 13 × 17 = 221,", " so it is not prime.")
THINK_ANSWER = ("No", ":", " 221", " = 13 × 17", ".")
TUTORIAL = (
    "Here is how to draw a red apple: Step 1: sketch a round outline with a pencil. "
    "Step 2: add the stem and a leaf. Step 3: colour it in with red, leaving a highlight."
)


# -- OpenAI objects ----------------------------------------------------------------------------


def completion(
    model: str,
    content: str | None,
    cid: str,
    *,
    tool_calls: list[dict[str, Any]] | None = None,
    exact: bool = True,
) -> dict[str, Any]:
    """A ``chat.completion`` with one assistant message (and ``tool_calls`` when given);
    ``exact`` adds every field the OpenAI API returns (``contract.EXACT_FIELDS``)."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if exact:
        message.update(refusal=None, annotations=[])
    if tool_calls:
        message["tool_calls"] = tool_calls
    usage: dict[str, Any] = {"prompt_tokens": 20, "completion_tokens": 10, "total_tokens": 30}
    out: dict[str, Any] = {
        "id": f"chatcmpl-{cid}",
        "object": "chat.completion",
        "created": CREATED,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": "tool_calls" if tool_calls else "stop",
                "logprobs": None,
            }
        ],
        "usage": usage,
    }
    if exact:
        usage["prompt_tokens_details"] = {"cached_tokens": 0}
        usage["completion_tokens_details"] = {"reasoning_tokens": 0}
        out.update(system_fingerprint=None, service_tier="default")
    return out


def chunk(
    model: str, cid: str, delta: dict[str, Any], finish: str | None = None, *, exact: bool = True
) -> dict[str, Any]:
    """A ``chat.completion.chunk`` with one choice (``exact``: with OpenAI's extra fields)."""
    choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish}
    out: dict[str, Any] = {
        "id": f"chatcmpl-{cid}",
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": model,
        "choices": [choice],
    }
    if exact:
        choice["logprobs"] = None
        out.update(system_fingerprint=None, service_tier="default")
    return out


@dataclass(frozen=True)
class StreamStyle:
    """How a (possibly broken) proxy streams: the faults it has."""

    cumulative: bool = False
    done: bool = True
    finish: bool = True
    shape: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    exact: bool = True


def stream_events(
    model: str,
    cid: str,
    pieces: tuple[str, ...],
    style: StreamStyle,
    *,
    reasoning: tuple[str, ...] = (),
    usage: bool = False,
) -> list[str]:
    """The ``data:`` payloads of a streamed answer in ``style``."""
    ex = style.exact
    chunks = [chunk(model, cid, {"role": "assistant", "content": ""}, exact=ex)]
    chunks += [chunk(model, cid, {"reasoning_content": r}, exact=ex) for r in reasoning]
    sent = ""
    for piece in pieces:
        sent += piece
        chunks.append(chunk(model, cid, {"content": sent if style.cumulative else piece}, exact=ex))
    if style.finish:
        chunks.append(chunk(model, cid, {}, "stop", exact=ex))
    if usage:
        if ex:
            for c in chunks:
                c["usage"] = None
        last = chunk(model, cid, {}, exact=ex)
        last["choices"] = []
        last["usage"] = {"prompt_tokens": 21, "completion_tokens": 24, "total_tokens": 45}
        chunks.append(last)
    if style.shape is not None:
        chunks = [style.shape(c) for c in chunks]
    datas = [json.dumps(c, ensure_ascii=False) for c in chunks]
    return [*datas, "[DONE]"] if style.done else datas


# -- interactions ------------------------------------------------------------------------------


def tool_stream_events(
    model: str, cid: str, calls: list[tuple[str, str, tuple[str, ...]]]
) -> list[str]:
    """A streamed tool-call answer: ``calls`` are ``(id, name, argument pieces)``; the first
    fragment of each carries index, id, type and name, the next ones argument pieces only."""
    chunks = [chunk(model, cid, {"role": "assistant", "content": None})]
    for i, (call_id, name, pieces) in enumerate(calls):
        first = {"index": i, "id": call_id, "type": "function"}
        first["function"] = {"name": name, "arguments": ""}
        chunks.append(chunk(model, cid, {"tool_calls": [first]}))
        for piece in pieces:
            chunks.append(
                chunk(model, cid, {"tool_calls": [{"index": i, "function": {"arguments": piece}}]})
            )
    chunks.append(chunk(model, cid, {}, "tool_calls"))
    return [*(json.dumps(c, ensure_ascii=False) for c in chunks), "[DONE]"]


def tool_call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    """One entry of ``message.tool_calls``."""
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def _request(path: str, body: Any, method: str = "POST") -> dict[str, Any]:
    text = body if isinstance(body, str) or body is None else json.dumps(body, ensure_ascii=False)
    return {
        "method": method,
        "uri": BASE + path,
        "request_headers": dict(_REQ_HEADERS),
        "request_body": text,
    }


def chat_request(model: str, prompt: str, stream: bool, **more: Any) -> dict[str, Any]:
    """The request the harness sends (only model, stream and the prompt are matched)."""
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "stream": stream,
    }
    body.update(more)
    return _request("/chat/completions", body)


def json_answer(req: dict[str, Any], status: int, body: Any, reason: str = "") -> Interaction:
    """A plain JSON (or empty, for ``body=None``) answer."""
    text = "" if body is None else json.dumps(body, ensure_ascii=False)
    headers = dict(_JSON) if body is not None else {"Content-Type": ["text/plain"]}
    return Interaction(
        status=status, reason=reason or "OK", response_headers=headers, response_body=text, **req
    )


def sse_answer(req: dict[str, Any], datas: list[str | tuple[str, str]]) -> Interaction:
    """A streamed answer, one network chunk per event, 15 ms apart; an ``(event, data)`` pair
    is written with an ``event:`` line (Anthropic and Responses streams)."""
    events = [
        (f"event: {d[0]}\ndata: {d[1]}\n\n" if isinstance(d, tuple) else f"data: {d}\n\n").encode()
        for d in datas
    ]
    return Interaction.streamed(
        pieces=[(round(0.015 * i, 3), e) for i, e in enumerate(events)],
        response_headers={"Content-Type": ["text/event-stream; charset=utf-8"]},
        t_headers_s=0.05,
        **req,
    )


def error(status: int, message: str, type_: str, code: str) -> dict[str, Any]:
    """An OpenAI error object."""
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


@dataclass(frozen=True)
class Proxy:
    """The answers of one (possibly broken) proxy; defaults are correct answers."""

    zh: str = ECHO_ZH_SENTENCE
    zh_stream: tuple[str, ...] = ZH_PIECES
    style: StreamStyle = StreamStyle()
    image_chat: str = f"![image]({IMAGE_URL})"
    image_url: str | None = IMAGE_URL
    errors_empty_200: bool = False
    auth_as_200: str | None = None
    exact: bool = True
    tools: Literal["ok", "ignored", "markup", "dropped_non_stream", "args_not_json"] = "ok"
    cline: Literal["xml", "tool_calls", "escaped"] = "xml"
    charset: str | None = None
    roundtrip_repeats: bool = False
    agent_endpoints: bool = True
    anthropic_openai_errors: bool = False
    anthropic_unnamed_events: bool = False
    responses_without_completed: bool = False


def interactions(p: Proxy) -> list[Interaction]:
    """Every probe's answer by proxy ``p``."""
    models = {
        "object": "list",
        "data": [
            {"id": m, "object": "model", "created": CREATED, "owned_by": "qwen"}
            for m in (TEXT, THINKING, IMAGE)
        ],
    }
    out = [
        json_answer(_request("/models", None, "GET"), 200, models),
        json_answer(dict(_request("/models", None, "GET"), uri=ROOT + "/models"), 200, models),
        json_answer(
            chat_request(TEXT, ECHO_EN_PROMPT, False),
            200,
            completion(TEXT, ECHO_EN_SENTENCE, "en", exact=p.exact),
        ),
        sse_answer(
            chat_request(TEXT, ECHO_EN_PROMPT, True),
            stream_events(TEXT, "en-stream", EN_PIECES, p.style),
        ),
        json_answer(chat_request(TEXT, ECHO_ZH_PROMPT, False), 200, completion(TEXT, p.zh, "zh")),
        sse_answer(
            chat_request(TEXT, ECHO_ZH_PROMPT, True),
            stream_events(TEXT, "zh-stream", p.zh_stream, p.style),
        ),
        sse_answer(
            chat_request(TEXT, STREAM_PROMPT, True, stream_options={"include_usage": True}),
            stream_events(TEXT, "stream", STREAM_PIECES, p.style, usage=True),
        ),
        sse_answer(
            chat_request(THINKING, THINK_PROMPT, True),
            stream_events(
                THINKING,
                "think",
                THINK_ANSWER,
                StreamStyle(done=p.style.done, finish=p.style.finish, shape=p.style.shape),
                reasoning=THINK_REASONING,
            ),
        ),
        json_answer(
            chat_request(IMAGE, IMAGE_PROMPT, False), 200, completion(IMAGE, p.image_chat, "image")
        ),
        sse_answer(
            chat_request(IMAGE, IMAGE_PROMPT, True),
            stream_events(
                IMAGE,
                "image-stream",
                (p.image_chat[:9], p.image_chat[9:30], p.image_chat[30:]),
                StreamStyle(),
            ),
        ),
        json_answer(
            _request(
                "/images/generations",
                {"model": IMAGE, "prompt": IMAGE_PROMPT, "n": 1, "size": "1024x1024"},
            ),
            200,
            {"created": CREATED, "data": [{"url": p.image_url, "revised_prompt": IMAGE_PROMPT}]},
        ),
    ]
    if p.auth_as_200 is not None:
        out.append(
            json_answer(
                chat_request(TEXT, AUTH_PROMPT, False), 200, completion(TEXT, p.auth_as_200, "auth")
            )
        )
    else:
        out.append(
            json_answer(
                chat_request(TEXT, AUTH_PROMPT, False),
                401,
                error(
                    401, "Incorrect API key provided.", "authentication_error", "invalid_api_key"
                ),
                "Unauthorized",
            )
        )
    errors = [
        (
            _request("/chat/completions", BAD_JSON_BODY.decode()),
            400,
            error(
                400, "the request body is not valid JSON", "invalid_request_error", "invalid_json"
            ),
            "Bad Request",
        ),
        (
            chat_request(UNKNOWN_MODEL, UNKNOWN_MODEL_PROMPT, False),
            404,
            error(
                404,
                f"The model `{UNKNOWN_MODEL}` does not exist.",
                "invalid_request_error",
                "model_not_found",
            ),
            "Not Found",
        ),
        (
            _request(
                "/chat/completions",
                {
                    "model": TEXT,
                    "messages": [
                        {"role": "system", "content": "<padding>"},
                        {"role": "user", "content": OVERSIZE_PROMPT},
                    ],
                    "stream": False,
                },
            ),
            413,
            error(
                413, "the request body is too large", "invalid_request_error", "request_too_large"
            ),
            "Payload Too Large",
        ),
    ]
    for req, status, body, reason in errors:
        if p.errors_empty_200:
            out.append(json_answer(req, 200, None))
        else:
            out.append(json_answer(req, status, body, reason))
    out = [*out, *agent_interactions(p), *profile_interactions(p)]
    if not p.agent_endpoints:
        out = [_not_found(i) if _agent_path(i.uri) else i for i in out]
    if p.charset is not None:
        out = [_labelled(i, p.charset) for i in out]
    return out


def _labelled(i: Interaction, charset: str) -> Interaction:
    """``i`` with its JSON or SSE content type labelled ``charset`` (the body unchanged)."""
    kind = i.response_headers.get("Content-Type", [""])[0].split(";")[0]
    if kind not in ("application/json", "text/event-stream"):
        return i
    headers = dict(i.response_headers, **{"Content-Type": [f"{kind}; charset={charset}"]})
    return replace(i, response_headers=headers)


def _agent_path(uri: str) -> bool:
    return "/v1/messages" in uri or "/v1/responses" in uri


def _not_found(inter: Interaction) -> Interaction:
    """What a proxy without the endpoint answers (aiohttp's plain 404)."""
    req = {
        "method": inter.method,
        "uri": inter.uri,
        "request_headers": inter.request_headers,
        "request_body": inter.request_body,
    }
    return Interaction(
        status=404,
        reason="Not Found",
        response_headers={"Content-Type": ["text/plain; charset=utf-8"]},
        response_body="404: Not Found",
        **req,
    )


_ARGS = {"Paris": ('{"city"', ': "Paris"}'), "Tokyo": ('{"city": ', '"Tokyo"}')}
_BAD_ARGS = {"Paris": ("{city: ", "Paris}"), "Tokyo": ("{city: ", "Tokyo}")}
_MARKUP = '<tool_call>\n{{"name": "get_weather", "arguments": {{"city": "{city}"}}}}\n</tool_call>'


def _tool_answers(p: Proxy, prompt: str, cities: list[str]) -> list[Interaction]:
    """The chat answers (not streamed, streamed) to a tool probe asking for ``cities``."""
    args = _BAD_ARGS if p.tools == "args_not_json" else _ARGS
    ids = [f"call_{c.lower()}{'0' * (19 - len(c))}{i}" for i, c in enumerate(cities)]
    calls = [
        tool_call(i, "get_weather", "".join(args[c])) for i, c in zip(ids, cities, strict=True)
    ]
    stream_calls = [(i, "get_weather", args[c]) for i, c in zip(ids, cities, strict=True)]
    key = "tools" if len(cities) == 1 else "parallel"
    if p.tools == "ignored":
        prose = "I cannot check the weather, but Paris is often mild."
        plain = completion(TEXT, prose, key)
        streamed = stream_events(TEXT, f"{key}-stream", (prose,), StreamStyle())
    elif p.tools == "markup":
        text = "\n".join(_MARKUP.format(city=c) for c in cities)
        plain = completion(TEXT, text, key)
        streamed = stream_events(TEXT, f"{key}-stream", (text[:15], text[15:]), StreamStyle())
    else:
        plain = completion(TEXT, None, key, tool_calls=calls)
        if p.tools == "dropped_non_stream":
            plain = completion(TEXT, "", key)
        streamed = tool_stream_events(TEXT, f"{key}-stream", stream_calls)
    msgs = [{"role": "user", "content": prompt}]
    return [
        json_answer(
            _request("/chat/completions", tool_chat_body(TEXT, msgs, stream=False)), 200, plain
        ),
        sse_answer(
            _request("/chat/completions", tool_chat_body(TEXT, msgs, stream=True)), streamed
        ),
    ]


def _anthropic_message(content: list[dict[str, Any]], stop: str) -> dict[str, Any]:
    return {
        "id": "msg_probe0001",
        "type": "message",
        "role": "assistant",
        "model": TEXT,
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {"input_tokens": 20, "output_tokens": 12},
    }


def _anthropic_stream(
    blocks: list[tuple[dict[str, Any], list[dict[str, Any]]]], stop: str, *, unnamed: bool = False
) -> list[str | tuple[str, str]]:
    """Anthropic's event grammar (docs/agents.md §3.3): ``blocks`` are (start block, deltas);
    ``unnamed`` leaves out the ``event:`` lines (the Python SDK then skips every frame)."""
    events: list[dict[str, Any]] = [
        {"type": "message_start", "message": dict(_anthropic_message([], stop), stop_reason=None)},
        {"type": "ping"},
    ]
    for i, (block, deltas) in enumerate(blocks):
        events.append({"type": "content_block_start", "index": i, "content_block": block})
        events += [{"type": "content_block_delta", "index": i, "delta": d} for d in deltas]
        events.append({"type": "content_block_stop", "index": i})
    events.append(
        {
            "type": "message_delta",
            "delta": {"stop_reason": stop, "stop_sequence": None},
            "usage": {"output_tokens": 12},
        }
    )
    events.append({"type": "message_stop"})
    if unnamed:
        return [json.dumps(e, ensure_ascii=False) for e in events]
    return [(e["type"], json.dumps(e, ensure_ascii=False)) for e in events]


def _response(output: list[dict[str, Any]], status: str = "completed") -> dict[str, Any]:
    return {
        "id": "resp_probe0001",
        "object": "response",
        "created_at": CREATED,
        "status": status,
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "model": TEXT,
        "output": output,
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": {
            "input_tokens": 20,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": 12,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 32,
        },
    }


_MESSAGE_ITEM = {
    "id": "msg_probe0001",
    "type": "message",
    "role": "assistant",
    "status": "completed",
    "content": [{"type": "output_text", "text": ECHO_EN_SENTENCE, "annotations": []}],
}
_ROUNDTRIP_ITEM = {
    "id": "msg_probe0002",
    "type": "message",
    "role": "assistant",
    "status": "completed",
    "content": [{"type": "output_text", "text": "21 °C and sunny.", "annotations": []}],
}
_CALL_ITEM = {
    "id": "fc_probe0001",
    "type": "function_call",
    "call_id": "call_paris0000000000000000",
    "name": "get_weather",
    "arguments": '{"city": "Paris"}',
    "status": "completed",
}


def _responses_events(p: Proxy, item: dict[str, Any]) -> list[str | tuple[str, str]]:
    """The Responses streaming order (docs/agents.md §4.3) for one output item."""
    empty = dict(item, status="in_progress")
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": _response([], "in_progress")},
        {"type": "response.in_progress", "response": _response([], "in_progress")},
    ]
    if item["type"] == "message":
        events.append(
            {
                "type": "response.output_item.added",
                "output_index": 0,
                "item": dict(empty, content=[]),
            }
        )
        part = {"type": "output_text", "text": "", "annotations": []}
        events.append(
            {
                "type": "response.content_part.added",
                "item_id": item["id"],
                "output_index": 0,
                "content_index": 0,
                "part": part,
            }
        )
        for piece in EN_PIECES:
            events.append(
                {
                    "type": "response.output_text.delta",
                    "item_id": item["id"],
                    "output_index": 0,
                    "content_index": 0,
                    "delta": piece,
                    "logprobs": [],
                }
            )
        events.append(
            {
                "type": "response.output_text.done",
                "item_id": item["id"],
                "output_index": 0,
                "content_index": 0,
                "text": ECHO_EN_SENTENCE,
                "logprobs": [],
            }
        )
        events.append(
            {
                "type": "response.content_part.done",
                "item_id": item["id"],
                "output_index": 0,
                "content_index": 0,
                "part": dict(part, text=ECHO_EN_SENTENCE),
            }
        )
    else:
        events.append(
            {
                "type": "response.output_item.added",
                "output_index": 0,
                "item": dict(empty, arguments=""),
            }
        )
        for piece in _ARGS["Paris"]:
            events.append(
                {
                    "type": "response.function_call_arguments.delta",
                    "item_id": item["id"],
                    "output_index": 0,
                    "delta": piece,
                }
            )
        events.append(
            {
                "type": "response.function_call_arguments.done",
                "item_id": item["id"],
                "output_index": 0,
                "name": item["name"],
                "arguments": item["arguments"],
            }
        )
    events.append({"type": "response.output_item.done", "output_index": 0, "item": item})
    if not p.responses_without_completed:
        events.append({"type": "response.completed", "response": _response([item])})
    for n, e in enumerate(events):
        e["sequence_number"] = n
    return [(e["type"], json.dumps(e, ensure_ascii=False)) for e in events]


def agent_interactions(p: Proxy) -> list[Interaction]:
    """Answers to the agent probes: chat tools, ``/v1/messages``, ``/v1/responses``."""
    out = [
        *_tool_answers(p, TOOL_PROMPT, ["Paris"]),
        *_tool_answers(p, PARALLEL_PROMPT, ["Paris", "Tokyo"]),
    ]
    if p.roundtrip_repeats:
        again = completion(
            TEXT,
            None,
            "rt",
            tool_calls=[
                tool_call("call_berlin000000000000001", "get_weather", '{"city": "Berlin"}')
            ],
        )
    else:
        again = completion(TEXT, "It is 21 °C and sunny in Berlin.", "rt")
    out.append(
        json_answer(
            _request("/chat/completions", tool_chat_body(TEXT, roundtrip_messages(), stream=False)),
            200,
            again,
        )
    )
    if not p.agent_endpoints:
        return out
    text_block = {"type": "text", "text": ""}
    tool_block = {"type": "tool_use", "id": "toolu_probe0001", "name": "get_weather", "input": {}}
    json_deltas = [{"type": "input_json_delta", "partial_json": a} for a in ("", *_ARGS["Paris"])]
    text_deltas = [{"type": "text_delta", "text": t} for t in EN_PIECES]
    bad = (
        error(400, "the request body is not valid JSON", "invalid_request_error", "invalid_json")
        if p.anthropic_openai_errors
        else {
            "type": "error",
            "error": {"type": "invalid_request_error", "message": "the body is not valid JSON"},
        }
    )
    out += [
        json_answer(
            _request("/messages", anthropic_body(TEXT, ECHO_EN_PROMPT, stream=False)),
            200,
            _anthropic_message([{"type": "text", "text": ECHO_EN_SENTENCE}], "end_turn"),
        ),
        sse_answer(
            _request("/messages", anthropic_body(TEXT, ECHO_EN_PROMPT, stream=True)),
            _anthropic_stream(
                [(text_block, text_deltas)], "end_turn", unnamed=p.anthropic_unnamed_events
            ),
        ),
        sse_answer(
            _request("/messages", anthropic_body(TEXT, TOOL_PROMPT, stream=True, tools=True)),
            _anthropic_stream(
                [(tool_block, json_deltas)], "tool_use", unnamed=p.anthropic_unnamed_events
            ),
        ),
        json_answer(
            _request("/messages", anthropic_body(TEXT, TOOL_PROMPT, stream=False, tools=True)),
            200,
            _anthropic_message([dict(tool_block, input={"city": "Paris"})], "tool_use"),
        ),
        json_answer(
            _request(
                "/messages",
                {
                    "model": TEXT,
                    "max_tokens": 1024,
                    "tools": [anthropic_tool()],
                    "messages": anthropic_roundtrip_messages(),
                    "stream": False,
                },
            ),
            200,
            _anthropic_message([dict(tool_block, input={"city": "Berlin"})], "tool_use")
            if p.roundtrip_repeats
            else _anthropic_message([{"type": "text", "text": "21 °C and sunny."}], "end_turn"),
        ),
        json_answer(
            _request("/responses", responses_body(TEXT, TOOL_PROMPT, stream=False, tools=True)),
            200,
            _response([_CALL_ITEM]),
        ),
        json_answer(
            _request(
                "/responses",
                {
                    "model": TEXT,
                    "input": responses_roundtrip_input(),
                    "tools": [responses_tool()],
                    "stream": False,
                },
            ),
            200,
            _response([dict(_CALL_ITEM, arguments='{"city": "Berlin"}')])
            if p.roundtrip_repeats
            else _response([_ROUNDTRIP_ITEM]),
        ),
        json_answer(_request("/messages", BAD_JSON_BODY.decode()), 400, bad, "Bad Request"),
        json_answer(
            _request("/responses", responses_body(TEXT, ECHO_EN_PROMPT, stream=False)),
            200,
            _response([_MESSAGE_ITEM]),
        ),
        sse_answer(
            _request("/responses", responses_body(TEXT, ECHO_EN_PROMPT, stream=True)),
            _responses_events(p, _MESSAGE_ITEM),
        ),
        sse_answer(
            _request("/responses", responses_body(TEXT, TOOL_PROMPT, stream=True, tools=True)),
            _responses_events(p, _CALL_ITEM),
        ),
        json_answer(
            _request("/responses", BAD_JSON_BODY.decode()),
            400,
            error(
                400, "the request body is not valid JSON", "invalid_request_error", "invalid_json"
            ),
            "Bad Request",
        ),
    ]
    return out


_PROFILE_ANSWERS = {
    "topic": "量子计算讨论",
    "title": '{"title": "🦊 Quick Brown Fox"}',
    "tags": '{"tags": ["Language", "Typing practice"]}',
    "task": "<read_file>\n<path>README.md</path>\n</read_file>",
}


def _cline_task(p: Proxy) -> list[str]:
    """Cline's task answer: its XML tool call as text; or, broken, turned into native
    tool_calls although no tools were offered (cline#13008), or HTML-escaped."""
    if p.cline == "tool_calls":
        return tool_stream_events(
            TEXT, "task", [("call_cline0", "read_file", ('{"path": "README.md"}',))]
        )
    text = _PROFILE_ANSWERS["task"]
    if p.cline == "escaped":
        text = html.escape(text)
    return stream_events(TEXT, "task", (text[:11], text[11:]), StreamStyle(), usage=True)


def profile_interactions(p: Proxy) -> list[Interaction]:
    """Answers to the profile calls that the plain probes do not already answer."""
    out: list[Interaction] = []
    for profile in PROFILES:
        for step in profile.steps(TEXT):
            path = step.path.split("?")[0]
            if step.name in ("topic", "title", "tags"):
                out.append(
                    json_answer(
                        _request(path, step.body),
                        200,
                        completion(TEXT, _PROFILE_ANSWERS[step.name], step.name),
                    )
                )
            elif step.name == "task":
                out.append(sse_answer(_request(path, step.body), _cline_task(p)))
            elif step.name == "quota" and p.agent_endpoints:
                body = _anthropic_message([{"type": "text", "text": "Hi"}], "max_tokens")
                out.append(json_answer(_request(path, step.body), 200, body))
            elif step.name == "count_tokens" and p.agent_endpoints:
                out.append(json_answer(_request(path, step.body), 200, {"input_tokens": 61}))
    return out


def cassette(name: str, description: str, p: Proxy) -> Cassette:
    """The cassette of proxy ``p``."""
    return Cassette(
        name=name,
        description=description,
        provenance=Provenance(
            "synthetic", "2026-11-22", "tests/broken_proxies.py", "1", list(SECTIONS), None
        ),
        interactions=interactions(p),
    )


def healthy() -> Cassette:
    """A proxy that answers every probe correctly (kept in memory, not written)."""
    return cassette(
        "healthy", "Synthetic OpenAI-side proxy answering every probe correctly.", Proxy()
    )


def _non_openai(c: dict[str, Any]) -> dict[str, Any]:
    """Chunks shaped by hand: ``object`` of a completion, ``created`` as text, no ``index``."""
    out = dict(c, object="chat.completion", created=str(c["created"]))
    out["choices"] = [{k: v for k, v in ch.items() if k != "index"} for ch in c["choices"]]
    return out


def _fffd(text: str) -> str:
    """Chinese text decoded piecewise: two characters split across chunks become U+FFFD."""
    return text.replace("北", "\ufffd\ufffd").replace("子", "\ufffd")


_STREAM_CHECKS = ("chat.en.stream", "chat.zh.stream")
_PLAIN_STREAM_PROFILES = ("profile.cherry-studio", "profile.open-webui", "profile.langchain")
"""Profiles whose streamed call is answered by a plain probe's answer (the same prompt)."""
_TOOL_CHECKS = ("tools.call", "tools.call.stream", "tools.parallel")


@dataclass(frozen=True)
class Broken:
    """A broken fixture: its description, its proxy, and ``expect``: check id → diagnosis."""

    description: str
    proxy: Proxy
    expect: dict[str, str]


BROKEN: dict[str, Broken] = {
    "garbled_replacement": Broken(
        "Synthetic proxy that decodes UTF-8 per network chunk: Chinese comes back with U+FFFD.",
        Proxy(zh=_fffd(ECHO_ZH_SENTENCE), zh_stream=tuple(_fffd(p) for p in ZH_PIECES)),
        {
            "chat.zh": "replacement_chars",
            "chat.zh.stream": "replacement_chars",
            "profile.cherry-studio": "replacement_chars",
        },
    ),
    "garbled_latin1": Broken(
        "Synthetic proxy that reads UTF-8 as Latin-1 (non-stream: cp1252): Chinese mojibake.",
        Proxy(
            zh=cp1252_mojibake(ECHO_ZH_SENTENCE),
            zh_stream=tuple(latin1_mojibake(p) for p in ZH_PIECES),
        ),
        {
            "chat.zh": "mojibake_latin1",
            "chat.zh.stream": "mojibake_latin1",
            "profile.cherry-studio": "mojibake_latin1",
        },
    ),
    "garbled_gbk": Broken(
        "Synthetic proxy that reads UTF-8 as GBK: Chinese mojibake.",
        Proxy(
            zh=gbk_mojibake(ECHO_ZH_SENTENCE)[-1], zh_stream=(gbk_mojibake(ECHO_ZH_SENTENCE)[0],)
        ),
        {
            "chat.zh": "mojibake_gbk",
            "chat.zh.stream": "mojibake_gbk",
            "profile.cherry-studio": "mojibake_gbk",
        },
    ),
    "garbled_claim": Broken(
        "Synthetic proxy whose model sees corrupted Chinese and says the message is garbled.",
        Proxy(
            zh="It looks like your message might be garbled. Could you send it again?",
            zh_stream=("您的消息", "似乎是", "乱码", "，请重新发送。"),
        ),
        {
            "chat.zh": "garbled_claim",
            "chat.zh.stream": "garbled_claim",
            "profile.cherry-studio": "garbled_claim",
        },
    ),
    "duplicated_deltas": Broken(
        "Synthetic proxy that forwards cumulative snapshots as deltas: streamed text repeats.",
        Proxy(style=StreamStyle(cumulative=True)),
        {
            "stream.no_duplicates": "duplicated_deltas",
            **dict.fromkeys(_STREAM_CHECKS, "duplicated_deltas"),
            **dict.fromkeys(_PLAIN_STREAM_PROFILES, "duplicated_deltas"),
        },
    ),
    "image_null": Broken(
        "Synthetic proxy that answers image requests with a null URL: ![image](null).",
        Proxy(image_chat="![image](null)", image_url=None),
        {
            "images.chat": "null_image_url",
            "images.chat.stream": "null_image_url",
            "images.generations": "null_image_url",
        },
    ),
    "t2i_tutorial": Broken(
        "Synthetic proxy that sends image prompts to the text model: a drawing tutorial.",
        Proxy(image_chat=TUTORIAL),
        {"images.chat": "text_instead_of_image", "images.chat.stream": "text_instead_of_image"},
    ),
    "stream_no_done": Broken(
        "Synthetic proxy whose streams end without data: [DONE].",
        Proxy(style=StreamStyle(done=False)),
        {"stream.done": "missing_done"},
    ),
    "stream_no_finish": Broken(
        "Synthetic proxy whose streams never carry a finish_reason.",
        Proxy(style=StreamStyle(finish=False)),
        {"stream.finish_reason": "missing_finish_reason"},
    ),
    "errors_empty_200": Broken(
        "Synthetic proxy that answers failing requests with an empty HTTP 200.",
        Proxy(errors_empty_200=True),
        {
            "errors.bad_json": "empty_200",
            "errors.unknown_model": "empty_200",
            "errors.oversize": "empty_200",
        },
    ),
    "auth_error_as_200": Broken(
        "Synthetic proxy that answers a wrong key with HTTP 200 and the error as text.",
        Proxy(auth_as_200="Error: invalid API key. Please check your configuration."),
        {"auth.wrong_key": "error_as_200", "auth.no_key": "error_as_200"},
    ),
    "non_openai_chunks": Broken(
        "Synthetic proxy whose stream chunks are not OpenAI's: wrong object, text created.",
        Proxy(style=StreamStyle(shape=_non_openai)),
        {
            "stream.contract": "contract_violation",
            "reasoning.thinking": "contract_violation",
            "wire.chunks": "contract_violation",
            **dict.fromkeys(_STREAM_CHECKS, "contract_violation"),
        },
    ),
    "missing_openai_fields": Broken(
        "Synthetic proxy whose answers lack fields OpenAI returns: no refusal, annotations, "
        "logprobs, system_fingerprint, usage details.",
        Proxy(style=StreamStyle(exact=False), exact=False),
        {"wire.completion": "missing_openai_fields", "wire.chunks": "missing_openai_fields"},
    ),
    "tools_ignored": Broken(
        "Synthetic proxy that ignores `tools`: prose and finish_reason stop (docs/agents.md §6.1).",
        Proxy(tools="ignored"),
        dict.fromkeys(_TOOL_CHECKS, "no_tool_call"),
    ),
    "tool_markup_leak": Broken(
        "Synthetic proxy that passes the model's <tool_call> markup through as content.",
        Proxy(tools="markup"),
        dict.fromkeys(_TOOL_CHECKS, "tool_markup_in_content"),
    ),
    "tool_calls_dropped": Broken(
        "Synthetic proxy that loses tool calls when the request is not streamed.",
        Proxy(tools="dropped_non_stream"),
        {"tools.call": "tool_calls_dropped"},
    ),
    "tool_call_repeated": Broken(
        "Synthetic proxy whose model calls the same tool again after getting its result.",
        Proxy(roundtrip_repeats=True),
        dict.fromkeys(
            ("tools.round_trip", "anthropic.round_trip", "responses.round_trip"), "repeated_call"
        ),
    ),
    "tool_args_not_json": Broken(
        "Synthetic proxy that sends tool arguments that are not JSON ({city: Paris}).",
        Proxy(tools="args_not_json"),
        dict.fromkeys(_TOOL_CHECKS, "arguments_not_json"),
    ),
    "cline_xml_to_tool_calls": Broken(
        "Synthetic proxy that turns Cline's XML tool call into native tool_calls although the "
        "request offered no tools (cline#13008).",
        Proxy(cline="tool_calls"),
        {"profile.cline": "tool_calls_without_tools"},
    ),
    "cline_xml_escaped": Broken(
        "Synthetic proxy that HTML-escapes the answer text, so Cline gets &lt;read_file&gt;.",
        Proxy(cline="escaped"),
        {"profile.cline": "html_escaped"},
    ),
    "charset_latin1": Broken(
        "Synthetic proxy that sends UTF-8 bodies labelled charset=iso-8859-1.",
        Proxy(charset="iso-8859-1"),
        dict.fromkeys(
            (
                "chat.zh",
                "chat.zh.stream",
                "reasoning.thinking",  # "13 × 17"
                "tools.round_trip",  # "21 °C"
                "anthropic.round_trip",
                "responses.round_trip",
                "profile.cherry-studio",
                "profile.open-webui",  # the title's emoji
            ),
            "wrong_charset",
        ),
    ),
    "anthropic_openai_errors": Broken(
        "Synthetic proxy whose /v1/messages errors are OpenAI-shaped, not Anthropic's.",
        Proxy(anthropic_openai_errors=True),
        {"anthropic.errors": "not_anthropic_error"},
    ),
    "anthropic_unnamed_events": Broken(
        "Synthetic proxy whose /v1/messages streams have no `event:` lines (data only).",
        Proxy(anthropic_unnamed_events=True),
        {
            "anthropic.stream": "event_order",
            "anthropic.tools.stream": "event_order",
            "profile.claude-code": "event_order",
        },
    ),
    "responses_no_completed": Broken(
        "Synthetic proxy whose /v1/responses streams end without response.completed.",
        Proxy(responses_without_completed=True),
        {
            "responses.stream": "missing_completed",
            "responses.tools.stream": "missing_completed",
            "profile.codex-cli": "missing_completed",
        },
    ),
}
"""Every broken fixture by name; the file is ``tests/cassettes/broken/<name>.json``."""


def build_broken() -> list[Cassette]:
    """Every broken fixture cassette, in :data:`BROKEN` order."""
    return [cassette(name, b.description, b.proxy) for name, b in BROKEN.items()]


def write_all(out_dir: Path = BROKEN_DIR) -> list[Path]:
    """Write every broken fixture into ``out_dir``; return the paths."""
    return [c.save(out_dir / f"{c.name}.json") for c in build_broken()]


if __name__ == "__main__":
    for path in write_all():
        print(path)
