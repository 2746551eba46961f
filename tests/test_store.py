"""The state store contract (proxy/store): every backend behaves the same.

The in-process backend runs on a fake clock; the Redis backend (tests/test_store_redis.py) runs
the same contract against a real redis-server.
"""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from proxy.app import make_app
from proxy.config import Settings
from proxy.state import STORE
from proxy.store import MemoryStore, StateStore


class FakeClock:
    """Epoch seconds that only move when told to."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(clock: FakeClock) -> MemoryStore:
    return MemoryStore(clock=clock, max_conversations=3, max_response_bytes=10)


def test_memory_store_is_a_state_store(store: MemoryStore) -> None:
    assert isinstance(store, StateStore)
    assert store.health() == "ok"


async def test_rests_end_and_only_a_longer_rest_replaces(
    store: MemoryStore, clock: FakeClock
) -> None:
    await store.rest_account("account-1", clock.now + 60, "quota reached")
    await store.rest_account("account-1", clock.now + 10, "ParallelLimited")
    assert await store.rests() == {"account-1": (clock.now + 60, "quota reached")}
    await store.rest_account("account-1", clock.now + 120, "captcha")
    assert (await store.rests())["account-1"][1] == "captcha"
    clock.advance(121)
    assert await store.rests() == {}


async def test_inflight_is_limited_and_never_negative(store: MemoryStore) -> None:
    assert await store.try_acquire_inflight("account-1", 2)
    assert await store.try_acquire_inflight("account-1", 2)
    assert not await store.try_acquire_inflight("account-1", 2)
    assert await store.inflight() == {"account-1": 2}
    await store.release_inflight("account-1")
    assert await store.try_acquire_inflight("account-1", 2)
    for _ in range(5):
        await store.release_inflight("account-1")
    assert (await store.inflight()).get("account-1", 0) == 0
    assert await store.try_acquire_inflight("account-1", 0)  # 0: no limit
    assert await store.try_acquire_inflight("account-1", 0)


async def test_conversations_expire_and_are_bounded(store: MemoryStore, clock: FakeClock) -> None:
    entry: dict[str, Any] = {"chat_id": "c1", "account": "account-1", "turn_hashes": ["h"]}
    await store.put_conversation("k1", entry, ttl_s=10)
    entry["chat_id"] = "mutated by the caller"
    assert (await store.get_conversation("k1") or {})["chat_id"] == "c1"
    clock.advance(11)
    assert await store.get_conversation("k1") is None
    for i in range(5):
        await store.put_conversation(f"k{i}", {"i": i}, ttl_s=100)
    assert await store.get_conversation("k0") is None  # beyond max_conversations=3
    assert await store.get_conversation("k4") == {"i": 4}
    await store.delete_conversation("k4")
    await store.delete_conversation("never-stored")
    assert await store.get_conversation("k4") is None


async def test_responses_expire_and_are_bounded_by_bytes(
    store: MemoryStore, clock: FakeClock
) -> None:
    await store.put_response("r1", b"12345", ttl_s=10)
    await store.put_response("r2", b"67890", ttl_s=10)
    assert await store.get_response("r1") == b"12345"
    await store.put_response("r3", b"abc", ttl_s=10)  # 13 bytes > 10: the oldest goes
    assert await store.get_response("r1") is None
    assert await store.get_response("r3") == b"abc"
    clock.advance(10)
    assert await store.get_response("r2") is None
    assert await store.get_response("unknown") is None


async def test_hit_rate_is_a_sliding_minute(store: MemoryStore, clock: FakeClock) -> None:
    assert await store.hit_rate("key-a", 2) is None
    clock.advance(20)
    assert await store.hit_rate("key-a", 2) is None
    wait = await store.hit_rate("key-a", 2)
    assert wait == pytest.approx(40.0)  # the first hit leaves the window 60 s after it came
    assert await store.hit_rate("key-b", 2) is None  # keys are counted apart
    clock.advance(40)
    assert await store.hit_rate("key-a", 2) is None
    assert await store.hit_rate("key-a", 2) == pytest.approx(20.0)
    assert await store.hit_rate("key-a", 0) is None  # 0: no limit


async def test_streams_per_key(store: MemoryStore) -> None:
    assert await store.try_acquire_stream("key-a", 1)
    assert not await store.try_acquire_stream("key-a", 1)
    assert await store.try_acquire_stream("key-b", 1)
    await store.release_stream("key-a")
    assert await store.try_acquire_stream("key-a", 1)


async def test_chat_bookkeeping(store: MemoryStore, clock: FakeClock) -> None:
    now = clock.now
    await store.track_chat("chat-1", "account-1", now + 30)
    await store.track_chat("chat-2", "account-2", now + 10)
    await store.track_chat("chat-3", "account-1", now + 20)
    await store.touch_chat("chat-3", now + 5)
    await store.touch_chat("untracked", now)
    assert await store.due_chats(now + 25, 10) == [("chat-3", "account-1"), ("chat-2", "account-2")]
    assert await store.due_chats(now + 25, 1) == [("chat-3", "account-1")]
    await store.forget_chat("chat-3")
    await store.forget_chat("untracked")
    assert await store.due_chats(now + 100, 10) == [
        ("chat-2", "account-2"),
        ("chat-1", "account-1"),
    ]


async def test_the_app_owns_one_store() -> None:
    app = make_app(Settings())
    async with TestClient(TestServer(app)) as client:
        store = client.app[STORE]
        assert isinstance(store, StateStore)
        assert store.health() == "ok"
        resp = await client.get("/healthz")
        assert resp.status == 200
