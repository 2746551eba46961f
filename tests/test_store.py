"""The state store contract (proxy/store): every backend behaves the same.

Each contract test runs against the in-process backend and against :class:`RedisStore` on a real
redis-server (skipped where the binary is absent), both on a fake clock. Expiry by TTL in Redis
is Redis's own; for it the tests read the key's TTL instead of waiting.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import structlog
from aiohttp.test_utils import TestClient, TestServer
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from proxy.app import make_app
from proxy.config import Settings
from proxy.state import STORE
from proxy.store import MemoryStore, StateStore
from proxy.store.redis import RedisStore


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


@pytest.fixture(params=["memory", "redis"])
async def store(
    request: pytest.FixtureRequest, clock: FakeClock
) -> AsyncIterator[MemoryStore | RedisStore]:
    if request.param == "memory":
        yield MemoryStore(clock=clock, max_conversations=3, max_response_bytes=10)
        return
    url = request.getfixturevalue("redis_server")
    redis_store = RedisStore(url, prefix=f"t{uuid.uuid4().hex[:8]}:", clock=clock)
    assert await redis_store.ping()
    yield redis_store
    await redis_store.close()


@pytest.fixture
def memory(clock: FakeClock) -> MemoryStore:
    return MemoryStore(clock=clock, max_conversations=3, max_response_bytes=10)


def test_stores_are_state_stores(store: MemoryStore | RedisStore) -> None:
    assert isinstance(store, StateStore)
    assert store.health() == "ok"


async def test_rests_end_and_only_a_longer_rest_replaces(
    store: MemoryStore | RedisStore, clock: FakeClock
) -> None:
    await store.rest_account("account-1", clock.now + 60, "quota reached")
    await store.rest_account("account-1", clock.now + 10, "ParallelLimited")
    assert await store.rests() == {"account-1": (clock.now + 60, "quota reached")}
    await store.rest_account("account-1", clock.now + 120, "captcha")
    assert (await store.rests())["account-1"][1] == "captcha"
    clock.advance(121)
    assert await store.rests() == {}


async def test_inflight_is_limited_and_never_negative(store: MemoryStore | RedisStore) -> None:
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


async def test_conversations_round_trip(store: MemoryStore | RedisStore) -> None:
    entry: dict[str, Any] = {
        "chat_id": "c1",
        "account": "account-1",
        "parent_id": "r-9",
        "model": "qwen3-max",
        "turn_hashes": ["h1", "h2"],
        "updated": 1_800_000_000.5,
    }
    await store.put_conversation("k1", entry, ttl_s=10)
    stored = dict(entry)
    entry["chat_id"] = "mutated by the caller"
    got = await store.get_conversation("k1")
    assert got == stored
    assert got is not None
    got["chat_id"] = "mutated copy"
    assert await store.get_conversation("k1") == stored
    await store.delete_conversation("k1")
    await store.delete_conversation("never-stored")
    assert await store.get_conversation("k1") is None
    await store.put_response("r1", b"\x00bytes", ttl_s=10)
    assert await store.get_response("r1") == b"\x00bytes"
    assert await store.get_response("unknown") is None


async def test_memory_conversations_expire_and_are_bounded(
    memory: MemoryStore, clock: FakeClock
) -> None:
    await memory.put_conversation("k1", {"chat_id": "c1"}, ttl_s=10)
    clock.advance(11)
    assert await memory.get_conversation("k1") is None
    for i in range(5):
        await memory.put_conversation(f"k{i}", {"i": i}, ttl_s=100)
    assert await memory.get_conversation("k0") is None  # beyond max_conversations=3
    assert await memory.get_conversation("k4") == {"i": 4}


async def test_memory_responses_expire_and_are_bounded_by_bytes(
    memory: MemoryStore, clock: FakeClock
) -> None:
    await memory.put_response("r1", b"12345", ttl_s=10)
    await memory.put_response("r2", b"67890", ttl_s=10)
    assert await memory.get_response("r1") == b"12345"
    await memory.put_response("r3", b"abc", ttl_s=10)  # 13 bytes > 10: the oldest goes
    assert await memory.get_response("r1") is None
    assert await memory.get_response("r3") == b"abc"
    clock.advance(10)
    assert await memory.get_response("r2") is None


async def test_hit_rate_is_a_sliding_minute(
    store: MemoryStore | RedisStore, clock: FakeClock
) -> None:
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


async def test_streams_per_key(store: MemoryStore | RedisStore) -> None:
    assert await store.try_acquire_stream("key-a", 1)
    assert not await store.try_acquire_stream("key-a", 1)
    assert await store.try_acquire_stream("key-b", 1)
    await store.release_stream("key-a")
    assert await store.try_acquire_stream("key-a", 1)


async def test_chat_bookkeeping(store: MemoryStore | RedisStore, clock: FakeClock) -> None:
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


async def test_due_chats_can_be_claimed(store: MemoryStore | RedisStore, clock: FakeClock) -> None:
    """``claim_until`` moves the deadline of the chats returned, in the same step: the next
    read does not get them until then (a sweep elsewhere does not delete them too)."""
    now = clock.now
    await store.track_chat("chat-1", "account-1", now - 1)
    await store.track_chat("chat-2", "account-1", now + 50)
    assert await store.due_chats(now, 10, claim_until=now + 600) == [("chat-1", "account-1")]
    assert await store.due_chats(now + 100, 10) == [("chat-2", "account-1")]
    assert await store.due_chats(now + 600, 10) == [
        ("chat-2", "account-1"),
        ("chat-1", "account-1"),
    ]
    assert await store.due_chats(now + 600, 10) != []  # a read without a claim moves nothing


async def test_a_claim_is_seen_by_another_process(redis_server: str, clock: FakeClock) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    one = RedisStore(redis_server, prefix=prefix, clock=clock)
    two = RedisStore(redis_server, prefix=prefix, clock=clock)
    try:
        await one.track_chat("chat-1", "account-1", clock.now - 1)
        await one.flush()
        assert await two.due_chats(clock.now, 10, claim_until=clock.now + 600) == [
            ("chat-1", "account-1")
        ]
        assert await one.due_chats(clock.now, 10, claim_until=clock.now + 600) == []
    finally:
        await one.close()
        await two.close()


async def test_the_app_owns_one_store() -> None:
    app = make_app(Settings())
    async with TestClient(TestServer(app)) as client:
        store = client.app[STORE]
        assert isinstance(store, StateStore)
        assert store.health() == "ok"
        resp = await client.get("/healthz")
        assert resp.status == 200


async def test_acquire_account_takes_the_least_busy_non_resting(
    store: MemoryStore | RedisStore, clock: FakeClock
) -> None:
    labels = ["account-1", "account-2", "account-3"]
    now = clock.now
    await store.rest_account("account-1", now + 100, "captcha")
    assert await store.acquire_account(labels, 2, now) == ("account-2", 0.0)
    assert await store.acquire_account(labels, 2, now) == ("account-3", 0.0)
    assert await store.acquire_account(labels, 2, now) == ("account-2", 0.0)
    assert await store.acquire_account(labels, 2, now) == ("account-3", 0.0)
    assert await store.acquire_account(labels, 2, now) == (None, 0.0)  # busy, not resting
    assert await store.inflight() == {"account-2": 2, "account-3": 2}
    await store.release_inflight("account-3")
    assert await store.acquire_account(labels, 2, now) == ("account-3", 0.0)
    await store.rest_account("account-2", now + 50, "ParallelLimited")
    await store.rest_account("account-3", now + 70, "quota")
    assert await store.acquire_account(labels, 2, now) == (None, now + 50)
    clock.advance(101)
    assert await store.acquire_account(labels, 0, clock.now) == ("account-1", 0.0)


async def test_admit_key_counts_both_limits_at_once(
    store: MemoryStore | RedisStore, clock: FakeClock
) -> None:
    assert await store.admit_key("k", 3, 1) is None
    assert await store.admit_key("k", 3, 1) == ("streams", 1.0)  # not counted as a request
    await store.release_stream("k")
    assert await store.admit_key("k", 3, 1) is None
    await store.release_stream("k")
    clock.advance(30)
    assert await store.admit_key("k", 3, 0) is None
    refused = await store.admit_key("k", 3, 1)
    assert refused is not None
    assert refused[0] == "requests_per_minute"
    assert refused[1] == pytest.approx(30.0)
    assert await store.admit_key("k", 0, 0) is None


async def test_redis_entries_carry_their_ttl(redis_server: str, clock: FakeClock) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    store = RedisStore(redis_server, prefix=prefix, clock=clock)
    try:
        await store.put_conversation("k", {"chat_id": "c"}, ttl_s=30)
        await store.put_response("r", b"x", ttl_s=5)
        await store.flush()  # the conversation write waits for the next call or flush_s
        async with Redis.from_url(redis_server) as redis:  # a client of its own, to look
            conv_ttl = await redis.pttl(prefix + "conv:k")
            resp_ttl = await redis.pttl(prefix + "resp:r")
        assert 29_000 < conv_ttl <= 30_000
        assert 4_000 < resp_ttl <= 5_000
    finally:
        await store.close()


async def test_two_redis_stores_share_rests_and_slots(redis_server: str, clock: FakeClock) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    one = RedisStore(redis_server, prefix=prefix, clock=clock)
    two = RedisStore(redis_server, prefix=prefix, clock=clock)
    try:
        await one.rest_account("account-1", clock.now + 60, "ParallelLimited")
        assert (await two.rests())["account-1"] == (clock.now + 60, "ParallelLimited")
        assert await one.try_acquire_inflight("account-2", 1)
        assert not await two.try_acquire_inflight("account-2", 1)
        assert await two.acquire_account(["account-1", "account-2"], 1, clock.now) == (None, 0.0)
        await two.release_inflight("account-2")  # two holds no slot: nothing given back
        assert (await one.inflight()) == {"account-2": 1}
        await one.release_inflight("account-2")
        # the release travels with one's next call, or after flush_s: here, an explicit flush
        assert (await two.inflight()) == {"account-2": 1}
        await one.flush()
        assert await two.acquire_account(["account-1", "account-2"], 1, clock.now) == (
            "account-2",
            0.0,
        )
        assert await one.admit_key("key", 2, 0) is None
        assert await two.admit_key("key", 2, 0) is None
        assert (await one.admit_key("key", 2, 0) or ("", 0))[0] == "requests_per_minute"
    finally:
        await one.close()
        await two.close()


async def test_a_dead_process_does_not_hold_slots_forever(
    redis_server: str, clock: FakeClock
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    dead = RedisStore(redis_server, prefix=prefix, clock=clock, lease_ttl_s=60)
    alive = RedisStore(redis_server, prefix=prefix, clock=clock, lease_ttl_s=60)
    try:
        assert await dead.try_acquire_inflight("account-1", 1)
        assert await dead.admit_key("key", 0, 1) is None
        assert not await alive.try_acquire_inflight("account-1", 1)
        clock.advance(61)  # the dead process never gives its slots back
        assert await alive.try_acquire_inflight("account-1", 1)
        assert await alive.admit_key("key", 0, 1) is None
    finally:
        await dead.close()
        await alive.close()


async def test_unreachable_redis_serves_from_memory_and_logs_once_a_minute(
    clock: FakeClock,
) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    store = RedisStore(f"redis://:hunter2@127.0.0.1:{port}/0", clock=clock, retry_s=0)
    try:
        with structlog.testing.capture_logs() as logs:
            assert not await store.ping()
            assert store.health() == "degraded"
            assert await store.acquire_account(["account-1"], 1, clock.now) == ("account-1", 0.0)
            assert await store.acquire_account(["account-1"], 1, clock.now) == (None, 0.0)
            await store.release_inflight("account-1")
            assert await store.try_acquire_inflight("account-1", 1)
            await store.put_conversation("k", {"chat_id": "c"}, ttl_s=60)
            assert await store.get_conversation("k") == {"chat_id": "c"}
            await store.rest_account("account-1", clock.now + 5, "captcha")
            assert "account-1" in await store.rests()
            assert await store.admit_key("key", 1, 0) is None
            assert await store.admit_key("key", 1, 0) is not None
        lines = [e for e in logs if e["event"] == "redis_unreachable"]
        assert len(lines) == 1
        assert "hunter2" not in repr(logs)
        assert lines[0]["redis"] == f"127.0.0.1:{port}/0"
    finally:
        await store.close()


async def test_a_given_back_slot_reaches_redis_with_the_next_call_or_a_flush(
    redis_server: str, clock: FakeClock
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    one = RedisStore(redis_server, prefix=prefix, clock=clock, flush_s=0.01)
    two = RedisStore(redis_server, prefix=prefix, clock=clock)
    try:
        assert await one.acquire_account(["account-1"], 1, clock.now) == ("account-1", 0.0)
        await one.release_inflight("account-1")
        assert await one.acquire_account(["account-1"], 1, clock.now) == ("account-1", 0.0)
        await one.release_inflight("account-1")
        flushed = asyncio.get_running_loop().create_future()
        real_flush = one.flush

        async def spy() -> None:
            await real_flush()
            if not flushed.done():
                flushed.set_result(None)

        one.flush = spy  # type: ignore[method-assign]
        await asyncio.wait_for(flushed, 5)  # the timer flushes without any other call
        assert await two.inflight() == {}
        assert await two.acquire_account(["account-1"], 1, clock.now) == ("account-1", 0.0)
    finally:
        await one.close()
        await two.close()


async def test_admit_and_acquire_counts_only_what_reaches_an_account(
    store: MemoryStore | RedisStore, clock: FakeClock
) -> None:
    labels = ["account-1", "account-2"]
    now = clock.now
    assert await store.admit_and_acquire("k", 2, 1, labels, 1, now) == ("account-1", 0.0, None)
    refused = await store.admit_and_acquire("k", 2, 1, labels, 1, now)
    assert refused == (None, 0.0, ("streams", 1.0))
    await store.release_stream("k")
    assert await store.admit_and_acquire("k", 2, 1, labels, 1, now) == ("account-2", 0.0, None)
    await store.release_stream("k")
    # both accounts busy: no account, and the key's request is not counted
    assert await store.admit_and_acquire("k", 3, 0, labels, 1, now) == (None, 0.0, None)
    await store.release_inflight("account-1")
    label, _, none = await store.admit_and_acquire("k", 3, 0, labels, 1, now)
    assert (label, none) == ("account-1", None)
    label, _, refused = await store.admit_and_acquire("k", 3, 0, labels, 0, now)
    assert label is None
    assert refused is not None
    assert refused[0] == "requests_per_minute"
    assert refused[1] == pytest.approx(60.0)
    await store.rest_account("account-1", now + 9, "ParallelLimited")
    await store.rest_account("account-2", now + 5, "captcha")
    assert await store.admit_and_acquire("other", 0, 0, labels, 0, now) == (None, now + 5, None)


def _start_redis(port: int) -> subprocess.Popen[bytes]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (apt-get install -y redis-server)")
    return subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )


async def _until_up(store: RedisStore) -> None:
    for _ in range(500):  # readiness: the fresh server answers PING
        if await store.ping():
            return
        await asyncio.sleep(0.01)
    pytest.fail("redis-server did not come back")


async def test_the_store_goes_degraded_and_comes_back_with_redis(clock: FakeClock) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = _start_redis(port)
    store = RedisStore(f"redis://127.0.0.1:{port}/0", clock=clock, retry_s=0, prefix="rec:")
    try:
        with structlog.testing.capture_logs() as logs:
            await _until_up(store)
            await store.rest_account("account-1", clock.now + 60, "captcha")
            server.terminate()
            server.wait(timeout=10)
            assert await store.acquire_account(["account-2"], 1, clock.now) == ("account-2", 0.0)
            assert store.health() == "degraded"
            assert "account-1" in await store.rests()  # remembered in memory too
            server = _start_redis(port)
            await _until_up(store)
            assert store.health() == "ok"
            assert "account-1" not in await store.rests()  # Redis was restarted empty
        events = [e["event"] for e in logs]
        assert events.count("redis_unreachable") == 1  # one line a minute, however many calls
        assert events[-1] == "redis_recovered"
    finally:
        server.terminate()
        server.wait(timeout=10)
        await store.close()


@pytest.mark.parametrize("kind", ["account", "key"])
async def test_a_slot_taken_in_memory_during_an_outage_goes_back_first(
    clock: FakeClock, kind: str
) -> None:
    """A request that took its slot from memory while Redis was away, and ends once Redis is
    back, must not give back the Redis lease of another request still running: with a limit
    of 1 shared by two processes, the other process stays refused while that request runs
    (before, the newest lease went back, and the limit let a second answer through)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = _start_redis(port)
    here = RedisStore(f"redis://127.0.0.1:{port}/0", clock=clock, retry_s=0, timeout_s=0.2)
    there = RedisStore(f"redis://127.0.0.1:{port}/0", clock=clock, retry_s=0, timeout_s=0.2)

    async def take(store: RedisStore) -> bool:
        if kind == "account":
            return await store.try_acquire_inflight("account-1", 1)
        return await store.admit_key("key-1", 0, 1) is None

    async def give_back(store: RedisStore) -> None:
        if kind == "account":
            await store.release_inflight("account-1")
        else:
            await store.release_stream("key-1")

    try:
        await _until_up(here)
        await _until_up(there)
        server.send_signal(signal.SIGSTOP)  # Redis hangs: calls time out, memory serves
        try:
            assert await take(here)  # request A: a slot in memory
            assert here.health() == "degraded"
        finally:
            server.send_signal(signal.SIGCONT)
        await _until_up(here)
        assert await take(here)  # request B: the Redis lease
        await here.flush()
        assert not await take(there)  # the other process sees B's answer
        await give_back(here)  # A ends
        await here.flush()
        assert not await take(there), "B's lease went back while B runs"
        await give_back(here)  # B ends
        await here.flush()
        assert await take(there)
    finally:
        server.terminate()
        server.wait(timeout=10)
        await here.close()
        await there.close()


async def test_deferred_writes_are_read_back_at_once_and_reach_other_processes(
    redis_server: str, clock: FakeClock
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    one = RedisStore(redis_server, prefix=prefix, clock=clock)
    two = RedisStore(redis_server, prefix=prefix, clock=clock)
    try:
        await one.put_conversation("k", {"chat_id": "c1"}, ttl_s=60)
        assert await one.get_conversation("k") == {"chat_id": "c1"}  # its own write, at once
        await one.track_chat("chat-1", "account-1", clock.now - 1)
        # the writes ride on one's next script call
        assert await one.acquire_account(["account-1"], 0, clock.now) == ("account-1", 0.0)
        assert await two.get_conversation("k") == {"chat_id": "c1"}
        assert await two.due_chats(clock.now, 10) == [("chat-1", "account-1")]
        await one.delete_conversation("k")
        assert await one.get_conversation("k") is None
        await one.forget_chat("chat-1")
        await one.flush()
        assert await two.get_conversation("k") is None
        assert await two.due_chats(clock.now, 10) == []
        assert not one._overlay  # nothing left waiting
    finally:
        await one.close()
        await two.close()


async def test_a_cancelled_account_call_leaks_no_slot(redis_server: str, clock: FakeClock) -> None:
    """The client leaves while the account call is out: Redis took the slot, the answer never
    came back; the slot (and the key's stream slot) must still be given back."""
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    store = RedisStore(redis_server, prefix=prefix, clock=clock)
    real_script = store._script
    ran = asyncio.Event()
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def slow_reply(*args: Any) -> Any:
        out = await real_script(*args)  # Redis has run the script: the slot is taken
        ran.set()
        await never  # …but the reply is still on its way when the client leaves
        return out

    try:
        store._script = slow_reply  # type: ignore[method-assign]
        labels = ["account-1", "account-2"]
        call = asyncio.ensure_future(store.admit_and_acquire("k", 0, 1, labels, 1, clock.now))
        await asyncio.wait_for(ran.wait(), 5)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        store._script = real_script  # type: ignore[method-assign]
        await store.flush()
        assert await store.inflight() == {}
        assert await store.admit_and_acquire("k", 0, 1, ["account-1"], 1, clock.now) == (
            "account-1",
            0.0,
            None,
        )
    finally:
        never.cancel()
        await store.close()


async def test_a_lost_reply_leaks_no_slot(redis_server: str, clock: FakeClock) -> None:
    """Redis ran the account call but its reply was lost (a timeout, a dropped connection):
    the request is served from memory, and the slot Redis took is given back."""
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    store = RedisStore(redis_server, prefix=prefix, clock=clock, retry_s=0)
    real_script = store._script

    async def lost_reply(*args: Any) -> Any:
        await real_script(*args)  # Redis has run the script: the slot is taken
        raise RedisConnectionError("reply lost")

    try:
        store._script = lost_reply  # type: ignore[method-assign]
        labels = ["account-1", "account-2"]
        assert await store.admit_and_acquire("k", 0, 1, labels, 1, clock.now) == (
            "account-1",
            0.0,
            None,
        )
        assert await store.acquire_account(labels, 1, clock.now) == ("account-2", 0.0)
        assert store.health() == "degraded"  # both served from memory
        store._script = real_script  # type: ignore[method-assign]
        await store.release_inflight("account-1")
        await store.release_inflight("account-2")
        await store.release_stream("k")
        assert await store.ping()  # Redis answers again
        await store.flush()
        assert await store.inflight() == {}
        assert await store.admit_and_acquire("k", 0, 1, ["account-1"], 1, clock.now) == (
            "account-1",
            0.0,
            None,
        )
    finally:
        await store.close()
