"""The turn's set-up is done while the completion's headers are on their way
(:meth:`proxy.service.ChatService._open_turn`): the completion request is sent from an eager
task, and the front door's stream renderer (the ``warm`` of ``open_chat``) is built during the
wait, not after the headers came. Whatever goes wrong during that wait gives the opening up:
a request still on its way is cancelled, a stream that opened meanwhile is released, the
account is freed."""

from __future__ import annotations

import asyncio
import gc
import json
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from test_hangup import CliServer, until

import proxy.relay
import proxy.routes.chat
import proxy.routes.messages
import proxy.routes.responses
from proxy import continuation
from proxy.app import make_app
from proxy.config import Settings
from proxy.conversation import Turn
from proxy.frontdoors.openai_chat import parse_chat
from proxy.service import _abandon
from proxy.state import SERVICE, STORE

MODELS = {"data": [{"id": "qwen3-max", "info": {"meta": {"chat_type": ["t2t"]}}}]}

FRAMES = [
    {"response.created": {"chat_id": "chat-w", "response_id": "resp-w"}},
    {"choices": [{"delta": {"content": "hello", "phase": "answer", "status": "typing"}}]},
    {"choices": [{"delta": {"content": "", "phase": "answer", "status": "finished"}}]},
]


class Site:
    """A site that notes, when the completion request arrives, whether the renderer was
    already built; it then answers one short SSE answer."""

    def __init__(self, built: list[str], *, hold: bool = False) -> None:
        self.built = built
        self.hold = hold  # send the headers, then nothing more
        self.seen_at_arrival: list[list[str]] = []
        self.app = web.Application()
        self.app.router.add_get("/api/models", self.models)
        self.app.router.add_post("/api/v2/chats/new", self.new_chat)
        self.app.router.add_post("/api/v2/chat/completions", self.completion)

    async def models(self, _: web.Request) -> web.Response:
        return web.json_response(MODELS)

    async def new_chat(self, _: web.Request) -> web.Response:
        return web.json_response({"success": True, "data": {"id": "chat-w"}})

    async def completion(self, request: web.Request) -> web.StreamResponse:
        self.seen_at_arrival.append(list(self.built))
        await request.read()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        if self.hold:
            await resp.write(b": open\n\n")
            await asyncio.Event().wait()  # until the server shuts down
        for frame in FRAMES:
            await resp.write(f"data: {json.dumps(frame)}\n\n".encode())
        await resp.write_eof()
        return resp


def spy(cls: type, built: list[str]) -> type:
    """``cls`` noting each construction in ``built``."""

    class Spy(cls):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            built.append(cls.__name__)
            super().__init__(*args, **kwargs)

    return Spy


async def start_gateway(aiohttp_server: Any, site: Site, **settings: Any) -> CliServer:
    """The gateway in front of ``site``, started (the caller cleans its runner up)."""
    upstream = await aiohttp_server(site.app)
    url = str(upstream.make_url("")).rstrip("/")
    gateway = CliServer(make_app(Settings(upstream_url=url, tokens=["tok-w-1"], **settings)))
    await gateway.start()
    return gateway


HI = [{"role": "user", "content": "hi"}]


DOORS = [
    (
        proxy.routes.chat,
        "ChatStream",
        "/v1/chat/completions",
        {"messages": HI},
        "hello",
    ),
    (
        proxy.routes.messages,
        "AnthropicStream",
        "/v1/messages",
        {"max_tokens": 64, "messages": HI},
        "hello",
    ),
    (proxy.routes.responses, "ResponsesStreamRenderer", "/v1/responses", {"input": "hi"}, "hello"),
]


@pytest.mark.parametrize(("module", "name", "path", "extra", "text"), DOORS)
async def test_the_renderer_is_built_before_the_completion_request_is_answered(
    aiohttp_server: Any,
    monkeypatch: pytest.MonkeyPatch,
    module: Any,
    name: str,
    path: str,
    extra: dict[str, Any],
    text: str,
) -> None:
    built: list[str] = []
    monkeypatch.setattr(module, name, spy(getattr(module, name), built))
    stages = proxy.relay._stages

    def counted(*args: Any, **kwargs: Any) -> Any:
        built.append("stages")
        return stages(*args, **kwargs)

    monkeypatch.setattr(proxy.relay, "_stages", counted)
    site = Site(built)
    gateway = await start_gateway(aiohttp_server, site)
    try:
        async with aiohttp.ClientSession() as s:
            body = {"model": "qwen3-max", "stream": True, **extra}
            async with s.post(gateway.make_url(path), json=body) as r:
                assert r.status == 200
                answer = (await r.read()).decode()
        assert text in answer
        # the renderer and the turn's stages: built once, and already when the site got the
        # completion request (before its headers came), not again by the relay
        assert built == [name, "stages"]
        assert site.seen_at_arrival == [[name, "stages"]]
    finally:
        await gateway.runner.cleanup()


async def test_a_non_streamed_answer_builds_no_stream_renderer(
    aiohttp_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[str] = []
    monkeypatch.setattr(proxy.routes.chat, "ChatStream", spy(proxy.routes.chat.ChatStream, built))
    site = Site(built)
    gateway = await start_gateway(aiohttp_server, site)
    try:
        async with aiohttp.ClientSession() as s:
            body = {"model": "qwen3-max", "messages": HI}
            async with s.post(gateway.make_url("/v1/chat/completions"), json=body) as r:
                assert r.status == 200
                assert (await r.json())["choices"][0]["message"]["content"] == "hello"
        assert built == []
    finally:
        await gateway.runner.cleanup()


class Boom(Exception):
    pass


def failing_renderer(*_: Any, **__: Any) -> Any:
    raise Boom("the renderer failed")


async def test_a_renderer_that_fails_fails_the_request_and_frees_the_stream(
    aiohttp_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its failure while the headers are awaited is not lost: building it again (after the
    headers) raises it in the request; the client gets a 500 error object, the open stream is
    given back (not left acquired, though the site would keep it open), the account freed."""
    monkeypatch.setattr(proxy.routes.chat, "ChatStream", failing_renderer)
    reports: list[dict[str, Any]] = []  # the loop's unhandled errors: none (no stray traceback)
    asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: reports.append(ctx))
    site = Site([], hold=True)
    gateway = await start_gateway(aiohttp_server, site)
    try:
        connector = gateway.app[SERVICE].session.connector
        assert connector is not None
        async with aiohttp.ClientSession() as s:
            body = {"model": "qwen3-max", "stream": True, "messages": HI}
            async with s.post(gateway.make_url("/v1/chat/completions"), json=body) as r:
                assert r.status == 500
                assert (await r.json())["error"]["type"] == "server_error"
        await until(lambda: not connector._acquired, 2.0)  # type: ignore[attr-defined]
        assert not (await gateway.app[STORE].inflight()).get("account-1")
        assert reports == []
    finally:
        asyncio.get_running_loop().set_exception_handler(None)
        await gateway.runner.cleanup()


class FakeResponse:
    def __init__(self) -> None:
        self.released = 0

    def release(self) -> None:
        self.released += 1


class FakeWatch:
    def __init__(self) -> None:
        self.cancelled = 0

    def cancel(self) -> None:
        self.cancelled += 1


async def test_a_stream_that_opens_at_once_still_gets_its_turn_prepared(
    aiohttp_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The eager task is done before the preparation (nothing was awaited): the preparation is
    still done, once (``warm`` called, the media policy and the answer's hooks set), and the
    stream taken from the finished task."""
    site = Site([])
    gateway = await start_gateway(
        aiohttp_server, site, spare_chats=True, media_hosts=["cdn.example"]
    )
    service = gateway.app[SERVICE]
    resp = FakeResponse()

    async def opened_at_once(*_: Any) -> tuple[FakeResponse, FakeWatch]:
        return resp, FakeWatch()  # no await: the loop never ran in between

    monkeypatch.setattr(service.client, "open_stream", opened_at_once)
    calls: list[str] = []
    try:
        route = await service.route_for(
            parse_chat(b'{"model":"qwen3-max","messages":[{"role":"user","content":"x"}]}')
        )
        plan = continuation.plan([Turn(role="user", content="x")], "")
        chat = await service._open_turn(
            route,
            "x",
            size=None,
            blobs=[],
            resume=None,
            plan=plan,
            warm=lambda chat: calls.append(chat.chat_id),
        )
        assert calls == ["chat-w"]
        assert chat.policy.allowed_hosts == ("cdn.example",)
        assert chat.on_answer is not None
        assert chat.after_commit is not None
        await service._close_turn(chat, Boom("done here"))
        assert resp.released == 1
    finally:
        await gateway.runner.cleanup()


# -- _abandon, case by case -------------------------------------------------------------------


async def test_abandon_cancels_an_opening_still_on_its_way() -> None:
    started, gate = asyncio.Event(), asyncio.Event()

    async def opening() -> Any:
        started.set()
        await gate.wait()
        return FakeResponse(), FakeWatch()

    task = asyncio.ensure_future(opening())
    await started.wait()  # the task now waits on the gate
    _abandon(task)
    assert task.cancelling() == 1
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_abandon_releases_a_stream_that_opened() -> None:
    """(A turn cancelled between the stream's opening and its own wake-up.)"""
    resp, watch = FakeResponse(), FakeWatch()

    async def opening() -> Any:
        return resp, watch

    task = asyncio.ensure_future(opening())
    await asyncio.wait([task])
    _abandon(task)
    assert (resp.released, watch.cancelled) == (1, 1)


async def test_abandon_takes_a_failed_openings_exception() -> None:
    """No "exception was never retrieved" report for a failed opening it gave up."""
    reports: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: reports.append(context))
    try:

        async def opening() -> Any:
            raise Boom("refused")

        task = asyncio.ensure_future(opening())
        await asyncio.wait([task])  # done; its exception not looked at
        _abandon(task)
        del task
        gc.collect()
        assert reports == []
    finally:
        loop.set_exception_handler(None)


async def test_abandon_leaves_a_cancelled_opening_alone() -> None:
    started = asyncio.Event()

    async def opening() -> Any:
        started.set()
        await asyncio.Event().wait()

    task = asyncio.ensure_future(opening())
    await started.wait()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    _abandon(task)  # no error: nothing to release
    assert task.cancelled()
