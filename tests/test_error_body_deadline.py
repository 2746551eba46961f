"""A completion answer that is not a stream has its body read for at most ``read_timeout_s``.

Before: :meth:`proxy.qwen.client.QwenClient._failure` waited up to a hard-coded 30 s for the
body of an error answer, whatever ``read_timeout_s`` was, so an HTTP 500 whose HTML page
dripped a byte every 50 ms (never silent long enough for the read watch) took 30 s to become a
502; and what had come by then was dropped, so a dripping captcha page was not recognised. Its
messages also said "chat.qwen.ai" for any upstream URL. Here a loopback fake site drips the
page and the whole gateway answers.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from helpers import ServerFactory, site_app

from proxy.app import make_app
from proxy.config import Settings
from proxy.qwen.client import upstream_label
from proxy.qwen.envelope import classify_response

TIMEOUT_S = 0.4


async def _dripping_site(aiohttp_server: ServerFactory, status: int, head: bytes) -> TestServer:
    """A site whose completion answers ``status`` text/html: ``head`` at once, then one byte
    every 50 ms for 20 s (until the gateway hangs up)."""

    async def completion(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(status=status, headers={"Content-Type": "text/html"})
        await resp.prepare(request)
        try:
            await resp.write(head)
            for _ in range(400):
                await asyncio.sleep(0.05)  # the drip's pace, not a synchronisation
                await resp.write(b"x")
        except ConnectionError:
            pass
        return resp

    return await aiohttp_server(site_app(completion))


async def _ask(aiohttp_server: ServerFactory, site: TestServer) -> tuple[int, Any, float, str]:
    url = str(site.make_url("")).rstrip("/")
    proxy = await aiohttp_server(
        make_app(Settings(upstream_url=url, tokens=["tok-a"], read_timeout_s=TIMEOUT_S))
    )
    body = {"model": "qwen3-max", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    t0 = time.perf_counter()
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as s,
        s.post(proxy.make_url("/v1/chat/completions"), json=body) as r,
    ):
        got = await r.json()
    return r.status, got["error"], time.perf_counter() - t0, upstream_label(url)


async def test_a_dripping_error_page_is_cut_at_the_read_timeout(
    aiohttp_server: ServerFactory,
) -> None:
    site = await _dripping_site(aiohttp_server, 500, b"<html>")
    status, error, took, label = await _ask(aiohttp_server, site)
    assert status == 502 and error["code"] == "upstream_unavailable"
    assert TIMEOUT_S <= took < TIMEOUT_S * 1.25 + 1.0
    assert error["message"] == f"{label} answered HTTP 500."
    assert label.startswith("the upstream at http://127.0.0.1:")


async def test_what_came_of_a_cut_error_page_is_classified(
    aiohttp_server: ServerFactory,
) -> None:
    """A captcha page that drips: its first bytes name the WAF, so it is a captcha (503), not
    a refused token (what a 403 with no body would be)."""
    site = await _dripping_site(aiohttp_server, 403, b"<html><script src='aliyun_waf'>")
    status, error, took, _ = await _ask(aiohttp_server, site)
    assert (status, error["code"]) == (503, "upstream_captcha")
    assert took < TIMEOUT_S * 1.25 + 1.0


@pytest.mark.parametrize(
    ("status", "ctype", "body", "location", "says"),
    [
        (401, "text/plain", b"no", None, "answered HTTP 401: the upstream token"),
        (429, "text/plain", b"", None, "answered HTTP 429 (too many requests)."),
        (500, "text/plain", b"", None, "answered HTTP 500."),
        (504, "text/plain", b"", None, "answered HTTP 504 (gateway timeout)."),
        (200, "text/html", b"<html>", None, "answered with an HTML page (HTTP 200)"),
        (200, "application/json", b'{"a": 1}', None, "answered HTTP 200 with JSON"),
        (200, "text/plain", b"hi", None, "answered HTTP 200 with unexpected content"),
        (302, "text/plain", b"", "/auth", "redirected the request to its sign-in page"),
        (302, "text/plain", b"", "https://else.where/x", "answered HTTP 302, a redirect to"),
    ],
    ids=["401", "429", "5xx", "504", "html", "json", "other", "sign-in", "redirect"],
)
def test_messages_about_the_http_answer_name_the_upstream(
    status: int, ctype: str, body: bytes, location: str | None, says: str
) -> None:
    err = classify_response(status, ctype, body, location, upstream="the upstream at http://m:1")
    assert err.message.startswith(f"the upstream at http://m:1 {says}"), err.message
