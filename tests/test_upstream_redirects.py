"""The site's redirects are answers, never followed; a generated image's download follows a few,
only to its own host or the media CDN allow-list.

Before: the upstream client followed every redirect (aiohttp's default), so a ``302`` from the
site (or anything in between) sent the request on to any host, and the client was told
"chat.qwen.ai answered HTTP 404" about whatever that host answered. Now a redirect of the
site's API is classified (:func:`proxy.qwen.envelope.classify_response`): to the sign-in page,
the token was refused (401); to the WAF's punish page, a captcha (503); anywhere else, a 502
naming where it pointed (no query, no user name or password); one test per kind of target is
in ``tests/test_envelope_rules.py``.
"""

from __future__ import annotations

import base64
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from helpers import ServerFactory, cassettes

from proxy.app import make_app
from proxy.config import Settings
from proxy.qwen.client import MAX_MEDIA_REDIRECTS
from proxy.qwen.media import DEFAULT_MEDIA_HOSTS
from recorder.replay import make_replay_app
from recorder.synthetic_media import BY_NAME, image_bytes

MODELS = {"data": [{"id": "qwen3-max", "info": {"meta": {"chat_type": ["t2t"]}}}]}
CHAT = {"model": "qwen3-max", "messages": [{"role": "user", "content": "hi"}]}


# -- end to end: the gateway does not follow --------------------------------------------------


async def _site(aiohttp_server: ServerFactory, new_chat: Any) -> TestServer:
    async def models(_: web.Request) -> web.Response:
        return web.json_response(MODELS)

    app = web.Application()
    app.router.add_get("/api/models", models)
    app.router.add_post("/api/v2/chats/new", new_chat)
    return await aiohttp_server(app)


async def _post(proxy: TestServer, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as s,
        s.post(proxy.make_url("/v1/chat/completions"), json=body) as r,
    ):
        return r.status, await r.json()


async def test_a_redirect_from_the_site_is_not_followed(aiohttp_server: ServerFactory) -> None:
    """``chats/new`` answering 302 to another host: that host never gets the request (nor the
    token), and the client gets 502 naming where the site pointed."""
    elsewhere: list[web.Request] = []

    async def catch(request: web.Request) -> web.Response:
        elsewhere.append(request)
        return web.json_response({"success": True, "data": {"id": "c"}})

    other_app = web.Application()
    other_app.router.add_route("*", "/{tail:.*}", catch)
    other = await aiohttp_server(other_app)

    async def new_chat(_: web.Request) -> web.Response:
        raise web.HTTPFound(str(other.make_url("/stolen?sig=SIGNED")))

    site = await _site(aiohttp_server, new_chat)
    proxy = await aiohttp_server(
        make_app(Settings(upstream_url=str(site.make_url("")).rstrip("/"), tokens=["tok-a"]))
    )
    status, body = await _post(proxy, {**CHAT, "stream": True})
    assert status == 502
    assert body["error"]["code"] == "upstream_protocol_error"
    assert "/stolen" in body["error"]["message"] and "SIGNED" not in body["error"]["message"]
    assert elsewhere == []


async def test_a_redirect_to_the_sign_in_page_is_a_refused_token(
    aiohttp_server: ServerFactory,
) -> None:
    async def new_chat(_: web.Request) -> web.Response:
        raise web.HTTPFound("/auth?action=signin")

    site = await _site(aiohttp_server, new_chat)
    proxy = await aiohttp_server(
        make_app(Settings(upstream_url=str(site.make_url("")).rstrip("/"), tokens=["tok-a"]))
    )
    status, body = await _post(proxy, CHAT)
    assert status == 401
    assert body["error"]["code"] == "upstream_unauthorized"
    assert "sign-in page" in body["error"]["message"]


# -- a generated image's download (b64_json) --------------------------------------------------


T2I = BY_NAME["media_t2i"]


async def _b64(
    aiohttp_server: ServerFactory, cdn: web.Application, **settings: Any
) -> tuple[int, dict[str, Any]]:
    """``images/generate`` with ``b64_json``; the replay server plays chat.qwen.ai and ``cdn``
    serves the image URLs (``media_base_url``)."""
    replay = await aiohttp_server(make_replay_app(list(cassettes()), speed=0))
    cdn_server = await aiohttp_server(cdn)
    base = str(replay.make_url("")).rstrip("/")
    proxy = await aiohttp_server(
        make_app(
            Settings(
                upstream_url=base,
                object_store_url=base,
                media_base_url=str(cdn_server.make_url("")).rstrip("/"),
                **settings,
            )
        )
    )
    body = {"model": "qwen3-max-image", "prompt": T2I.prompt, "response_format": "b64_json"}
    async with (
        aiohttp.ClientSession() as s,
        s.post(proxy.make_url("/v1/images/generations"), json=body) as r,
    ):
        return r.status, await r.json()


def _cdn(hops: int, final: str | None = None) -> web.Application:
    """A CDN that redirects ``hops`` times on its own host (``/hop/N/…``), then serves the
    cassette's PNG, or sends the last hop to ``final`` instead."""

    async def handle(request: web.Request) -> web.StreamResponse:
        parts = request.path.split("/")
        done = int(parts[2]) if request.path.startswith("/hop/") else 0
        rest = "/".join(parts[3:]) if request.path.startswith("/hop/") else request.path[1:]
        if done < hops:
            if final is not None and done == hops - 1:
                raise web.HTTPFound(final)
            raise web.HTTPFound(f"/hop/{done + 1}/{rest}")
        return web.Response(body=image_bytes("media_t2i"), content_type="image/png")

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    return app


async def test_b64_does_not_follow_a_redirect_to_another_scheme(
    aiohttp_server: ServerFactory,
) -> None:
    """Only http(s), even on the image's own host."""
    status, body = await _b64(aiohttp_server, _cdn(1, final="ftp://127.0.0.1/img.png"))
    assert status == 502
    assert body["error"]["code"] == "upstream_bad_media"
    assert "not followed" in body["error"]["message"]


@pytest.mark.parametrize("hops", [1, MAX_MEDIA_REDIRECTS])
async def test_b64_follows_redirects_on_the_images_own_host(
    aiohttp_server: ServerFactory, hops: int
) -> None:
    status, body = await _b64(aiohttp_server, _cdn(hops))
    assert status == 200, body
    assert base64.b64decode(body["data"][0]["b64_json"]) == image_bytes("media_t2i")


async def test_b64_stops_after_the_most_redirects(aiohttp_server: ServerFactory) -> None:
    status, body = await _b64(aiohttp_server, _cdn(MAX_MEDIA_REDIRECTS + 1))
    assert status == 502
    assert body["error"]["code"] == "upstream_bad_media"
    assert f"more than {MAX_MEDIA_REDIRECTS} times" in body["error"]["message"]


async def test_b64_does_not_follow_a_redirect_off_the_allow_list(
    aiohttp_server: ServerFactory,
) -> None:
    """A hop to another host that is not on ``media_hosts`` (here a link-local address) is
    refused before any request goes there."""
    status, body = await _b64(aiohttp_server, _cdn(1, final="http://169.254.169.254/latest"))
    assert status == 502
    assert body["error"]["code"] == "upstream_bad_media"
    assert "169.254.169.254" in body["error"]["message"]
    assert "allow-list" in body["error"]["message"]


async def test_b64_follows_a_redirect_to_an_allow_listed_host(
    aiohttp_server: ServerFactory,
) -> None:
    """A hop to another host on ``media_hosts`` (here ``localhost``, the CDN's other name) is
    followed."""
    hops = 0

    async def final(_: web.Request) -> web.Response:
        nonlocal hops
        hops += 1
        return web.Response(body=image_bytes("media_t2i"), content_type="image/png")

    other_app = web.Application()
    other_app.router.add_get("/img.png", final)
    other = await aiohttp_server(other_app)
    status, body = await _b64(
        aiohttp_server,
        _cdn(1, final=f"http://localhost:{other.port}/img.png"),
        media_hosts=[*DEFAULT_MEDIA_HOSTS, "localhost"],
    )
    assert status == 200, body
    assert base64.b64decode(body["data"][0]["b64_json"]) == image_bytes("media_t2i")
    assert hops == 1
