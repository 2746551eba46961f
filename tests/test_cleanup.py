"""Issue 9 §2: the gateway's chats do not pile up in the user's account.

The replay server remembers chats (``recorder.chats``): what the gateway creates, what it lists
and deletes. Each test drives the janitor directly with an explicit ``now`` (no waiting on its
timers), except the start-up reconciliation, which runs on its own.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import openai
import pytest
from aiohttp.test_utils import TestServer
from helpers import SCENARIO, Stack, cassettes, start_stack

from proxy.app import make_app
from proxy.cleanup import ChatJanitor, is_leftover, sweep_interval
from proxy.config import Settings
from proxy.state import JANITOR, SERVICE, STORE
from recorder.chats import PAGE_SIZE, ChatMemory
from recorder.replay import CHATS_KEY, make_replay_app

TOKEN = "tok-cleanup-secret-1"
TTL = 600.0
PROMPT = SCENARIO["t2t_answer"].prompt
ANSWER = SCENARIO["t2t_answer"].expected_content


async def ask(stack: Stack, prompt: str = PROMPT) -> str:
    async with stack.async_client() as client:
        done = await client.chat.completions.create(
            model="qwen3-max", messages=[{"role": "user", "content": prompt}]
        )
    return done.choices[0].message.content or ""


def memory(stack: Stack) -> ChatMemory:
    return stack.replay.app[CHATS_KEY]


async def cleaning_stack(aiohttp_server: Any, **settings: Any) -> Stack:
    base: dict[str, Any] = {
        "tokens": [TOKEN],
        "conversation_ttl_s": TTL,
        "chat_deletes_per_minute": 60_000,
        "chat_reconcile_interval_s": 0,
    }
    return await start_stack(aiohttp_server, **{**base, **settings})


async def test_idle_chats_are_deleted_with_their_account(aiohttp_server: Any, capsys: Any) -> None:
    stack = await cleaning_stack(aiohttp_server)
    assert await ask(stack) == ANSWER
    [chat] = memory(stack).live()
    assert chat.title == "qwen-gateway"
    janitor: ChatJanitor = stack.proxy.app[JANITOR]
    assert await janitor.sweep(now=time.time() + TTL / 2) == 0  # not idle long enough
    assert memory(stack).live() == [chat]
    assert await janitor.sweep(now=time.time() + TTL + 1) == 1
    assert memory(stack).live() == [] and memory(stack).deleted == [chat.id]
    [delete] = [r for r in stack.requests if r.method == "DELETE"]
    assert delete.path_qs == f"/api/v2/chats/{chat.id}"
    assert delete.headers["Authorization"] == f"Bearer {TOKEN}"
    assert await stack.proxy.app[STORE].due_chats(time.time() + 10 * TTL, 10) == []
    out = capsys.readouterr()
    assert "chat_deleted" in out.out and TOKEN not in out.out + out.err


async def test_a_continued_conversation_keeps_its_chat(aiohttp_server: Any) -> None:
    """Each turn moves the chat's deadline; an idle one is deleted after the last turn."""
    from recorder.synthetic_conversations import CONVERSATIONS

    conv = CONVERSATIONS[0]
    stack = await cleaning_stack(aiohttp_server)
    async with stack.async_client() as client:
        await client.chat.completions.create(model="qwen3-max", messages=conv.first_messages())  # type: ignore[arg-type]
        await stack.proxy.app[SERVICE].close()
        t_second = time.time()
        await client.chat.completions.create(model="qwen3-max", messages=conv.messages())  # type: ignore[arg-type]
    [chat] = memory(stack).live()
    janitor: ChatJanitor = stack.proxy.app[JANITOR]
    assert await janitor.sweep(now=t_second + TTL - 5) == 0
    assert await janitor.sweep(now=t_second + TTL + 5) == 1
    assert memory(stack).deleted == [chat.id]


async def test_the_reconciler_deletes_only_untracked_gateway_chats(aiohttp_server: Any) -> None:
    """Leftovers go; the user's chats, a live tracked chat and a just-made one stay."""
    stack = await cleaning_stack(aiohttp_server)
    assert await ask(stack) == ANSWER  # a live conversation: tracked
    [live] = memory(stack).live()
    chats = memory(stack)
    old = time.time() - 2 * TTL
    live.updated_at = old  # even an old-looking tracked chat is not a leftover
    own = chats.create(title="My holiday plans", chat_type="t2t", now=old, owner="user")
    own_prefixed = chats.create(title="qwen gateway notes", chat_type="t2t", now=old, owner="user")
    leftovers = [
        chats.create(title="qwen-gateway", chat_type="t2t", now=old) for _ in range(PAGE_SIZE + 3)
    ]
    just_made = chats.create(title="qwen-gateway", chat_type="t2t", now=time.time())
    janitor: ChatJanitor = stack.proxy.app[JANITOR]
    assert await janitor.reconcile() == len(leftovers)  # across two list pages
    assert {c.id for c in chats.live()} == {live.id, own.id, own_prefixed.id, just_made.id}
    lists = [r.path_qs for r in stack.requests if r.path_qs.startswith("/api/v2/chats/?")]
    assert lists[:2] == ["/api/v2/chats/?page=1", "/api/v2/chats/?page=2"]


async def test_a_restart_forgets_and_reconciles_earlier_chats(aiohttp_server: Any) -> None:
    """The in-process store forgets on restart: the next start deletes the earlier run's chats."""
    replay: TestServer = await aiohttp_server(make_replay_app(list(cassettes()), speed=0))
    url = str(replay.make_url("")).rstrip("/")
    options: dict[str, Any] = {
        "upstream_url": url,
        "tokens": [TOKEN],
        "chat_deletes_per_minute": 60_000,
        "chat_reconcile_interval_s": 0,
    }
    first = await aiohttp_server(make_app(Settings(**options)))
    async with openai.AsyncOpenAI(
        base_url=str(first.make_url("/v1")), api_key="k", max_retries=0
    ) as client:
        await client.chat.completions.create(
            model="qwen3-max", messages=[{"role": "user", "content": PROMPT}]
        )
    await first.close()
    chats = replay.app[CHATS_KEY]
    [earlier] = chats.live()
    earlier.updated_at -= 60  # a minute ago
    second = await aiohttp_server(make_app(Settings(**options)))
    assert await second.app[JANITOR].reconcile() == 1
    assert chats.deleted == [earlier.id]


async def test_no_reconciliation_while_the_shared_store_is_unreachable(
    aiohttp_server: Any,
) -> None:
    """With Redis away, the store answers from this process's memory, which does not know the
    chats other instances track: nothing is deleted as a leftover then (their live chats would
    be), and the next reconciliation with Redis back does the work."""
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    stack = await cleaning_stack(
        aiohttp_server, redis_url=f"redis://127.0.0.1:{port}/0", redis_timeout_s=0.2
    )
    chats = memory(stack)
    other_instances = chats.create(title="qwen-gateway", chat_type="t2t", now=time.time() - 60)
    janitor: ChatJanitor = stack.proxy.app[JANITOR]
    store = stack.proxy.app[STORE]
    await store.ping()
    assert store.health() == "degraded"
    assert await janitor.reconcile() == 0
    assert [c.id for c in chats.live()] == [other_instances.id]
    assert not [r for r in stack.requests if r.method == "DELETE"]
    assert not [r for r in stack.requests if r.path_qs.startswith("/api/v2/chats/?")]


async def test_with_redis_an_untracked_chat_is_a_leftover_once_idle_for_the_ttl(
    aiohttp_server: Any, redis_server: str
) -> None:
    """A Redis restarted empty forgets the chats live instances track: with shared state, an
    untracked gateway chat is deleted only once idle for ``conversation_ttl_s`` (a chat in use
    was updated within it), not after the few seconds of grace the in-process store gets."""
    stack = await cleaning_stack(
        aiohttp_server, redis_url=redis_server, redis_prefix=f"t{time.monotonic_ns()}:"
    )
    chats = memory(stack)
    in_use = chats.create(title="qwen-gateway", chat_type="t2t", now=time.time() - 60)
    idle = chats.create(title="qwen-gateway", chat_type="t2t", now=time.time() - TTL - 60)
    assert await stack.proxy.app[JANITOR].reconcile() == 1
    assert [c.id for c in chats.live()] == [in_use.id] and chats.deleted == [idle.id]


async def test_sweeps_at_once_delete_a_chat_once(aiohttp_server: Any) -> None:
    """A sweep claims the chats it takes: two sweeps at the same time (two instances sharing
    Redis, here two in one process) delete each chat once."""
    stack = await cleaning_stack(aiohttp_server)
    assert await ask(stack) == ANSWER
    janitor: ChatJanitor = stack.proxy.app[JANITOR]
    later = time.time() + TTL + 1
    done = await asyncio.gather(janitor.sweep(now=later), janitor.sweep(now=later))
    assert sorted(done) == [0, 1]
    assert len([r for r in stack.requests if r.method == "DELETE"]) == 1


async def test_a_store_lost_while_listing_deletes_nothing(
    aiohttp_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis lost between the health check and the read of the tracked chats: that read came
    from memory alone, so the listed chats are not judged."""
    stack = await cleaning_stack(aiohttp_server)
    chats = memory(stack)
    chats.create(title="qwen-gateway", chat_type="t2t", now=time.time() - 60)
    store = stack.proxy.app[STORE]
    answers = iter(["ok"])
    monkeypatch.setattr(store, "health", lambda: next(answers, "degraded"))
    assert await stack.proxy.app[JANITOR].reconcile() == 0
    assert [r for r in stack.requests if r.path_qs.startswith("/api/v2/chats/?")]  # listed
    assert not [r for r in stack.requests if r.method == "DELETE"] and len(chats.live()) == 1


async def test_reconciliation_runs_at_start_up(aiohttp_server: Any) -> None:
    replay: TestServer = await aiohttp_server(make_replay_app(list(cassettes()), speed=0))
    chats = replay.app[CHATS_KEY]
    leftover = chats.create(title="qwen-gateway", chat_type="t2t", now=time.time() - 2 * TTL)
    own = chats.create(title="Recipes", chat_type="t2t", now=time.time() - 2 * TTL, owner="user")
    settings = Settings(
        upstream_url=str(replay.make_url("")).rstrip("/"),
        tokens=[TOKEN],
        conversation_ttl_s=TTL,
        chat_deletes_per_minute=60_000,
    )
    await aiohttp_server(make_app(settings))
    deadline = time.monotonic() + 10
    while chats.deleted != [leftover.id]:
        assert time.monotonic() < deadline, "the start-up reconciliation did not run"
        await asyncio.sleep(0.02)
    assert [c.id for c in chats.live()] == [own.id]


async def test_deletions_are_rate_limited(aiohttp_server: Any) -> None:
    stack = await cleaning_stack(aiohttp_server, chat_deletes_per_minute=600)  # 0.1 s apart
    chats = memory(stack)
    for _ in range(4):
        chats.create(title="qwen-gateway", chat_type="t2t", now=time.time() - 2 * TTL)
    janitor = ChatJanitor(stack.proxy.app[SERVICE])
    t0 = time.monotonic()
    assert await janitor.reconcile() == 4
    assert time.monotonic() - t0 >= 0.1 * 4  # one list page + four deletions, spaced


async def test_keep_mode_tracks_and_deletes_nothing(aiohttp_server: Any) -> None:
    stack = await cleaning_stack(aiohttp_server, chat_cleanup="keep")
    assert await ask(stack) == ANSWER
    assert JANITOR not in stack.proxy.app
    assert await stack.proxy.app[STORE].due_chats(time.time() + 10 * TTL, 10) == []
    assert len(memory(stack).live()) == 1


async def test_without_tokens_nothing_is_tracked(aiohttp_server: Any) -> None:
    """Guest/offline use has no chat list: no janitor, no bookkeeping."""
    stack = await start_stack(aiohttp_server)
    assert await ask(stack) == ANSWER
    assert JANITOR not in stack.proxy.app
    assert await stack.proxy.app[STORE].due_chats(time.time() + 10 * TTL, 10) == []


async def test_temporary_mode_asks_for_local_chats(aiohttp_server: Any) -> None:
    stack = await cleaning_stack(aiohttp_server, chat_cleanup="temporary")
    assert await ask(stack) == ANSWER
    [new] = stack.upstream("/api/v2/chats/new")
    [turn] = stack.upstream("/api/v2/chat/completions")
    assert json.loads(new.body)["chat_mode"] == "local"
    assert json.loads(turn.body)["chat_mode"] == "local"
    assert JANITOR not in stack.proxy.app


async def test_a_chat_of_a_removed_account_is_forgotten(aiohttp_server: Any) -> None:
    stack = await cleaning_stack(aiohttp_server)
    store = stack.proxy.app[STORE]
    await store.track_chat("chat-of-account-9", "account-9", time.time() - 1)
    assert await stack.proxy.app[JANITOR].sweep() == 0
    assert await store.due_chats(time.time() + 10 * TTL, 10) == []
    assert not [r for r in stack.requests if r.method == "DELETE"]


NOW = 1_795_000_000.0


@pytest.mark.parametrize(
    ("chat", "expected"),
    [
        ({"id": "a", "title": "qwen-gateway", "updated_at": NOW - 6}, True),
        ({"id": "a", "title": "qwen-gateway", "updated_at": NOW - 1}, False),  # just made
        ({"id": "t", "title": "qwen-gateway", "updated_at": NOW - 9999}, False),  # tracked
        ({"id": "a", "title": "qwen-gateway", "created_at": NOW - 6}, True),
        ({"id": "a", "title": "qwen-gateway", "updated_at": (NOW - 6) * 1000}, True),  # ms
        ({"id": "a", "title": "qwen-gateway", "updated_at": (NOW - 1) * 1000}, False),
        ({"id": "a", "title": "qwen-gateway (2)", "updated_at": 0}, True),
        ({"id": "a", "title": "qwen-gateway"}, True),  # no timestamps: only the title counts
        ({"id": "a", "title": "Other", "updated_at": 0}, False),
        ({"id": "a", "title": "my qwen-gateway", "updated_at": 0}, False),
        ({"title": "qwen-gateway", "updated_at": 0}, False),
        ({"id": "a", "title": None, "updated_at": 0}, False),
    ],
)
def test_is_leftover(chat: dict[str, Any], expected: bool) -> None:
    assert is_leftover(chat, "qwen-gateway", now=NOW, tracked={"t"}) is expected


def test_sweeps_follow_the_idle_time() -> None:
    assert sweep_interval(3600) == 30 and sweep_interval(4) == 1 and sweep_interval(0.1) == 0.5
