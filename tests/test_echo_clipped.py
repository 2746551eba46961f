"""Values a client sent are repeated at most 80 characters long (README, "values echoed in
messages and logs… are cut to 80 characters"): a 20,000-character value in any field that an
error message quotes comes back, in the error body and in the ``request_failed`` log line, as
its first 79 characters and an ellipsis. One case per field that quoted it whole."""

from __future__ import annotations

import json
import re
from typing import Any

import aiohttp
import pytest
import structlog
from helpers import SCENARIO, ServerFactory, Stack, start_stack

from recorder.replay import REQUESTS_KEY

#: the echo cap the README documents
CAP = 80
LONG = "ECHO" + "x" * 20_000
_RUN = re.compile(r"ECHOx*", re.IGNORECASE)  # a URL scheme is lower-cased

_HI = [{"role": "user", "content": "hi"}]
_TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
_CHAT = {"model": "qwen3-max", "messages": _HI}
_RESP = {"model": "qwen3-max", "input": "hi"}
_MSGS = {"model": "claude-3-5-haiku", "max_tokens": 20, "messages": _HI}
_ANTHROPIC_TOOL = {"name": "f", "input_schema": {"type": "object"}}


def _user_parts(*parts: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"role": "user", "content": list(parts)}]


#: case -> (method, path, JSON body or None, the param the error names). ``{stored}`` in a
#: path is the id of a response stored first.
CASES: dict[str, tuple[str, str, dict[str, Any] | None, str]] = {
    "responses_get_id": ("GET", "/v1/responses/" + LONG[:4000], None, "response_id"),
    "responses_delete_id": ("DELETE", "/v1/responses/" + LONG[:4000], None, "response_id"),
    "responses_input_items_id": (
        "GET",
        f"/v1/responses/{LONG[:4000]}/input_items",
        None,
        "response_id",
    ),
    "responses_input_items_after": (
        "GET",
        "/v1/responses/{stored}/input_items?after=" + LONG[:4000],
        None,
        "after",
    ),
    "chat_tools_type": (
        "POST",
        "/v1/chat/completions",
        {**_CHAT, "tools": [{"type": LONG, "function": {"name": "f"}}]},
        "tools[0].type",
    ),
    "chat_tools_function_parameters": (
        "POST",
        "/v1/chat/completions",
        {
            **_CHAT,
            "tools": [
                {"type": "function", "function": {"name": "f", "parameters": {"type": LONG}}}
            ],
        },
        "tools[0].function.parameters",
    ),
    "chat_tools_function_parameters_key": (
        "POST",
        "/v1/chat/completions",
        {
            **_CHAT,
            "tools": [
                {
                    "type": "function",
                    "function": {
                        "name": "f",
                        "parameters": {"type": "object", "properties": {LONG: {"type": 5}}},
                    },
                }
            ],
        },
        "tools[0].function.parameters",
    ),
    "chat_messages_content_type": (
        "POST",
        "/v1/chat/completions",
        {**_CHAT, "messages": _user_parts({"type": LONG})},
        "messages",
    ),
    "chat_tool_choice_function_name": (
        "POST",
        "/v1/chat/completions",
        {
            **_CHAT,
            "tools": [_TOOL],
            "tool_choice": {"type": "function", "function": {"name": LONG}},
        },
        "tool_choice.function.name",
    ),
    "chat_size_image_model": (
        "POST",
        "/v1/chat/completions",
        {**_CHAT, "model": "qwen3-max-image", "size": LONG},
        "size",
    ),
    "chat_metadata_key": (
        "POST",
        "/v1/chat/completions",
        {**_CHAT, "metadata": {LONG: 1}},
        "metadata.ECHO",
    ),
    "chat_image_url_scheme": (
        "POST",
        "/v1/chat/completions",
        {
            **_CHAT,
            "messages": _user_parts({"type": "image_url", "image_url": {"url": LONG + ":/"}}),
        },
        "messages",
    ),
    "chat_image_url_host": (
        "POST",
        "/v1/chat/completions",
        {
            **_CHAT,
            "messages": _user_parts({"type": "image_url", "image_url": {"url": f"http://{LONG}/"}}),
        },
        "messages",
    ),
    "responses_input_type": (
        "POST",
        "/v1/responses",
        {**_RESP, "input": [{"type": LONG}]},
        "input[0].type",
    ),
    "responses_input_content_type": (
        "POST",
        "/v1/responses",
        {**_RESP, "input": _user_parts({"type": LONG})},
        "input[0].content[0].type",
    ),
    "responses_tools_type": (
        "POST",
        "/v1/responses",
        {**_RESP, "tools": [{"type": LONG}]},
        "tools[0].type",
    ),
    "responses_tools_parameters": (
        "POST",
        "/v1/responses",
        {**_RESP, "tools": [{"type": "function", "name": "f", "parameters": {"type": LONG}}]},
        "tools[0].parameters",
    ),
    "responses_tool_choice_name": (
        "POST",
        "/v1/responses",
        {
            **_RESP,
            "tools": [{"type": "function", "name": "f"}],
            "tool_choice": {"type": "function", "name": LONG},
        },
        "tool_choice",
    ),
    "responses_previous_response_id": (
        "POST",
        "/v1/responses",
        {**_RESP, "previous_response_id": LONG},
        "previous_response_id",
    ),
    "messages_content_type": (
        "POST",
        "/v1/messages",
        {**_MSGS, "messages": _user_parts({"type": LONG})},
        "messages.0.content.0.type",
    ),
    "messages_image_source_type": (
        "POST",
        "/v1/messages",
        {**_MSGS, "messages": _user_parts({"type": "image", "source": {"type": LONG}})},
        "messages.0.content.0.source.type",
    ),
    "messages_tools_type": (
        "POST",
        "/v1/messages",
        {**_MSGS, "tools": [{**_ANTHROPIC_TOOL, "type": LONG}]},
        "tools.0.type",
    ),
    "messages_tools_input_schema": (
        "POST",
        "/v1/messages",
        {**_MSGS, "tools": [{"name": "f", "input_schema": {"type": LONG}}]},
        "tools.0.input_schema",
    ),
    "messages_tool_choice_type": (
        "POST",
        "/v1/messages",
        {**_MSGS, "tool_choice": {"type": LONG}},
        "tool_choice.type",
    ),
    "messages_tool_choice_name": (
        "POST",
        "/v1/messages",
        {**_MSGS, "tools": [_ANTHROPIC_TOOL], "tool_choice": {"type": "tool", "name": LONG}},
        "tool_choice.name",
    ),
    "messages_thinking_type": (
        "POST",
        "/v1/messages",
        {**_MSGS, "thinking": {"type": LONG}},
        "thinking.type",
    ),
    "count_tokens_content_type": (
        "POST",
        "/v1/messages/count_tokens",
        {"model": "claude-3-5-haiku", "messages": _user_parts({"type": LONG})},
        "messages.0.content.0.type",
    ),
    "images_size": (
        "POST",
        "/v1/images/generations",
        {"model": "qwen3-max-image", "prompt": "a cat", "size": LONG},
        "size",
    ),
}


def _longest_echo(text: str) -> int:
    return max((len(m) for m in _RUN.findall(text)), default=0)


@pytest.fixture
async def stack(aiohttp_server: ServerFactory) -> Stack:
    return await start_stack(aiohttp_server)


async def _stored_response(stack: Stack) -> str:
    async with stack.async_client() as client:
        done = await client.responses.create(model="qwen3-max", input=SCENARIO["t2t_answer"].prompt)
    return done.id


@pytest.mark.parametrize("case", sorted(CASES))
async def test_a_long_value_is_echoed_at_most_80_characters(stack: Stack, case: str) -> None:
    """The error names the field and quotes the value cut to 80 characters; so does the log."""
    method, path, body, param = CASES[case]
    if "{stored}" in path:
        path = path.replace("{stored}", await _stored_response(stack))
    sent_before = len(stack.replay.app[REQUESTS_KEY])
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Authorization": "Bearer test"}  # the SDK's key: its stored responses
    if body is not None:
        headers["Content-Type"] = "application/json"
    with structlog.testing.capture_logs() as logs:
        async with (
            aiohttp.ClientSession() as s,
            s.request(method, stack.proxy.make_url(path), data=data, headers=headers) as r,
        ):
            status, text = r.status, await r.text()
    assert 400 <= status < 500, text[:300]
    error = json.loads(text)["error"]
    assert param in (error.get("param") or "") + error["message"], error
    echoed = _longest_echo(text)
    assert 10 < echoed <= CAP, (echoed, text[:300])  # quoted, and cut
    (failed,) = [e for e in logs if e["event"] == "request_failed"]
    assert failed["status"] == status
    assert 10 < _longest_echo(failed["message"]) <= CAP, failed["message"][:300]
    assert max(_longest_echo(str(e)) for e in logs) <= CAP
    # refused before anything reached the site (the model list may have been read)
    assert all(r.path_qs == "/api/models" for r in stack.replay.app[REQUESTS_KEY][sent_before:])
