"""One log line per request, whatever the route and the outcome: a chat completion keeps its
``chat_completion`` line, a failure its ``request_failed`` line, images and videos say what was
made (model, count, account), every other request gets the front middleware's generic
``request`` line (method, path, status, duration, model when known), and no request gets two.
``/healthz`` and ``/metrics``, polled by probes, log theirs at debug level.

Each request is followed by a ``GET /healthz`` on the same connection: the server handles it
once the request before it is done, so every line of that request is written by then."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
import structlog
from aiohttp import web
from helpers import SCENARIO, ServerFactory, Stack, StubChat, media_stack, messages_for

from proxy.app import make_app
from proxy.config import Settings
from proxy.conversation import Conversation, Turn
from proxy.frontdoors.openai_chat import ChatStream
from proxy.metrics import MODEL_KEY
from proxy.relay import _SSEResponse, relay
from recorder.synthetic_media import BY_NAME, png

T2T = SCENARIO["t2t_answer"]
CHAT = {"model": "qwen3-max", "messages": messages_for(T2T.prompt)}
T2I = {"model": "qwen3-max-image", "prompt": BY_NAME["media_t2i"].prompt}
T2V = {"model": "qwen3-max", "prompt": BY_NAME["media_t2v"].prompt}
HI = [{"role": "user", "content": "hi"}]

Logs = list[dict[str, Any]]


@pytest.fixture
async def stack(aiohttp_server: ServerFactory) -> Stack:
    return await media_stack(aiohttp_server)


async def _logged(stack: Stack, method: str, path: str, **kw: Any) -> tuple[int, Logs]:
    """Send one request; its status and the lines logged while it was handled (the model list
    is read first, outside them), but the debug line of the ``/healthz`` that follows it."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as s:
        async with s.get(stack.url("/v1/models")) as r:  # the catalog, loaded outside
            assert r.status == 200
        with structlog.testing.capture_logs() as logs:
            async with s.request(method, stack.url(path), **kw) as r:
                status = r.status
                await r.read()
            async with s.get(stack.url("/healthz")) as r:  # the same connection: after it
                assert r.status == 200
    sync = logs.pop()
    assert (sync["event"], sync["path"], sync["log_level"]) == ("request", "/healthz", "debug")
    return status, logs


def _lines(logs: Logs) -> Logs:
    """The lines written at the default level (info) and above."""
    return [e for e in logs if e["log_level"] != "debug"]


def _form() -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("model", "qwen3-max-image-edit")
    form.add_field("prompt", BY_NAME["media_image_edit"].prompt)
    picture = png(24, 24, lambda x, y: (x * 10, 200, y * 10))
    form.add_field("image", picture, filename="square.png", content_type="image/png")
    return form


#: case -> (method, path, request keywords, status, the one line's event, fields it holds)
CASES: dict[str, tuple[str, str, dict[str, Any], int, str, dict[str, Any]]] = {
    "chat": ("POST", "/v1/chat/completions", {"json": CHAT}, 200, "chat_completion", {}),
    "chat_stream": (
        "POST",
        "/v1/chat/completions",
        {"json": {**CHAT, "stream": True}},
        200,
        "chat_completion",
        {"client_disconnected": None},
    ),
    "chat_failed": (  # the non-stream answer's line names the failure: no second line
        "POST",
        "/v1/chat/completions",
        {"json": {"model": "qwen3-max", "messages": messages_for(SCENARIO["empty_stream"].prompt)}},
        502,
        "chat_completion",
        {"failure": "upstream_empty"},
    ),
    "chat_stream_failed": (  # failed before the commit: an error answer
        "POST",
        "/v1/chat/completions",
        {
            "json": {
                "model": "qwen3-max",
                "stream": True,
                "messages": messages_for(SCENARIO["empty_stream"].prompt),
            }
        },
        502,
        "request_failed",
        {"code": "upstream_empty", "method": "POST"},
    ),
    "chat_bad_json": (
        "POST",
        "/v1/chat/completions",
        {"data": b"{", "headers": {"Content-Type": "application/json"}},
        400,
        "request_failed",
        {"path": "/v1/chat/completions"},
    ),
    "responses": (
        "POST",
        "/v1/responses",
        {"json": {"model": "qwen3-max", "input": T2T.prompt}},
        200,
        "chat_completion",
        {},
    ),
    "messages": (
        "POST",
        "/v1/messages",
        {"json": {"model": "qwen3-max", "max_tokens": 64, "messages": messages_for(T2T.prompt)}},
        200,
        "chat_completion",
        {},
    ),
    "count_tokens": (
        "POST",
        "/v1/messages/count_tokens",
        {"json": {"model": "qwen3-max", "messages": HI}},
        200,
        "request",
        {"method": "POST", "path": "/v1/messages/count_tokens", "status": 200},
    ),
    "models": (
        "GET",
        "/v1/models",
        {},
        200,
        "request",
        {"method": "GET", "path": "/v1/models", "status": 200},
    ),
    "model": ("GET", "/v1/models/qwen3-max", {}, 200, "request", {"status": 200}),
    "unknown_route": (
        "GET",
        "/no-such-route",
        {},
        404,
        "request_failed",
        {"status": 404, "code": "not_found", "path": "/no-such-route"},
    ),
    "wrong_method": (
        "PUT",
        "/v1/chat/completions",
        {},
        405,
        "request_failed",
        {"status": 405, "code": "method_not_allowed", "method": "PUT"},
    ),
    "stored_response_missing": (
        "GET",
        "/v1/responses/resp_nothing",
        {},
        404,
        "request_failed",
        {"status": 404},
    ),
    "admin_off": ("GET", "/admin/accounts", {}, 403, "request_failed", {"status": 403}),
    "images": (
        "POST",
        "/v1/images/generations",
        {"json": T2I},
        200,
        "images_generated",
        {"model": "qwen3-max", "chat_type": "t2i", "images": 1, "account": "anonymous"},
    ),
    "images_n2": (
        "POST",
        "/v1/images/generations",
        {"json": {**T2I, "n": 2}},
        200,
        "images_generated",
        {"images": 2, "account": "anonymous", "failure": None},
    ),
    "images_failed": (  # nothing made: the failure's line
        "POST",
        "/v1/images/generations",
        {"json": {**T2I, "prompt": BY_NAME["media_t2i_ratelimited"].prompt}},
        429,
        "request_failed",
        {"status": 429},
    ),
    "image_edit": (
        "POST",
        "/v1/images/edits",
        {"data": _form},
        200,
        "images_generated",
        {"chat_type": "image_edit", "images": 1},
    ),
    "video": (
        "POST",
        "/v1/videos/generations",
        {"json": T2V},
        200,
        "video_generated",
        {"model": "qwen3-max", "account": "anonymous", "failure": None},
    ),
    "video_failed": (  # the task failed after it started: one line, with the account
        "POST",
        "/v1/videos/generations",
        {"json": {**T2V, "prompt": BY_NAME["media_t2v_failed"].prompt}},
        502,
        "video_generated",
        {"account": "anonymous", "failure": "upstream_task_failed"},
    ),
    "video_chat_stream": (
        "POST",
        "/v1/chat/completions",
        {
            "json": {
                "model": "qwen3-max-video",
                "stream": True,
                "messages": messages_for(T2V["prompt"]),
            }
        },
        200,
        "video_generated",
        {"model": "qwen3-max"},
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
async def test_each_request_writes_exactly_one_line(stack: Stack, case: str) -> None:
    method, path, kw, want_status, event, fields = CASES[case]
    kw = {k: v() if callable(v) else v for k, v in kw.items()}
    status, logs = await _logged(stack, method, path, **kw)
    assert status == want_status
    lines = _lines(logs)
    assert [e["event"] for e in lines] == [event], logs
    (line,) = lines
    for key, value in fields.items():
        assert line.get(key) == value, (key, line)
    if event == "request":
        assert line["duration_ms"] >= 0 and line["log_level"] == "info"
    if event == "request_failed":
        assert line["status"] == status


@pytest.mark.parametrize("path", ["/healthz", "/metrics"])
async def test_probes_log_at_debug_level(stack: Stack, path: str) -> None:
    """Probes poll every few seconds: their line is a debug line, nothing at info level."""
    status, logs = await _logged(stack, "GET", path)
    assert status == 200
    assert _lines(logs) == []
    (line,) = [e for e in logs if e["event"] == "request"]
    assert (line["path"], line["status"], line["log_level"]) == (path, 200, "debug")


async def test_a_refused_key_is_one_line(aiohttp_server: ServerFactory) -> None:
    stack = await media_stack(aiohttp_server, api_keys=["sk-right-123456"])
    headers = {"Authorization": "Bearer sk-right-123456"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as s:
        with structlog.testing.capture_logs() as logs:
            async with s.get(stack.url("/v1/models")) as r:
                assert r.status == 401
            async with s.get(stack.url("/healthz"), headers=headers) as r:
                assert r.status == 200
    assert [(e["event"], e["status"]) for e in _lines(logs)] == [("request_failed", 401)]


async def test_a_cors_preflight_is_one_line(aiohttp_server: ServerFactory) -> None:
    """A preflight is answered before the front middleware: it logs its own line."""
    stack = await media_stack(aiohttp_server, cors_origins=["http://localhost:3000"])
    headers = {"Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST"}
    status, logs = await _logged(stack, "OPTIONS", "/v1/chat/completions", headers=headers)
    assert status == 204
    (line,) = _lines(logs)
    assert (line["event"], line["method"], line["status"]) == ("request", "OPTIONS", 204)


async def test_images_made_but_not_delivered_are_one_line(aiohttp_server: ServerFactory) -> None:
    """b64_json of an image the gateway cannot download (no CDN): the image was made, so the
    line says so (model, account) with the failure, and no ``request_failed`` line follows."""
    stack = await media_stack(aiohttp_server, media_base_url="http://127.0.0.1:9")
    status, logs = await _logged(
        stack, "POST", "/v1/images/generations", json={**T2I, "response_format": "b64_json"}
    )
    assert status == 502
    (line,) = _lines(logs)
    assert (line["event"], line["images"], line["account"]) == ("images_generated", 1, "anonymous")
    assert line["failure"] and line["message"]


async def test_a_client_gone_after_the_commit_is_one_line(
    aiohttp_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stream whose client is gone when the relay writes (after the commit): the answer's
    ``chat_completion`` line says so; no ``client_disconnected`` line besides."""
    original = _SSEResponse.write

    async def write(self: _SSEResponse, data: bytes) -> None:
        if b"there" in data:
            raise ConnectionError("Connection lost")
        await original(self, data)

    monkeypatch.setattr(_SSEResponse, "write", write)
    app = make_app(Settings(upstream_url="http://127.0.0.1:9"))
    done = asyncio.Event()
    frames = [
        {"phase": "answer", "content": "Hi", "status": "typing"},
        {"phase": "answer", "content": " there", "status": "typing"},
        {"phase": "answer", "content": "", "status": "finished"},
    ]
    chunks = [f"data: {json.dumps({'choices': [{'delta': f}]})}\n\n".encode() for f in frames]

    async def handler(request: web.Request) -> web.StreamResponse:
        conv = Conversation("m", [Turn("user", "hi")], stream=True)
        try:
            return await relay(request, conv, StubChat(chunks), ChatStream(conv))  # type: ignore[arg-type]
        finally:
            done.set()  # the front middleware's bookkeeping follows without a wait

    app.router.add_post("/stub", handler)
    client = await aiohttp_client(app)
    with structlog.testing.capture_logs() as logs:
        resp = await client.post("/stub")
        assert resp.status == 200
        await done.wait()  # (the front middleware is done in the same step)
        resp.close()
    lines = _lines(logs)
    assert [e["event"] for e in lines] == ["chat_completion"], logs
    assert lines[0]["client_disconnected"] is True


async def test_a_client_gone_before_the_answer_is_one_line_with_the_model(
    aiohttp_client: Any,
) -> None:
    """A client that leaves while its answer is being made (nothing sent yet): one
    ``client_disconnected`` line, 499, with the model the handler had resolved."""
    app = make_app(Settings(upstream_url="http://127.0.0.1:9"))
    started, done = asyncio.Event(), asyncio.Event()

    async def handler(request: web.Request) -> web.StreamResponse:
        request[MODEL_KEY] = "qwen3-max"
        started.set()
        try:
            await asyncio.Event().wait()  # the site never answers
        finally:
            done.set()  # the front middleware's bookkeeping follows without a wait
        raise AssertionError("not reached")

    app.router.add_post("/stub", handler)
    client = await aiohttp_client(app)
    with structlog.testing.capture_logs() as logs:
        _reader, writer = await asyncio.open_connection(client.host, client.port)
        writer.write(b"POST /stub HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        await started.wait()
        writer.close()
        await writer.wait_closed()
        await done.wait()
    lines = _lines(logs)
    assert [e["event"] for e in lines] == ["client_disconnected"], logs
    assert (lines[0]["status"], lines[0]["model"], lines[0]["path"]) == (499, "qwen3-max", "/stub")
