"""The one relay, driven with a stub upstream turn: keep-alives while idle, reasoning per API."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp import web
from helpers import StubChat, sse_data

from proxy import relay as relay_module
from proxy.app import make_app
from proxy.config import Settings
from proxy.conversation import Conversation, Turn
from proxy.frontdoors.openai_chat import ChatStream
from proxy.relay import _SSEResponse, relay


def _frame(obj: Any) -> bytes:
    return f"data: {json.dumps(obj)}\n\n".encode()


def _delta(phase: str, content: str, status: str = "typing") -> bytes:
    delta = {"phase": phase, "content": content, "status": status}
    return _frame({"choices": [{"delta": delta}], "usage": {"input_tokens": 1, "output_tokens": 1}})


INFO = _frame({"response.info": {"action": "keep_alive"}})


class _FieldStream(ChatStream):
    reasoning_mode = "field"


async def _serve(aiohttp_client: Any, chunks: list[bytes], renderer: type, **kw: Any) -> bytes:
    app = make_app(Settings(upstream_url="http://127.0.0.1:9", reasoning="think_tags"))

    async def handler(request: web.Request) -> web.StreamResponse:
        conv = Conversation("m", [Turn("user", "hi")], stream=True)
        return await relay(request, conv, StubChat(chunks), renderer(conv), **kw)  # type: ignore[arg-type]

    app.router.add_post("/stub", handler)
    client = await aiohttp_client(app)
    resp = await client.post("/stub")
    assert resp.status == 200
    return await resp.read()


async def test_idle_committed_stream_gets_keepalives(aiohttp_client: Any) -> None:
    chunks = [
        _delta("answer", "Hi"),
        INFO,
        INFO,
        _delta("answer", "!"),
        _delta("answer", "", "finished"),
    ]
    raw = await _serve(aiohttp_client, chunks, ChatStream, keepalive_s=0)
    text = raw.decode()
    assert text.count(": keep-alive\n\n") == 2
    assert text.index('"Hi"') < text.index(": keep-alive") < text.index('"!"')
    assert raw.endswith(b"data: [DONE]\n\n")
    raw = await _serve(aiohttp_client, chunks, ChatStream, keepalive_s=3600)
    assert b"keep-alive" not in raw


async def test_renderer_reasoning_mode_overrides_the_setting(aiohttp_client: Any) -> None:
    """reasoning = think_tags puts reasoning inline for chat clients; a renderer that asks for
    "field" (Anthropic, Responses) gets it as reasoning events."""
    chunks = [_delta("think", "hmm"), _delta("answer", "Yes"), _delta("answer", "", "finished")]
    inline = [
        json.loads(d) for d in sse_data(await _serve(aiohttp_client, chunks, ChatStream))[:-1]
    ]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in inline).startswith(
        "<think>"
    )
    field = [
        json.loads(d) for d in sse_data(await _serve(aiohttp_client, chunks, _FieldStream))[:-1]
    ]
    deltas = [c["choices"][0]["delta"] for c in field]
    assert "".join(d.get("reasoning_content") or "" for d in deltas) == "hmm"
    assert "".join(d.get("content") or "" for d in deltas) == "Yes"


CALLS: list[str] = []


class _OrderedStream(ChatStream):
    """Records (in ``CALLS``) the order the relay asks for the head and the events."""

    def head(self) -> bytes:
        CALLS.append("head")
        return super().head()

    def render(self, events: Any, usage: Any) -> bytes:
        CALLS.append("render")
        return super().render(events, usage)


async def test_the_head_is_rendered_before_the_first_events(aiohttp_client: Any) -> None:
    """Renderers that number their events (Responses' sequence_number) get the head first."""
    CALLS.clear()
    chunks = [_delta("answer", "Hi"), _delta("answer", "", "finished")]
    await _serve(aiohttp_client, chunks, _OrderedStream)
    assert CALLS[:2] == ["head", "render"]


async def test_a_connection_lost_while_writing_is_a_client_that_left(
    aiohttp_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write that fails with a plain ``ConnectionError`` (what aiohttp's drain raises once
    the peer is gone, not only ``ConnectionResetError``) ends the relay as a client that left:
    no exception reaches the app (which would log it as an unhandled error with a traceback)."""
    original = _SSEResponse.write
    writes: list[bytes] = []

    async def write(self: _SSEResponse, data: bytes) -> None:
        writes.append(bytes(data))
        if len(writes) > 1:
            raise ConnectionError("Connection lost")
        await original(self, data)

    async def write_eof(self: _SSEResponse, data: bytes = b"") -> None:
        raise ConnectionError("Connection lost")

    monkeypatch.setattr(_SSEResponse, "write", write)
    monkeypatch.setattr(_SSEResponse, "write_eof", write_eof)
    outcome: list[str] = []
    app = make_app(Settings(upstream_url="http://127.0.0.1:9"))
    chunks = [_delta("answer", "Hi"), _delta("answer", " there"), _delta("answer", "", "finished")]

    async def handler(request: web.Request) -> web.StreamResponse:
        conv = Conversation("m", [Turn("user", "hi")], stream=True)
        try:
            return await relay(request, conv, StubChat(chunks), ChatStream(conv))  # type: ignore[arg-type]
        except BaseException as exc:
            outcome.append(type(exc).__name__)
            raise
        finally:
            outcome.append("returned")

    app.router.add_post("/stub", handler)
    client = await aiohttp_client(app)
    resp = await client.post("/stub")
    assert resp.status == 200
    assert b'"Hi"' in await resp.content.readany()
    resp.close()
    assert outcome == ["returned"]
    assert len(writes) == 2


@pytest.mark.parametrize("committed", [False, True])
async def test_an_upstream_event_that_never_ends_fails_the_stream(
    aiohttp_client: Any, monkeypatch: pytest.MonkeyPatch, committed: bool
) -> None:
    """Bytes that never finish an SSE event are not held without bound: past the limit the
    answer fails (``upstream_protocol_error``): a 502 before anything was sent, an error
    event and no ``[DONE]`` after."""
    monkeypatch.setattr(relay_module, "MAX_EVENT_BYTES", 4096)
    endless = [b"data: {" + b"x" * 1000 for _ in range(10)]  # no line end, ever
    chunks = ([_delta("answer", "Hi")] if committed else []) + endless
    app = make_app(Settings(upstream_url="http://127.0.0.1:9"))

    async def handler(request: web.Request) -> web.StreamResponse:
        conv = Conversation("m", [Turn("user", "hi")], stream=True)
        return await relay(request, conv, StubChat(chunks), ChatStream(conv))  # type: ignore[arg-type]

    app.router.add_post("/stub", handler)
    client = await aiohttp_client(app)
    resp = await client.post("/stub")
    raw = await resp.read()
    if not committed:
        assert resp.status == 502
        assert json.loads(raw)["error"]["code"] == "upstream_protocol_error"
    else:
        assert resp.status == 200 and b'"Hi"' in raw
        assert b"upstream_protocol_error" in raw and b"[DONE]" not in raw
    assert b"larger than 0.00390625 MiB" in raw  # the limit, as set
