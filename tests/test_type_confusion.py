"""Every value of a valid request, replaced by every JSON type, is answered with a 4xx error
object or a real answer: never a 500.

For each API, a valid body that uses most of its fields (messages with parts, tools, tool
results, reasoning options; media parts are left to the media tests: the fake site takes no
uploads) is taken apart: each value at each path (``messages.0.content.1
.image_url.url``…) is replaced by ``null``, ``true``, a number, a string, ``[]``, ``[1]``,
``{}`` and ``{"a": 1}``, one at a time, and sent to the gateway in front of the independent
fake site (``tests/fake_site.py``). A value of the wrong type must be refused naming what is
wrong (status below 500, an error object of the API's shape); one the API tolerates must get a
proper answer.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from helpers import assistant_call
from test_integration_fake import make_rig

TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}

BODIES: dict[str, dict[str, Any]] = {
    "/v1/chat/completions": {
        "model": "qwen3-max",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "hi"}]},
            assistant_call("call_1", "get_weather", '{"city": "Oslo"}'),
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
            {"role": "user", "content": [{"type": "text", "text": "and now?"}]},
        ],
        "tools": [TOOL],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "temperature": 0.5,
        "max_tokens": 50,
        "stop": ["\n\n"],
        "stream_options": {"include_usage": True},
        "response_format": {"type": "text"},
    },
    "/v1/messages": {
        "model": "claude-3-5-haiku",
        "max_tokens": 2048,  # above the thinking budget, as Anthropic requires
        "system": [{"type": "text", "text": "be brief"}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "hi"}]},
            {
                "role": "assistant",
                "content": [
                    {"type": "tool_use", "id": "tu_1", "name": "get_weather", "input": {"a": 1}}
                ],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "tu_1", "content": "sunny"}],
            },
        ],
        "tools": [{"name": "get_weather", "description": "w", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "auto"},
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "stop_sequences": ["END"],
        "metadata": {"user_id": "u"},
    },
    "/v1/responses": {
        "model": "qwen3-max",
        "instructions": "be brief",
        "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "hi"}]},
            {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
        ],
        "tools": [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}],
        "reasoning": {"effort": "low"},
        "text": {"format": {"type": "text"}},
        "max_output_tokens": 100,
    },
}

VALUES: list[Any] = [None, True, 7, "x", [], [1], {}, {"a": 1}]


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every path to a value inside ``value`` (dict keys and list indices), depth first."""
    items: Any = value.items() if isinstance(value, dict) else enumerate(value)
    for key, child in items:
        path = (*prefix, key)
        yield path
        if isinstance(child, dict | list) and child:
            yield from _paths(child, path)


def _replaced(body: dict[str, Any], path: tuple[Any, ...], new: Any) -> dict[str, Any]:
    out = copy.deepcopy(body)
    target: Any = out
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = new
    return out


def _error_shape_ok(path: str, payload: Any) -> bool:
    if path == "/v1/messages":
        return payload.get("type") == "error" and isinstance(payload["error"].get("message"), str)
    return isinstance(payload.get("error"), dict) and isinstance(payload["error"]["message"], str)


#: How each API's stream ends when it went well, or says it failed.
ENDS = {
    "/v1/chat/completions": (b"data: [DONE]", b'"error"'),
    "/v1/messages": (b"event: message_stop", b"event: error"),
    "/v1/responses": (
        b"event: response.completed",
        b"event: response.incomplete",
        b"event: response.failed",
    ),
}


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("route", sorted(BODIES))
async def test_no_value_of_any_type_is_a_server_error(
    aiohttp_server: Any, route: str, stream: bool
) -> None:
    rig = await make_rig(aiohttp_server)
    body = {**BODIES[route], "stream": stream}
    failures: list[str] = []
    async with aiohttp.ClientSession(headers={"Authorization": "Bearer sk-test"}) as s:
        async with s.post(rig.url(route), json=body) as r:
            assert r.status == 200, await r.text()  # the untouched body is valid
        for path in _paths(body):
            for value in VALUES:
                sent = _replaced(body, path, value)
                async with s.post(rig.url(route), json=sent) as r:
                    raw = await r.read()
                    where = f"{'.'.join(map(str, path))} = {json.dumps(value)}"
                    if r.status >= 500:
                        failures.append(f"{where}: {r.status} {raw[:200]!r}")
                    elif r.status >= 400 and not _error_shape_ok(route, json.loads(raw)):
                        failures.append(f"{where}: {r.status} not an error object {raw[:200]!r}")
                    elif r.status == 200 and not raw:
                        failures.append(f"{where}: an empty 200")
                    elif (
                        r.status == 200
                        and r.content_type == "text/event-stream"
                        and not any(e in raw for e in ENDS[route])
                    ):
                        failures.append(f"{where}: a stream without its end {raw[-200:]!r}")
    assert failures == []
