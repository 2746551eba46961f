"""Issue 9 with Redis: several gateways behave as one for conversations and chat cleanup.

Two gateway apps (each with its own :class:`~proxy.store.redis.RedisStore`) share one real
``redis-server`` (the ``redis_server`` fixture) and one replay server that remembers its chats.
Each test uses its own Redis key prefix.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp.test_utils import TestServer
from helpers import cassettes

from proxy.app import make_app
from proxy.cleanup import ChatJanitor
from proxy.config import Settings
from proxy.continuation import Plan, plan, scope_of
from proxy.frontdoors.openai_chat import parse_chat
from proxy.state import JANITOR, SERVICE, STORE
from recorder.replay import CHATS_KEY, REQUESTS_KEY, make_replay_app
from recorder.synthetic_conversations import CONVERSATIONS, response_id

TOKEN = "tok-redis-conversations-1"
CONV = CONVERSATIONS[1]  # under a system prompt


class Pair:
    def __init__(self, replay: TestServer, a: TestServer, b: TestServer) -> None:
        self.replay, self.a, self.b = replay, a, b

    def completions(self) -> list[dict[str, Any]]:
        return [
            json.loads(r.body)
            for r in self.replay.app[REQUESTS_KEY]
            if r.path_qs.startswith("/api/v2/chat/completions?")
        ]

    def chats_new(self) -> int:
        return sum(r.path_qs == "/api/v2/chats/new" for r in self.replay.app[REQUESTS_KEY])


async def pair(aiohttp_server: Any, redis_url: str, **a_settings: Any) -> Pair:
    """Two gateways sharing ``redis_url``; ``a_settings`` are extra settings of the first."""
    replay: TestServer = await aiohttp_server(make_replay_app(list(cassettes()), speed=0))
    options: dict[str, Any] = {
        "upstream_url": str(replay.make_url("")).rstrip("/"),
        "redis_url": redis_url,
        "redis_prefix": f"t{uuid.uuid4().hex[:10]}:",
        "tokens": [TOKEN],
        "chat_deletes_per_minute": 60_000,
        "chat_reconcile_interval_s": 0,
    }
    a = await aiohttp_server(make_app(Settings(**options, **a_settings)))
    b = await aiohttp_server(make_app(Settings(**options)))
    return Pair(replay, a, b)


def plan_of(messages: list[dict[str, str]]) -> Plan:
    conv = parse_chat(json.dumps({"model": "qwen3-max", "messages": messages}).encode())
    return plan(conv.turns, scope_of({"Authorization": "Bearer client-1"}))


async def until(probe: Callable[[], Awaitable[Any]], what: str, limit_s: float = 5.0) -> None:
    """Wait until ``probe()`` gives something truthy (Redis write-behind), at most ``limit_s``."""
    deadline = time.monotonic() + limit_s
    while not await probe():
        assert time.monotonic() < deadline, f"{what} never became visible"
        await asyncio.sleep(0.01)


async def ask(server: TestServer, messages: list[dict[str, str]]) -> str:
    import openai

    async with openai.AsyncOpenAI(
        base_url=str(server.make_url("/v1")), api_key="client-1", max_retries=0
    ) as client:
        done = await client.chat.completions.create(model="qwen3-max", messages=messages)  # type: ignore[arg-type]
    await server.app[SERVICE].close()  # the conversation entry is written
    return done.choices[0].message.content or ""


async def test_a_conversation_started_on_one_gateway_continues_on_the_other(
    aiohttp_server: Any, redis_server: str
) -> None:
    p = await pair(aiohttp_server, redis_server)
    assert await ask(p.a, CONV.first_messages()) == "".join(CONV.answer1)
    # A's writes reach Redis within its write-behind delay (<= 50 ms): wait until B sees them
    key = plan_of(CONV.messages()).key
    assert key is not None
    await until(lambda: p.b.app[STORE].get_conversation(key), "A's conversation entry")
    assert await ask(p.b, CONV.messages()) == "".join(CONV.answer2)
    first, second = p.completions()
    assert p.chats_new() == 1
    assert second["chat_id"] == first["chat_id"]
    assert second["parent_id"] == response_id(CONV, "1")
    assert second["messages"][0]["content"] == CONV.user2


async def test_a_chat_made_by_one_gateway_is_deleted_by_the_other(
    aiohttp_server: Any, redis_server: str
) -> None:
    p = await pair(aiohttp_server, redis_server)
    await ask(p.a, CONV.first_messages())
    chats = p.replay.app[CHATS_KEY]
    [chat] = chats.live()
    chat.updated_at -= 3600  # looks old: only the shared bookkeeping keeps it alive

    async def tracked() -> bool:
        return chat.id in {c for c, _ in await p.b.app[STORE].due_chats(1e18, 100)}

    await until(tracked, "A's chat bookkeeping")
    janitor_b: ChatJanitor = p.b.app[JANITOR]
    assert await janitor_b.reconcile() == 0  # tracked by gateway A: not a leftover
    assert await janitor_b.sweep(now=time.time() + 3600 + 1) == 1
    assert chats.deleted == [chat.id]
    await p.a.app[JANITOR].sweep(now=time.time() + 3600 + 1)  # A finds it gone at most
    assert chats.deleted == [chat.id]


async def test_a_spare_chat_of_one_gateway_is_not_a_leftover_for_the_other(
    aiohttp_server: Any, redis_server: str
) -> None:
    """With ``spare_chats``, the chat made ahead is tracked in the shared store from the
    start: the other gateway's reconciler leaves it alone; its own gateway deletes it at
    shutdown and forgets it."""
    p = await pair(aiohttp_server, redis_server, spare_chats=True)
    a, b, replay = p.a, p.b, p.replay
    import openai

    async with openai.AsyncOpenAI(
        base_url=str(a.make_url("/v1")), api_key="client-1", max_retries=0
    ) as client:
        await client.chat.completions.create(model="qwen3-max", messages=CONV.first_messages())  # type: ignore[arg-type]
    await a.app[SERVICE].settle()  # the spare is made
    chats = replay.app[CHATS_KEY]
    live = {c.id for c in chats.live()}
    assert len(live) == 3  # the conversation's chat and two spares

    async def tracked() -> bool:
        return live <= {c for c, _ in await b.app[STORE].due_chats(1e18, 100)}

    await until(tracked, "A's chats in the shared bookkeeping")
    for chat in chats.live():
        chat.updated_at -= 3600
    assert await b.app[JANITOR].reconcile() == 0  # both tracked by A: not leftovers
    assert chats.deleted == []
    await a.app[SERVICE].close()  # shutdown: the unused spares are deleted and forgotten
    spares = set(chats.deleted)
    assert len(spares) == 2 and {c.id for c in chats.live()} == live - spares

    async def forgotten() -> bool:
        return not spares & {c for c, _ in await b.app[STORE].due_chats(1e18, 100)}

    await until(forgotten, "the deleted spares leaving the bookkeeping")
