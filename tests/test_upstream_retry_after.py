"""The site's ``Retry-After`` reaches the client (docs/protocol.md §10).

Before: an HTTP 429 from the site always became ``Retry-After: 60`` (the header was never read),
and a 503 with ``Retry-After`` a 502 without one. Now a 429's wait (seconds or an HTTP-date,
between 1 s and a day; anything else: the default 60 s) is the client's ``Retry-After``, and a
503 that names its wait is a 503 passing it on. Each rule of the parser has its own test in
``tests/test_envelope_rules.py``; here a loopback fake site and the whole gateway.
"""

from __future__ import annotations

import time
from email.utils import formatdate
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from helpers import ServerFactory, site_app

from proxy.app import make_app
from proxy.config import Settings


async def _gateway(
    aiohttp_server: ServerFactory, status: int, headers: dict[str, str]
) -> TestServer:
    """The gateway in front of a site whose completion answers ``status`` with ``headers``."""

    async def completion(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"detail": "not now"}, status=status, headers=headers)

    site = await aiohttp_server(site_app(completion))
    url = str(site.make_url("")).rstrip("/")
    return await aiohttp_server(make_app(Settings(upstream_url=url, tokens=["tok-a"])))


async def _ask(proxy: TestServer, *, stream: bool) -> tuple[int, Any, dict[str, Any]]:
    body = {"model": "qwen3-max", "stream": stream, "messages": [{"role": "user", "content": "hi"}]}
    async with (
        aiohttp.ClientSession() as s,
        s.post(proxy.make_url("/v1/chat/completions"), json=body) as r,
    ):
        return r.status, r.headers.get("Retry-After"), await r.json()


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "non-stream"])
@pytest.mark.parametrize("wait", ["3", "120"])
async def test_a_429_passes_the_sites_seconds_on(
    aiohttp_server: ServerFactory, wait: str, stream: bool
) -> None:
    proxy = await _gateway(aiohttp_server, 429, {"Retry-After": wait})
    status, retry_after, body = await _ask(proxy, stream=stream)
    assert (status, retry_after) == (429, wait)
    assert body["error"]["code"] == "rate_limit_exceeded"


async def test_a_429_passes_the_sites_http_date_on(aiohttp_server: ServerFactory) -> None:
    """An HTTP-date two minutes ahead: about 120 s (the date has whole seconds)."""
    proxy = await _gateway(
        aiohttp_server, 429, {"Retry-After": formatdate(time.time() + 120, usegmt=True)}
    )
    status, retry_after, _ = await _ask(proxy, stream=True)
    assert status == 429 and retry_after is not None and 110 <= int(retry_after) <= 120


async def test_a_429_with_a_garbage_retry_after_gets_the_default(
    aiohttp_server: ServerFactory,
) -> None:
    proxy = await _gateway(aiohttp_server, 429, {"Retry-After": "whenever"})
    status, retry_after, _ = await _ask(proxy, stream=True)
    assert (status, retry_after) == (429, "60")


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "non-stream"])
async def test_a_503_with_retry_after_is_a_503_passing_it_on(
    aiohttp_server: ServerFactory, stream: bool
) -> None:
    proxy = await _gateway(aiohttp_server, 503, {"Retry-After": "5"})
    status, retry_after, body = await _ask(proxy, stream=stream)
    assert (status, retry_after) == (503, "5")
    assert body["error"]["code"] == "upstream_unavailable"


async def test_a_503_without_retry_after_stays_a_502(aiohttp_server: ServerFactory) -> None:
    proxy = await _gateway(aiohttp_server, 503, {})
    status, retry_after, body = await _ask(proxy, stream=True)
    assert (status, retry_after) == (502, None)
    assert body["error"]["code"] == "upstream_unavailable"
