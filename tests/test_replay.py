"""Tests for recorder.matching and the replay server in recorder.replay."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from click.testing import CliRunner

from recorder.cassette import Cassette, Interaction, Provenance
from recorder.cli import main
from recorder.matching import Hit, Index, Miss, fingerprint
from recorder.replay import (
    REQUESTS_KEY,
    Bytewise,
    Coalesce,
    DropAfter,
    Fault,
    SplitUtf8,
    apply_fault,
    make_replay_app,
)

ClientFactory = Callable[[web.Application], Awaitable[TestClient[web.Request, web.Application]]]

BASE = "https://chat.qwen.ai"
COMPLETIONS = f"{BASE}/api/v2/chat/completions?chat_id=abc"
SSE_EVENTS = [
    b'data: {"response.created": {"chat_id": "abc"}}\n\n',
    'data: {"choices": [{"delta": {"content": "你好", "phase": "answer"}}]}\n\n'.encode(),
    b'data: {"choices": [{"delta": {"content": "", "status": "finished"}}]}\n\n',
]


def completion_body(text: str = "hi", model: str = "qwen3-max", thinking: bool = False) -> str:
    """A docs/protocol.md 4.1 style completion request body."""
    return json.dumps(
        {
            "stream": True,
            "chat_id": "abc",
            "model": model,
            "timestamp": 1761490229,
            "messages": [
                {
                    "fid": "f1",
                    "role": "user",
                    "content": text,
                    "chat_type": "t2t",
                    "feature_config": {"thinking_enabled": thinking, "output_schema": "phase"},
                }
            ],
        }
    )


def streamed(
    text: str = "hi", *, end: str = "eof", error: str | None = None, step: float = 0.0
) -> Interaction:
    """A streamed completion interaction whose second event is split inside '你'."""
    raw = b"".join(SSE_EVENTS)
    cut = raw.index("你".encode()) + 1
    pieces = [(0.0, raw[:cut]), (step, raw[cut:-20]), (2 * step, raw[-20:])]
    return Interaction.streamed(
        method="POST",
        uri=COMPLETIONS,
        request_headers={"Content-Type": ["application/json"]},
        request_body=completion_body(text),
        pieces=pieces,
        end=end,  # type: ignore[arg-type]
        error=error,
        t_headers_s=step,
    )


def plain(path: str = "/api/v2/chats/new", chat_type: str = "t2t") -> Interaction:
    """A non-streamed JSON interaction."""
    return Interaction(
        method="POST",
        uri=BASE + path,
        request_headers={},
        request_body=json.dumps({"chat_type": chat_type, "timestamp": 1}),
        status=200,
        reason="OK",
        response_headers={
            "Content-Type": ["application/json; charset=utf-8"],
            "Content-Length": ["999"],
            "X-Multi": ["a", "b"],
        },
        response_body='{"success": true, "data": {"id": "chat-1"}} ',
    )


def cassette(name: str, *interactions: Interaction) -> Cassette:
    """A captured cassette holding ``interactions``."""
    return Cassette(
        name=name,
        description="test",
        provenance=Provenance("captured", "2026-11-22", "tests", "0"),
        interactions=list(interactions),
    )


# --- matching ---------------------------------------------------------------------------------


def test_fingerprint_of_a_completion() -> None:
    """A completion fingerprint has model, chat_type, thinking flag and text, not ids."""
    fp = fingerprint("post", COMPLETIONS, completion_body("hello").encode())
    assert fp == {
        "method": "POST",
        "path": "/api/v2/chat/completions",
        "model": "qwen3-max",
        "chat_type": "t2t",
        "thinking_enabled": False,
        "text": "hello",
    }


def test_fingerprint_list_content_and_defaults() -> None:
    """List content concatenates its text parts; a missing thinking flag is None."""
    body = {
        "model": "m",
        "messages": [
            {
                "chat_type": "t2t",
                "content": [
                    {"type": "text", "text": "a"},
                    {"type": "image", "image": "x"},
                    {"type": "text", "text": "b"},
                ],
            }
        ],
    }
    fp = fingerprint("POST", "/api/v2/chat/completions/", json.dumps(body))
    assert fp["text"] == "ab"
    assert fp["thinking_enabled"] is None
    assert fp["path"] == "/api/v2/chat/completions"


def test_fingerprint_chats_new_and_other_bodies() -> None:
    """chats/new adds chat_type; non-JSON bodies and other endpoints add nothing."""
    assert fingerprint("POST", "/api/v2/chats/new", b'{"chat_type": "t2i"}')["chat_type"] == "t2i"
    assert fingerprint("POST", "/api/v2/chat/completions", b"\xff not json") == {
        "method": "POST",
        "path": "/api/v2/chat/completions",
    }
    assert fingerprint("GET", "https://chat.qwen.ai/api/models?x=1", None) == {
        "method": "GET",
        "path": "/api/models",
    }
    assert fingerprint("GET", "/", None)["path"] == "/"


def test_index_hit_takes_first_in_load_order() -> None:
    """Several matching interactions: the first cassette in load order answers."""
    first = cassette("first", plain())
    second = cassette("second", plain())
    hit = Index([first, second]).find(
        fingerprint("POST", "/api/v2/chats/new/", b'{"chat_type":"t2t"}')
    )
    assert isinstance(hit, Hit)
    assert hit.cassette is first
    assert hit.interaction_index == 0


def test_index_miss_names_closest_on_same_path() -> None:
    """A miss names the same-path interaction with the fewest differing fields."""
    index = Index([cassette("a", streamed("one")), cassette("b", streamed("two"))])
    body = completion_body("two").replace("qwen3-max", "qwen3.6-plus")
    miss = index.find(fingerprint("POST", COMPLETIONS, body))
    assert isinstance(miss, Miss)
    assert miss.closest is not None
    assert miss.closest.cassette == "b"
    assert miss.differs == [("model", "qwen3-max", "qwen3.6-plus")]
    assert "cassette 'b' interaction 0" in miss.message()
    assert "model (recorded 'qwen3-max', received 'qwen3.6-plus')" in miss.message()


def test_index_miss_falls_back_to_other_paths_and_handles_empty() -> None:
    """Without a same-path candidate the overall nearest is named; an empty index has none."""
    index = Index([cassette("a", plain()), cassette("b", plain("/api/v2/chats/other"))])
    miss = index.find(fingerprint("POST", "/api/v2/chats/newer", b"{}"))
    assert isinstance(miss, Miss)
    assert miss.closest is not None
    assert miss.closest.cassette == "b"
    assert [d[0] for d in miss.differs] == ["path"]
    empty = Index([]).find({"method": "GET", "path": "/"})
    assert isinstance(empty, Miss)
    assert empty.closest is None
    assert "no cassette" in empty.message()


# --- faults -----------------------------------------------------------------------------------


def test_fault_parse() -> None:
    """Fault.parse understands the four specs and rejects others."""
    assert Fault.parse("split_utf8") == SplitUtf8()
    assert Fault.parse("bytewise") == Bytewise()
    assert Fault.parse(" coalesce ") == Coalesce()
    assert Fault.parse("drop_after:12") == DropAfter(12)
    assert str(DropAfter(12)) == "drop_after:12"
    for bad in ("nope", "drop_after", "drop_after:-1", "drop_after:x", "bytewise:3"):
        with pytest.raises(ValueError):
            Fault.parse(bad)


def test_apply_fault_changes_only_boundaries() -> None:
    """split_utf8, bytewise and coalesce keep the bytes; only drop_after truncates and drops."""
    chunks = [(0.0, "ab日c".encode()), (0.5, b""), (1.0, "本x".encode())]
    whole = b"".join(b for _, b in chunks)
    split, drop = apply_fault(SplitUtf8(), chunks)
    assert split == [
        (0.0, b"ab\xe6"),
        (0.0, b"\x97\xa5c"),
        (1.0, b"\xe6"),
        (1.0, b"\x9c\xacx"),
    ]
    assert not drop
    each, _ = apply_fault(Bytewise(), chunks)
    assert len(each) == len(whole) and b"".join(b for _, b in each) == whole
    assert apply_fault(Coalesce(), chunks) == ([(1.0, whole)], False)
    assert apply_fault(DropAfter(4), chunks) == ([(0.0, b"ab\xe6\x97")], True)
    assert apply_fault(DropAfter(100), chunks)[0] == [(0.0, chunks[0][1]), (1.0, chunks[2][1])]
    assert apply_fault(None, chunks) == ([(0.0, chunks[0][1]), (1.0, chunks[2][1])], False)


# --- server -----------------------------------------------------------------------------------


async def _chunks(resp: aiohttp.ClientResponse) -> list[bytes]:
    out: list[bytes] = []
    buf = b""
    async for data, end_of_chunk in resp.content.iter_chunks():
        buf += data
        if end_of_chunk:
            out.append(buf)
            buf = b""
    if buf:
        out.append(buf)
    return out


async def test_streamed_chunk_boundaries_match_recording(aiohttp_client: ClientFactory) -> None:
    """Each recorded chunk arrives as one HTTP chunk, including one split inside a character."""
    inter = streamed()
    client = await aiohttp_client(make_replay_app([cassette("s", inter)]))
    resp = await client.post("/api/v2/chat/completions?chat_id=zzz", data=inter.request_body)
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/event-stream; charset=utf-8"
    assert await _chunks(resp) == [b for _, b in inter.iter_chunks()]


async def test_plain_response_exact_bytes_and_headers(aiohttp_client: ClientFactory) -> None:
    """A plain interaction answers the exact bytes with recorded headers minus Content-Length."""
    inter = plain()
    client = await aiohttp_client(make_replay_app([cassette("p", inter)]))
    resp = await client.post("/api/v2/chats/new", data=b'{"chat_type": "t2t", "timestamp": 9}')
    assert await resp.read() == inter.body_bytes()
    assert resp.headers["Content-Type"] == "application/json; charset=utf-8"
    assert resp.headers["Content-Length"] == str(len(inter.body_bytes()))
    assert resp.headers.getall("X-Multi") == ["a", "b"]


async def test_faults_keep_the_body(aiohttp_client: ClientFactory) -> None:
    """Under split_utf8, bytewise and coalesce the client receives the same bytes."""
    inter = streamed()
    for spec, count in (("split_utf8", 4), ("bytewise", len(inter.body_bytes())), ("coalesce", 1)):
        app = make_replay_app([cassette("s", inter)], fault=Fault.parse(spec))
        client = await aiohttp_client(app)
        resp = await client.post("/api/v2/chat/completions", data=inter.request_body)
        got = await _chunks(resp)
        assert b"".join(got) == inter.body_bytes(), spec
        assert len(got) == count, spec


async def test_recorded_error_end_drops_connection(aiohttp_client: ClientFactory) -> None:
    """end == "error" sends every chunk, then the client gets a payload error, not a clean EOF."""
    inter = streamed(end="error", error="connection reset")
    client = await aiohttp_client(make_replay_app([cassette("e", inter)]))
    resp = await client.post("/api/v2/chat/completions", data=inter.request_body)
    received = b""
    with pytest.raises(aiohttp.ClientPayloadError):
        async for data in resp.content.iter_any():
            received += data
    assert received == inter.body_bytes()


async def test_drop_after_truncates_plain_and_streamed(aiohttp_client: ClientFactory) -> None:
    """drop_after:N delivers N bytes and then breaks the connection, for both body kinds."""
    app = make_replay_app([cassette("p", plain(), streamed())], fault=DropAfter(10))
    client = await aiohttp_client(app)
    for path, body in (
        ("/api/v2/chats/new", plain().request_body),
        ("/api/v2/chat/completions", streamed().request_body),
    ):
        resp = await client.post(path, data=body)
        received = b""
        with pytest.raises(aiohttp.ClientPayloadError):
            async for data in resp.content.iter_any():
                received += data
        assert len(received) == 10


async def test_miss_answers_404_with_closest(aiohttp_client: ClientFactory) -> None:
    """A miss answers 404 JSON replay_miss naming the closest interaction and differing fields."""
    client = await aiohttp_client(make_replay_app([cassette("s", streamed("hi"))]))
    resp = await client.post("/api/v2/chat/completions", data=completion_body("bye"))
    assert resp.status == 404
    assert resp.content_type == "application/json"
    error = (await resp.json())["error"]
    assert error["type"] == "replay_miss"
    assert error["request"]["text"] == "bye"
    assert error["closest"] == {
        "cassette": "s",
        "interaction": 0,
        "method": "POST",
        "path": "/api/v2/chat/completions",
        "similarity": 0.0,
        "differs": [{"field": "text", "recorded": "hi", "received": "bye"}],
        "prompt_diff": "[-hi-]{+bye+}",
    }
    assert "chat_id" not in json.dumps(error) and "https://" not in json.dumps(error)
    assert "'s'" in error["message"] and "text" in error["message"]
    client2 = await aiohttp_client(make_replay_app([]))
    resp2 = await client2.get("/anything")
    assert (await resp2.json())["error"]["closest"] is None


async def test_requests_are_recorded_and_logged_without_header_values(
    aiohttp_client: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """REQUESTS_KEY keeps the exact bytes and headers; the log names path and cassette only."""
    app = make_replay_app([cassette("p", plain())])
    client = await aiohttp_client(app)
    body = '{"chat_type": "t2t", "title": "é"}'.encode()
    with caplog.at_level(logging.INFO, logger="recorder.replay"):
        await client.post(
            "/api/v2/chats/new?x=1",
            data=body,
            headers={"Content-Type": "application/json; charset=utf-8", "Authorization": "S3CRET"},
        )
        await client.get("/missing")
    first, second = app[REQUESTS_KEY]
    assert first.method == "POST" and first.path_qs == "/api/v2/chats/new?x=1"
    assert first.body == body
    assert first.headers["Content-Type"] == "application/json; charset=utf-8"
    assert first.matched == "p"
    assert second.matched is None
    assert "S3CRET" not in caplog.text
    assert "/api/v2/chats/new" in caplog.text and "p[0]" in caplog.text
    assert "/missing -> miss" in caplog.text


async def test_speed_scales_recorded_timing(aiohttp_client: ClientFactory) -> None:
    """Speed 2 halves recorded delays; speed 0 ignores even long recorded delays."""
    slow = streamed(step=0.1)  # 0.1 s to headers, chunks at 0.0/0.1/0.2 s -> 0.3 s in real time
    loop = asyncio.get_running_loop()
    client = await aiohttp_client(make_replay_app([cassette("s", slow)], speed=2.0))
    start = loop.time()
    resp = await client.post("/api/v2/chat/completions", data=slow.request_body)
    assert await resp.read() == slow.body_bytes()
    assert loop.time() - start >= 0.15 - 0.01
    very_slow = streamed(step=60.0)
    client0 = await aiohttp_client(make_replay_app([cassette("s", very_slow)], speed=0.0))
    start = loop.time()
    resp0 = await client0.post("/api/v2/chat/completions", data=very_slow.request_body)
    assert await resp0.read() == very_slow.body_bytes()
    assert loop.time() - start < 10


def test_negative_speed_is_refused() -> None:
    """make_replay_app refuses a negative speed."""
    with pytest.raises(ValueError):
        make_replay_app([], speed=-1.0)


def test_cli_replay_help() -> None:
    """qwen-record replay --help documents host, port, speed and the fault specs."""
    result = CliRunner().invoke(main, ["replay", "--help"])
    assert result.exit_code == 0
    for word in ("--host", "--port", "--speed", "--fault", "split_utf8", "drop_after:N"):
        assert word in result.output


def test_cli_replay_rejects_bad_fault(tmp_path: Any) -> None:
    """qwen-record replay refuses an unknown fault spec before serving."""
    path = cassette("p", plain()).save(tmp_path / "p.json")
    result = CliRunner().invoke(main, ["replay", str(path), "--fault", "explode"])
    assert result.exit_code == 2
    assert "unknown fault" in result.output
