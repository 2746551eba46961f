"""The front-door plumbing: request -> Conversation, error rendering per API, ToolCall shapes."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp import web
from pydantic import SecretStr

from proxy.app import make_app
from proxy.config import Settings
from proxy.conversation import Conversation, ToolChoice, ToolSpec
from proxy.errors import (
    ClientRequestError,
    ProxyError,
    UnsupportedContentError,
    UpstreamRateLimitedError,
)
from proxy.frontdoors import FrontDoor
from proxy.frontdoors.anthropic import parse_messages
from proxy.frontdoors.openai_chat import ChatBody, ChatStream, parse_chat
from proxy.frontdoors.responses import build_conversation, parse_request
from proxy.qwen.translate import Finish, Text, ToolCall, Usage
from proxy.state import FRONT_DOOR, FRONT_DOORS
from proxy.tools.prompt import build_prompt


def _fake_render(exc: ProxyError) -> tuple[int, dict[str, str], dict[str, Any]]:
    return exc.http_status(), {"x-door": "fake"}, {"fake_error": exc.error_code()}


FAKE = FrontDoor("fake", _fake_render)


JSON = {"Content-Type": "application/json"}


def _app(**settings: Any) -> web.Application:
    app = make_app(Settings(upstream_url="http://127.0.0.1:9", **settings))

    async def by_handler(request: web.Request) -> web.Response:
        request[FRONT_DOOR] = FAKE
        raise UpstreamRateLimitedError("slow down", retry_after_s=7)

    async def by_path(request: web.Request) -> web.Response:
        raise ClientRequestError("bad", param="x")

    app.router.add_post("/v1/fake", by_handler)
    app.router.add_post("/v1/fakepath", by_path)
    app[FRONT_DOORS]["/v1/fakepath"] = FAKE
    return app


async def test_error_rendered_by_the_handlers_front_door(aiohttp_client: Any) -> None:
    """A handler that sets FRONT_DOOR gets its failures in that front door's shape."""
    client = await aiohttp_client(_app())
    resp = await client.post("/v1/fake", data=b"{}", headers=JSON)
    assert resp.status == 429
    assert resp.headers["x-door"] == "fake"
    assert await resp.json() == {"fake_error": "rate_limit_exceeded"}


async def test_error_rendered_by_path_before_the_handler(aiohttp_client: Any) -> None:
    """A failure before the handler runs (API key) uses the front door registered for the path;
    other paths keep OpenAI error objects."""
    client = await aiohttp_client(_app(api_keys=[SecretStr("k")]))
    resp = await client.post("/v1/fakepath", data=b"{}")
    assert resp.status == 401
    assert await resp.json() == {"fake_error": "invalid_api_key"}
    resp = await client.post(
        "/v1/fakepath", data=b"{}", headers={"Authorization": "Bearer k", **JSON}
    )
    assert resp.status == 400 and resp.headers["x-door"] == "fake"
    resp = await client.post("/v1/chat/completions", data=b"{}")
    assert resp.status == 401
    assert (await resp.json())["error"]["code"] == "invalid_api_key"
    resp = await client.get("/v1/nowhere", headers={"Authorization": "Bearer k"})
    assert resp.status == 404
    assert (await resp.json())["error"]["code"] == "not_found"


def test_openai_chat_request_becomes_a_conversation() -> None:
    """Roles are normalised (developer -> system, function -> tool); options are carried."""
    conv = parse_chat(
        json.dumps(
            {
                "model": "qwen3-max",
                "messages": [
                    {"role": "developer", "content": "be brief"},
                    {"role": "user", "content": [{"type": "text", "text": "hi"}]},
                    {"role": "function", "name": "f", "content": "42"},
                ],
                "stream": True,
                "stream_options": {"include_usage": True},
                "enable_thinking": True,
                "size": "16:9",
            }
        ).encode()
    )
    assert [t.role for t in conv.turns] == ["system", "user", "tool"]
    assert conv.turns[1].content == [{"type": "text", "text": "hi"}]
    assert conv.turns[2].name == "f"
    assert (conv.stream, conv.include_usage, conv.thinking, conv.size) == (
        True,
        True,
        True,
        "16:9",
    )
    assert not conv.tools_active


def test_tools_active_needs_tools_and_a_choice_other_than_none() -> None:
    tools = (ToolSpec("f"),)
    assert Conversation("m", [], tools=tools).tools_active
    assert not Conversation("m", [], tools=tools, tool_choice=ToolChoice("none")).tools_active
    assert not Conversation("m", []).tools_active


def _chunks(raw: bytes) -> list[Any]:
    return [
        json.loads(line[6:])
        for line in raw.decode().split("\n")
        if line.startswith("data: ") and line != "data: [DONE]"
    ]


def test_stream_renders_a_tool_call_as_openai_does() -> None:
    """First delta: index, id, type, name, empty arguments; then the arguments; tool_calls."""
    r = ChatStream(Conversation("m", []), completion_id="chatcmpl-1")
    call = ToolCall(0, "call_" + "a" * 24, "read_file", '{"path": "a.py"}')
    raw = r.head() + r.render([Text("content", "Reading."), call, Finish("tool_calls")], None)
    assert raw.endswith(b"data: [DONE]\n\n")
    chunks = _chunks(raw)
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert deltas[1] == {"content": "Reading."}
    assert deltas[2] == {
        "tool_calls": [
            {
                "index": 0,
                "id": call.id,
                "type": "function",
                "function": {"name": "read_file", "arguments": ""},
            }
        ]
    }
    assert deltas[3] == {"tool_calls": [{"index": 0, "function": {"arguments": call.arguments}}]}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert {c["id"] for c in chunks} == {"chatcmpl-1"}


@pytest.mark.parametrize("preface", ["", "Let me check."])
def test_body_carries_tool_calls_with_null_or_preface_content(preface: str) -> None:
    body = ChatBody(Conversation("m", []))
    if preface:
        body.add(Text("content", preface))
    body.add(ToolCall(0, "call_1", "f", "{}"))
    body.add(ToolCall(1, "call_2", "g", '{"a": 1}'))
    body.add(Finish("tool_calls"))
    out = body.body(Usage(3, 4))
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == (preface or None)
    assert [c["id"] for c in choice["message"]["tool_calls"]] == ["call_1", "call_2"]
    assert choice["message"]["tool_calls"][1]["function"] == {"name": "g", "arguments": '{"a": 1}'}
    assert out["usage"]["total_tokens"] == 7


async def test_405_on_a_registered_path_uses_its_front_door(aiohttp_client: Any) -> None:
    client = await aiohttp_client(_app())
    resp = await client.get("/v1/fakepath")
    assert resp.status == 405
    assert await resp.json() == {"fake_error": "method_not_allowed"}
    resp = await client.get("/v1/fakepath/sub")
    assert resp.status == 404 and await resp.json() == {"fake_error": "not_found"}


def _chat_conv(body: dict[str, Any]) -> Conversation:
    return parse_chat(json.dumps({"model": "m", **body}).encode())


def _responses_conv(body: dict[str, Any]) -> Conversation:
    return build_conversation(parse_request({"model": "m", **body}))


def _messages_conv(body: dict[str, Any]) -> Conversation:
    return parse_messages({"model": "m", "max_tokens": 9, **body})


#: prompts with nothing but whitespace, per API, and the ``param`` of the 400 refusing them:
#: the field of the messages (``input`` on the Responses API, which has no ``messages``), or
#: the one message's content when a single message holds the prompt
BLANK_PROMPTS: list[tuple[str, Any, dict[str, Any], str]] = [
    ("chat, a space", _chat_conv, {"messages": [{"role": "user", "content": " "}]}, "messages"),
    (
        "chat, tabs and newlines, validated path",
        _chat_conv,
        {"messages": [{"role": "user", "content": "\t\n "}], "seed": 1},
        "messages",
    ),
    ("responses, input a space", _responses_conv, {"input": " "}, "input"),
    ("responses, input tabs and newlines", _responses_conv, {"input": "\t\n "}, "input"),
    (
        "responses, a message",
        _responses_conv,
        {"input": [{"role": "user", "content": " "}]},
        "input[0].content",
    ),
    (
        "responses, a message's text part",
        _responses_conv,
        {"input": [{"role": "user", "content": [{"type": "input_text", "text": "  "}]}]},
        "input[0].content",
    ),
    (
        "responses, a bare string item",
        _responses_conv,
        {"input": ["\n"]},
        "input[0]",
    ),
    (
        "messages, a space",
        _messages_conv,
        {"messages": [{"role": "user", "content": " "}]},
        "messages.0.content",
    ),
]


@pytest.mark.parametrize(
    ("name", "conv_of", "body", "param"), BLANK_PROMPTS, ids=[b[0] for b in BLANK_PROMPTS]
)
def test_a_prompt_of_only_whitespace_is_refused_naming_its_field(
    name: str, conv_of: Any, body: dict[str, Any], param: str
) -> None:
    """The site answers a prompt with no text with nothing, so the gateway refuses it (400);
    the error names a field of the request's own API."""
    with pytest.raises(UnsupportedContentError) as info:
        build_prompt(conv_of(body))
    assert info.value.param == param, name
    assert "whitespace" in info.value.message
