"""Automatic pipelining on one Redis connection (proxy/store/autopipe.py), on a real redis-server.

Concurrent calls share writes, each still gets its own reply in order; an error reply fails its
own call only; a waiter that leaves does not put the connection out of step; a dropped connection
fails its batch and the next call opens a new one; a Redis that lost the store's scripts (a
restart, ``SCRIPT FLUSH``) gets them again without the store going degraded.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import ConnectionPool, Redis
from redis.exceptions import RedisError, ResponseError

from proxy.store.autopipe import AutoPipeline
from proxy.store.redis import RedisStore


@pytest.fixture
async def pipe(redis_server: str) -> AsyncIterator[tuple[AutoPipeline, list[int]]]:
    """The pipeline and the sizes (in commands) of the writes it made."""
    pool = ConnectionPool.from_url(redis_server)
    conn = pool.make_connection()
    writes: list[int] = []
    real_send = conn.send_packed_command

    async def counting_send(command: Any, check_health: bool = True) -> None:
        if isinstance(command, bytes):  # the pipeline's (the handshake sends lists)
            writes.append(command.count(b"*"))  # one array header per command here
        await real_send(command, check_health)

    conn.send_packed_command = counting_send  # type: ignore[method-assign]
    p = AutoPipeline(conn)
    yield p, writes
    await p.close()
    await pool.aclose()


async def test_concurrent_calls_share_writes_and_get_their_own_replies(
    pipe: tuple[AutoPipeline, list[int]],
) -> None:
    p, writes = pipe
    key = f"t{uuid.uuid4().hex[:8]}:n"
    replies = await asyncio.gather(*(p.call("INCR", key) for _ in range(50)))
    assert replies == list(range(1, 51))  # Redis ran them in the order they were made
    assert sum(writes) == 50
    assert len(writes) < 50  # fewer writes than calls: the ones made meanwhile went together
    assert await p.call("GET", key) == b"50"


async def test_an_error_reply_fails_its_own_call_only(
    pipe: tuple[AutoPipeline, list[int]],
) -> None:
    p, _ = pipe
    key = f"t{uuid.uuid4().hex[:8]}:s"
    results = await asyncio.gather(
        p.call("SET", key, "text"),
        p.call("INCR", key),  # not a number: an error reply
        p.call("GET", key),
        return_exceptions=True,
    )
    assert results[0] == b"OK"
    assert isinstance(results[1], ResponseError)
    assert results[2] == b"text"


async def test_a_waiter_that_leaves_does_not_put_the_connection_out_of_step(
    pipe: tuple[AutoPipeline, list[int]],
) -> None:
    p, _ = pipe
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    await asyncio.gather(p.call("SET", prefix + "a", "A"), p.call("SET", prefix + "b", "B"))
    left = p.call("GET", prefix + "a")
    left.cancel()
    assert await p.call("GET", prefix + "b") == b"B"  # not A's reply
    assert await p.call("GET", prefix + "a") == b"A"


async def test_a_dropped_connection_fails_its_batch_and_the_next_call_reconnects(
    pipe: tuple[AutoPipeline, list[int]], redis_server: str
) -> None:
    p, _ = pipe
    client_id = await p.call("CLIENT", "ID")
    async with Redis.from_url(redis_server) as admin:
        assert await admin.client_kill_filter(_id=client_id) == 1
    with pytest.raises(RedisError):
        await p.call("PING")
    assert await p.call("PING") == b"PONG"
    assert await p.call("CLIENT", "ID") != client_id


async def test_scripts_lost_by_redis_are_sent_again(redis_server: str) -> None:
    store = RedisStore(redis_server, prefix=f"t{uuid.uuid4().hex[:8]}:")
    now = time.time()
    try:
        assert await store.acquire_account(["account-1"], 1, now) == ("account-1", 0.0)
        async with Redis.from_url(redis_server) as admin:
            await admin.script_flush()
        assert await store.acquire_account(["account-1"], 1, now) == (None, 0.0)  # from Redis
        assert store.health() == "ok"
        assert await store.inflight() == {"account-1": 1}
    finally:
        await store.close()
