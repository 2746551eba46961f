"""A small fake chat.qwen.ai with several accounts, for the account pool and shared-state tests.

Each account is a token; the fake answers every completion with the recorded ``t2t_answer``
stream unless the test set a behaviour for that token: an error code (``ParallelLimited``,
``RateLimited``…, sent as the HTTP 200 JSON envelope of docs/protocol.md §10), ``captcha`` (the WAF
JSON body) or ``hold`` (the request waits until :meth:`FakeQwen.release` is called; its arrival
is signalled, so tests never sleep to synchronise).
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from helpers import completion_interaction_body


def make_jwt(subject: str, exp: float | None) -> str:
    """An unsigned fake JWT (``alg: none``) with ``exp`` (epoch s), built at run time."""

    def part(obj: object) -> str:
        raw = json.dumps(obj, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    claims: dict[str, Any] = {"id": f"fake-{subject}", "fake": True}
    if exp is not None:
        claims["exp"] = int(exp)
    return ".".join([part({"alg": "none", "typ": "JWT"}), part(claims), part("no-signature")])


@dataclass
class FakeQwen:
    """The fake's state: behaviours per token and what it saw."""

    behaviour: dict[str, str] = field(default_factory=dict)
    served: list[str] = field(default_factory=list)  # the token of each completion, in order
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    _gate: asyncio.Event = field(default_factory=asyncio.Event)
    holding: int = 0
    extra: dict[str, Any] = field(default_factory=lambda: {"num": 2})  # envelope extras
    body: bytes | None = None  # the completion stream (default: the t2t_answer recording)
    seen_tokens: set[str] = field(default_factory=set)  # every token any request carried
    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    #: answer every request with ``Set-Cookie`` headers, as the site may (its WAF's ``acw_tc``,
    #: a refreshed ``token`` of the account that asked)
    set_cookies: bool = False
    cookies: list[tuple[str, str]] = field(default_factory=list)  # (token, Cookie header)

    def release(self) -> None:
        """Let every held completion answer."""
        self._gate.set()

    def app(self) -> web.Application:
        answer = completion_interaction_body("t2t_answer").encode()

        @web.middleware
        async def record(request: web.Request, handler: Any) -> web.StreamResponse:
            token = request.headers.get("Authorization", "").removeprefix("Bearer ")
            if token:
                self.seen_tokens.add(token)
            self.cookies.append((token, request.headers.get("Cookie", "")))
            resp: web.StreamResponse = await handler(request)
            if self.set_cookies:
                resp.set_cookie("acw_tc", "waf-session")
                resp.set_cookie("token", token)
            return resp

        app = web.Application(middlewares=[record])

        async def models(_: web.Request) -> web.Response:
            return web.json_response({"data": [{"id": "qwen3-max"}]})

        async def new_chat(_: web.Request) -> web.Response:
            return web.json_response({"success": True, "data": {"id": "chat-1"}})

        async def completions(request: web.Request) -> web.StreamResponse:
            token = request.headers.get("Authorization", "").removeprefix("Bearer ")
            self.served.append(token)
            self.counts[token] += 1
            what = self.behaviour.get(token, "ok")
            if what == "hold":
                self.holding += 1
                self.arrived.set()
                await self._gate.wait()
            elif what == "captcha":
                return web.json_response(
                    {"ret": ["FAIL_SYS_USER_VALIDATE", "RGV587_ERROR::SM::busy"], "data": {}}
                )
            elif what != "ok":
                return web.json_response(
                    {
                        "success": False,
                        "request_id": "r-1",
                        "data": {"code": what, "details": f"fake {what}", **self.extra},
                    }
                )
            return web.Response(
                body=answer if self.body is None else self.body,
                headers={"Content-Type": "text/event-stream; charset=utf-8"},
            )

        app.router.add_get("/api/models", models)
        app.router.add_post("/api/v2/chats/new", new_chat)
        app.router.add_post("/api/v2/chat/completions", completions)
        return app
