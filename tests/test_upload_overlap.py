"""Round trips that do not depend on each other are made at once
(:meth:`proxy.service.ChatService._open_turn`, :meth:`~proxy.service.ChatService.ingest_parts`,
:meth:`~proxy.service.ChatService.download_images`): the media uploads (§7) go together and
alongside ``chats/new``; the image URLs of a request are fetched together, and so are the
generated images of a ``b64_json`` answer. The servers here make that observable without any
timing: an upload grant is answered only once every grant of the turn and the ``chats/new`` call
have arrived, so a gateway that made them one after the other would never be answered (the
test's timeout fails it).

When one of them fails, the others are given up: nothing is left running, no exception is left
unretrieved, the account is freed.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import json
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from test_hangup import CliServer, until

from proxy.app import make_app
from proxy.config import Settings
from proxy.qwen.translate import Media
from proxy.service import _Parallel
from proxy.state import SERVICE, STORE
from recorder.synthetic_media import STS_GRANT, png

MODELS = {"data": [{"id": "qwen3-max", "info": {"meta": {"chat_type": ["t2t"]}}}]}
ANSWER = [
    {"response.created": {"chat_id": "chat-u", "response_id": "resp-u"}},
    {"choices": [{"delta": {"content": "two pictures", "phase": "answer", "status": "typing"}}]},
    {"choices": [{"delta": {"content": "", "phase": "answer", "status": "finished"}}]},
]
SMALL = png(16, 16, lambda x, y: (x * 10, 0, y * 10))
LARGE = png(40, 40, lambda x, y: (0, x * 5, y * 5))
TIMEOUT_S = 10.0  # a gateway that waits for one call before the next never gets its answers


class Site:
    """chat.qwen.ai and its object store. A grant (``getstsToken``) is answered once
    ``grants`` grants and the ``chats/new`` call have arrived; ``refuse`` names the calls that
    fail (``chats/new``, ``getstsToken``), answered at once."""

    def __init__(self, grants: int, *, refuse: tuple[str, ...] = ()) -> None:
        self.grants = grants
        self.refuse = refuse
        self.arrived: list[str] = []
        self.stored: list[bytes] = []
        self.completions: list[dict[str, Any]] = []
        self._changed = asyncio.Condition()
        self.app = web.Application(client_max_size=2**20)
        self.app.router.add_get("/api/models", self.models)
        self.app.router.add_post("/api/v2/chats/new", self.new_chat)
        self.app.router.add_post("/api/v2/files/getstsToken", self.grant)
        self.app.router.add_put("/{bucket}/{key:.+}", self.put)
        self.app.router.add_post("/api/v2/chat/completions", self.completion)

    async def _arrive(self, name: str) -> None:
        async with self._changed:
            self.arrived.append(name)
            self._changed.notify_all()

    async def models(self, _: web.Request) -> web.Response:
        return web.json_response(MODELS)

    async def new_chat(self, _: web.Request) -> web.Response:
        await self._arrive("chats/new")
        if "chats/new" in self.refuse:
            return web.json_response({"success": False, "data": {"code": "Bad_Request"}})
        return web.json_response({"success": True, "data": {"id": "chat-u"}})

    async def grant(self, _: web.Request) -> web.Response:
        await self._arrive("getstsToken")
        if "getstsToken" in self.refuse:
            return web.json_response({"success": False, "data": {"code": "Bad_Request"}})
        async with self._changed:
            await self._changed.wait_for(
                lambda: (
                    self.arrived.count("getstsToken") >= self.grants and "chats/new" in self.arrived
                )
            )
        return web.json_response({"success": True, "data": STS_GRANT})

    async def put(self, request: web.Request) -> web.Response:
        self.stored.append(await request.read())
        return web.Response()

    async def completion(self, request: web.Request) -> web.StreamResponse:
        self.completions.append(await request.json())
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for frame in ANSWER:
            await resp.write(f"data: {json.dumps(frame)}\n\n".encode())
        await resp.write_eof()
        return resp


async def gateway_for(aiohttp_server: Any, site: Site, **settings: Any) -> CliServer:
    upstream = await aiohttp_server(site.app)
    url = str(upstream.make_url("")).rstrip("/")
    options = {"upstream_url": url, "object_store_url": url, "tokens": ["tok-u-1"], **settings}
    gateway = CliServer(make_app(Settings(**options)))
    await gateway.start()
    return gateway


def data_uri(raw: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(raw).decode()


def pictures_message(*urls: str) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = [{"type": "text", "text": "compare them"}]
    parts += [{"type": "image_url", "image_url": {"url": u}} for u in urls]
    return [{"role": "user", "content": parts}]


async def ask(gateway: CliServer, messages: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
    async with asyncio.timeout(TIMEOUT_S), aiohttp.ClientSession() as s:
        body = {"model": "qwen3-max", "messages": messages}
        async with s.post(gateway.make_url("/v1/chat/completions"), json=body) as r:
            return r.status, await r.json()


def loop_errors() -> list[dict[str, Any]]:
    """What reaches the loop's exception handler from now on (an unretrieved task exception)."""
    reports: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: reports.append(ctx))
    return reports


def running(name: str) -> Callable[[], bool]:
    return lambda: any(t.get_name() == name and not t.done() for t in asyncio.all_tasks())


async def test_the_uploads_and_the_chat_are_sent_together(aiohttp_server: Any) -> None:
    site = Site(grants=2)
    gateway = await gateway_for(aiohttp_server, site)
    try:
        status, body = await ask(gateway, pictures_message(data_uri(SMALL), data_uri(LARGE)))
        assert status == 200, body
        assert body["choices"][0]["message"]["content"] == "two pictures"
        assert sorted(site.stored) == sorted([SMALL, LARGE])
        # the file entries keep the order of the image parts, whichever upload ended first
        assert sent_file_sizes(site) == [len(SMALL), len(LARGE)]
        assert site.completions[0]["chat_id"] == "chat-u"
    finally:
        await gateway.runner.cleanup()


async def test_a_refused_chat_gives_the_uploads_up(aiohttp_server: Any) -> None:
    """``chats/new`` fails while the grant is held: the client gets the error at once, the
    upload still on its way is cancelled, the account is freed, nothing is left unretrieved."""
    errors = loop_errors()
    site = Site(grants=2, refuse=("chats/new",))  # the grant waits for a second one: never
    gateway = await gateway_for(aiohttp_server, site)
    try:
        status, body = await ask(gateway, pictures_message(data_uri(SMALL)))
        assert (status, body["error"]["code"]) == (502, "upstream_bad_request"), body
        assert "getstsToken" in site.arrived and site.completions == []
        await until(lambda: not running("upload")(), 2.0)
        assert not (await gateway.app[STORE].inflight()).get("account-1")
        gc.collect()
        assert errors == []
    finally:
        await gateway.runner.cleanup()


async def test_when_both_are_refused_the_chat_error_is_answered(aiohttp_server: Any) -> None:
    """The grant and ``chats/new`` both fail: the client gets the chat's error (the first
    awaited); the upload's failure counts as retrieved (no "exception was never retrieved")."""
    errors = loop_errors()
    site = Site(grants=1, refuse=("chats/new", "getstsToken"))
    gateway = await gateway_for(aiohttp_server, site)
    try:
        status, body = await ask(gateway, pictures_message(data_uri(SMALL), data_uri(LARGE)))
        assert (status, body["error"]["code"]) == (502, "upstream_bad_request"), body
        assert site.arrived.count("getstsToken") == 2
        await until(lambda: not running("upload")(), 2.0)
        assert not (await gateway.app[STORE].inflight()).get("account-1")
        gc.collect()
        assert errors == []
    finally:
        await gateway.runner.cleanup()


async def test_a_refused_upload_fails_the_turn_and_keeps_the_chat_tracked(
    aiohttp_server: Any,
) -> None:
    """A grant refused: the client gets the error, no completion is asked for, the chat made
    meanwhile is tracked for deletion (``chat_cleanup = "delete"``), the account is freed."""
    errors = loop_errors()
    site = Site(grants=1, refuse=("getstsToken",))
    gateway = await gateway_for(aiohttp_server, site)
    try:
        status, body = await ask(gateway, pictures_message(data_uri(SMALL), data_uri(LARGE)))
        assert (status, body["error"]["code"]) == (502, "upstream_bad_request"), body
        assert site.completions == []
        await until(lambda: not running("upload")(), 2.0)
        assert not (await gateway.app[STORE].inflight()).get("account-1")
        # chats/new was answered before the refusal was read: its chat is left to the cleanup
        assert "chats/new" in site.arrived
        assert ("chat-u", "account-1") in await gateway.app[STORE].due_chats(2**40, 100)
        gc.collect()
        assert errors == []
    finally:
        await gateway.runner.cleanup()


async def paired_pictures(aiohttp_server: Any) -> list[str]:
    """The URLs of two PNGs (``SMALL``, then ``LARGE``) on a loopback server that answers the
    first only once the second was asked for too: only a client that asks for both at once
    gets either."""
    asked: list[str] = []
    both = asyncio.Event()

    async def picture(request: web.Request) -> web.Response:
        asked.append(request.path)
        if len(asked) == 2:
            both.set()
        await both.wait()
        raw = SMALL if request.path == "/a.png" else LARGE
        return web.Response(body=raw, content_type="image/png")

    app = web.Application()
    app.router.add_get("/{name}", picture)
    server: TestServer = await aiohttp_server(app)
    return [str(server.make_url("/a.png")), str(server.make_url("/b.png"))]


def sent_file_sizes(site: Site) -> list[int]:
    """The sizes of the file entries of the one completion the site got, in order."""
    (sent,) = site.completions
    return [f["file"]["meta"]["size"] for f in sent["messages"][0]["files"]]


async def test_image_urls_are_fetched_together(aiohttp_server: Any) -> None:
    urls = await paired_pictures(aiohttp_server)
    site = Site(grants=2)
    gateway = await gateway_for(aiohttp_server, site, allow_private_fetch=True)
    try:
        status, body = await ask(gateway, pictures_message(*urls))
        assert status == 200, body
        assert sent_file_sizes(site) == [len(SMALL), len(LARGE)]
    finally:
        await gateway.runner.cleanup()


async def test_generated_images_are_downloaded_together(aiohttp_server: Any) -> None:
    """``b64_json`` answers: the images of one request are downloaded at once, and come back
    in order."""
    urls = await paired_pictures(aiohttp_server)
    gateway = await gateway_for(aiohttp_server, Site(grants=1))
    try:
        async with asyncio.timeout(TIMEOUT_S):
            got = await gateway.app[SERVICE].download_images([Media("image", u) for u in urls])
        assert got == [(SMALL, "image/png"), (LARGE, "image/png")]
    finally:
        await gateway.runner.cleanup()


async def test_a_task_given_up_that_fails_on_its_way_out_is_retrieved() -> None:
    """:class:`proxy.service._Parallel`: a coroutine that turns its cancellation into another
    error (a cleanup that fails) still leaves no "exception was never retrieved"."""
    errors = loop_errors()
    started = asyncio.Event()

    async def stubborn() -> int:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise ValueError("the cleanup failed") from None
        return 1

    async def quick() -> int:
        return 2

    together = _Parallel([quick(), stubborn()], "upload")
    await started.wait()
    together.cancel()
    await until(lambda: not running("upload")(), 2.0)
    del together  # its tasks go: an unretrieved exception would be reported now
    gc.collect()
    assert errors == []


async def test_results_come_in_order_and_the_first_failure_cancels_the_rest() -> None:
    release = asyncio.Event()
    cancelled: list[str] = []

    async def late(value: str) -> str:
        await release.wait()
        return value

    async def failing() -> str:
        raise ValueError("no grant")

    async def waiting() -> str:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append("waiting")
            raise
        return "never"

    ordered = _Parallel([late("a"), late("b")], "upload")
    release.set()
    assert await ordered.results() == ["a", "b"]
    broken = _Parallel([failing(), waiting()], "upload")
    with pytest.raises(ValueError, match="no grant"):
        await broken.results()
    await until(lambda: not running("upload")(), 2.0)
    assert cancelled == ["waiting"]
