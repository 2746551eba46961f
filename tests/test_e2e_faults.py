"""End to end under network faults: re-chunked upstream bodies change nothing, cut ones never lie.

The replay server's faults (``split_utf8``, ``bytewise``, ``coalesce``) only move chunk
boundaries, so every success scenario must come out byte-identical to the fault-free run, streamed
or not. ``drop_after:N`` cuts every body the replay serves after ``N`` bytes and drops the
connection: the proxy must then send a prefix of the answer (never U+FFFD) followed by an error
event, or a 502 before anything was sent, and never a clean-looking 200.

``drop_after`` also cuts the model list and the ``chats/new`` answer, so small ``N`` fail before
the completion starts. To cut *only* the completion body at every offset, the sweep tests put a
small forwarding server between the proxy and a fault-free replay server that truncates the
completion answer itself.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from helpers import (
    COMPLETIONS_PATH,
    SCENARIO,
    SUCCESS_SCENARIOS,
    Outcome,
    ServerFactory,
    Stack,
    acreate,
    astream,
    cassette,
    cassettes,
    completion_interaction_body,
    sse_data,
    start_stack,
)

from proxy.app import make_app
from proxy.config import Settings

FAULTS = ("split_utf8", "bytewise", "coalesce")


async def _sdk(stack: Stack, mode: str, name: str) -> Outcome:
    sc = SCENARIO[name]
    async with stack.async_client() as client:
        if mode == "stream":
            return await astream(client, sc.openai_model, sc.prompt)
        return await acreate(client, sc.openai_model, sc.prompt)


@pytest.mark.parametrize("mode", ["stream", "create"])
@pytest.mark.parametrize("name", SUCCESS_SCENARIOS)
@pytest.mark.parametrize("fault", FAULTS)
async def test_rechunking_fault_changes_nothing(
    aiohttp_server: ServerFactory, fault: str, name: str, mode: str
) -> None:
    """Under split_utf8, bytewise and coalesce the answer equals the fault-free run exactly."""
    clean = await _sdk(await start_stack(aiohttp_server), mode, name)
    faulted = await _sdk(await start_stack(aiohttp_server, fault=fault), mode, name)
    sc = SCENARIO[name]
    assert faulted.error is None
    assert (faulted.content, faulted.reasoning, faulted.sources) == (
        clean.content,
        clean.reasoning,
        clean.sources,
    )
    assert faulted.content == sc.expected_content
    assert faulted.reasoning == sc.expected_reasoning
    assert faulted.sources == list(sc.expected_sources)
    if mode == "stream":
        finishes = [c.choices[0].finish_reason for c in faulted.chunks if c.choices]
        assert [f for f in finishes if f] == ["stop"]


@pytest.mark.parametrize("name", SUCCESS_SCENARIOS)
@pytest.mark.parametrize("fault", FAULTS)
async def test_rechunking_fault_raw_stream_is_clean(
    aiohttp_server: ServerFactory, fault: str, name: str
) -> None:
    """Under a re-chunking fault the raw SSE body has no U+FFFD and ends with `data: [DONE]`."""
    stack = await start_stack(aiohttp_server, fault=fault)
    status, raw = await _post(stack.url("/v1/chat/completions"), SCENARIO[name], stream=True)
    assert status == 200
    text = raw.decode("utf-8")
    assert "\ufffd" not in text
    assert raw.endswith(b"data: [DONE]\n\n")
    assert _stream_content(raw) == SCENARIO[name].expected_content


# -- drop_after ------------------------------------------------------------------------------------


async def _post(url: str, sc: Any, *, stream: bool) -> tuple[int, bytes]:
    body = {
        "model": sc.openai_model,
        "messages": [{"role": "user", "content": sc.prompt}],
        "stream": stream,
    }
    async with aiohttp.ClientSession() as session, session.post(url, json=body) as resp:
        return resp.status, await resp.read()


def _stream_content(raw: bytes) -> str:
    events = [json.loads(e) for e in sse_data(raw) if e != "[DONE]"]
    return "".join(
        e["choices"][0]["delta"].get("content") or "" for e in events if e.get("choices")
    )


def _answer_in_prefix(body: bytes, n: int) -> tuple[str, bool]:
    """The answer text of the complete SSE events in ``body[:n]``, and whether it finished."""
    prefix = body[:n]
    complete = prefix[: prefix.rfind(b"\n\n") + 2] if b"\n\n" in prefix else b""
    text = ""
    finished = False
    for line in complete.decode("utf-8").split("\n"):
        if not line.startswith("data: "):
            continue
        frame = json.loads(line[len("data: ") :])
        for choice in frame.get("choices") or []:
            delta = choice.get("delta") or {}
            if delta.get("phase") in ("answer", None):
                text += delta.get("content") or ""
                finished = finished or delta.get("status") == "finished"
    return text, finished


def _check_cut(status: int, raw: bytes, *, stream: bool, sent: str, finished: bool) -> None:
    """Assert the proxy's answer to a completion cut after the answer text ``sent``."""
    sc = SCENARIO["chinese_emoji"]
    assert sc.expected_content is not None
    text = raw.decode("utf-8")
    assert "\ufffd" not in text
    assert sc.expected_content.startswith(sent)
    if finished:
        assert status == 200
        if stream:
            assert raw.endswith(b"data: [DONE]\n\n")
            assert _stream_content(raw) == sc.expected_content
        else:
            assert json.loads(raw)["choices"][0]["message"]["content"] == sc.expected_content
        return
    if stream and sent:
        assert status == 200
        assert b"[DONE]" not in raw
        events = [json.loads(e) for e in sse_data(raw)]
        assert events[-1]["error"]["code"] == "upstream_truncated"
        assert _stream_content(raw) == sent
        return
    assert status == 502
    assert json.loads(raw)["error"]["code"] == "upstream_truncated"


MODELS_LIST_BYTES = len(
    next(i for c in cassettes() for i in c.interactions if "/api/models" in i.uri).body_bytes()
)
CHINESE_BODY = completion_interaction_body("chinese_emoji").encode("utf-8")


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize(
    "n",
    [
        0,
        60,
        MODELS_LIST_BYTES - 1,
        MODELS_LIST_BYTES,
        3000,
        3010,
        3400,
        len(CHINESE_BODY) - 1,
        len(CHINESE_BODY),
        len(CHINESE_BODY) + 1000,
    ],
)
async def test_drop_after_full_stack(aiohttp_server: ServerFactory, n: int, stream: bool) -> None:
    """drop_after:N on every body gives a 502, or a clean prefix then an error, never junk."""
    stack = await start_stack(aiohttp_server, fault=f"drop_after:{n}")
    status, raw = await _post(
        stack.url("/v1/chat/completions"), SCENARIO["chinese_emoji"], stream=stream
    )
    assert "\ufffd" not in raw.decode("utf-8")
    if n < MODELS_LIST_BYTES:
        # The model list (fetched first) is cut: the proxy cannot even start the chat.
        assert stack.upstream(COMPLETIONS_PATH) == []
    if not stack.upstream(COMPLETIONS_PATH):
        # An earlier step broke: the cut model list, or (racy) the proxy reusing a keep-alive
        # connection the replay server dropped after a complete models/chats-new answer.
        assert status == 502
        error = json.loads(raw)["error"]
        assert error["code"] == "upstream_unavailable"
        upstream = str(stack.replay.make_url("")).rstrip("/")
        assert f"the upstream at {upstream}" in error["message"]  # the configured one, by name
        return
    sent, finished = _answer_in_prefix(CHINESE_BODY, n)
    _check_cut(status, raw, stream=stream, sent=sent, finished=finished)


def _cutting_forwarder(upstream: str, cut: list[int]) -> web.Application:
    """Forward everything to ``upstream``; cut the completion answer after ``cut[0]`` bytes."""

    async def handle(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {
            k: v
            for k, v in request.headers.items()
            if k.lower() not in ("host", "content-length", "transfer-encoding")
        }
        async with (
            aiohttp.ClientSession(auto_decompress=False) as session,
            session.request(
                request.method, upstream + request.path_qs, data=body, headers=headers
            ) as up,
        ):
            resp = web.StreamResponse(status=up.status)
            resp.content_type = up.content_type
            await resp.prepare(request)
            left = cut[0] if request.path == COMPLETIONS_PATH else None
            async for chunk in up.content.iter_any():
                if left is not None:
                    chunk = chunk[:left]
                    left -= len(chunk)
                if chunk:
                    await resp.write(chunk)
                if left == 0:
                    assert request.transport is not None
                    request.transport.close()
                    return resp
            await resp.write_eof()
            return resp

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


@pytest.fixture
async def cut_stack(aiohttp_server: ServerFactory) -> AsyncIterator[tuple[str, list[int]]]:
    """A proxy whose upstream cuts only the completion body; yields (proxy URL, [cut bytes])."""
    clean = await start_stack(aiohttp_server)
    cut = [0]
    upstream = str(clean.replay.make_url("")).rstrip("/")
    forwarder = await aiohttp_server(_cutting_forwarder(upstream, cut))
    proxy = await aiohttp_server(
        make_app(Settings(upstream_url=str(forwarder.make_url("")).rstrip("/")))
    )
    yield str(proxy.make_url("/v1/chat/completions")), cut


def _sweep_points() -> list[int]:
    """Offsets around every event boundary and chunk boundary, plus a regular stride."""
    inter = next(i for i in cassette("chinese_emoji").interactions if COMPLETIONS_PATH in i.uri)
    points = set(range(1, len(CHINESE_BODY), 97))
    pos = 0
    for _, chunk in inter.iter_chunks():
        pos += len(chunk)
        points.update({pos - 1, pos, pos + 1})
    start = 0
    while (i := CHINESE_BODY.find(b"\n\n", start)) >= 0:
        points.update({i, i + 1, i + 2, i + 3})
        start = i + 2
    for ch in ("你", "😊", "🎉"):  # inside multi-byte characters
        i = CHINESE_BODY.find(ch.encode())
        points.update({i + 1, i + 2, i + 3})
    return sorted(p for p in points if 1 <= p < len(CHINESE_BODY))


@pytest.mark.parametrize("stream", [True, False])
async def test_completion_cut_at_every_boundary(
    cut_stack: tuple[str, list[int]], stream: bool
) -> None:
    """A completion cut at any offset gives the complete events' text then an error, or a 502."""
    url, cut = cut_stack
    seen_502 = seen_partial = False
    for n in _sweep_points():
        cut[0] = n
        status, raw = await _post(url, SCENARIO["chinese_emoji"], stream=stream)
        sent, finished = _answer_in_prefix(CHINESE_BODY, n)
        try:
            _check_cut(status, raw, stream=stream, sent=sent, finished=finished)
        except AssertionError as exc:
            raise AssertionError(f"cut after {n} bytes: {status} {raw[-400:]!r}") from exc
        seen_502 |= status == 502
        seen_partial |= status == 200 and bool(sent) and not finished
    assert seen_502
    assert seen_partial is stream


async def test_an_oversized_json_answer_is_refused_not_held(
    aiohttp_server: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A JSON answer (here ``chats/new``) larger than the limit is a 502
    ``upstream_protocol_error``: read up to the limit, never held whole."""
    from proxy.qwen import client as qwen_client

    monkeypatch.setattr(qwen_client, "JSON_BODY_LIMIT", 4096)

    async def models(_: web.Request) -> web.Response:
        return web.json_response({"data": [{"id": "qwen3-max"}]})

    async def new_chat(_: web.Request) -> web.Response:
        return web.json_response({"success": True, "data": {"id": "c1", "pad": "x" * 100_000}})

    site = web.Application()
    site.router.add_get("/api/models", models)
    site.router.add_post("/api/v2/chats/new", new_chat)
    upstream = await aiohttp_server(site)
    proxy = await aiohttp_server(
        make_app(Settings(upstream_url=f"http://127.0.0.1:{upstream.port}"))
    )
    async with aiohttp.ClientSession() as s:
        body = {"model": "qwen3-max", "messages": [{"role": "user", "content": "hi"}]}
        async with s.post(proxy.make_url("/v1/chat/completions"), json=body) as r:
            assert r.status == 502
            error = (await r.json())["error"]
    assert error["code"] == "upstream_protocol_error"
    assert "/api/v2/chats/new" in error["message"] and "MiB of JSON" in error["message"]
