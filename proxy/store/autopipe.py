"""Automatic pipelining on one Redis connection: the calls made while a batch is out go together.

Every gateway request makes one Redis call on its way to the first token (and a share of one
after its answer). Through ``redis.asyncio.Redis`` each call is its own write, its own read and
its own lock turn: at 50 streams at once that cost about 100 us of CPU per call, as much as a
fifth of what relaying a whole answer costs. Here the calls queued while a batch is on the wire
leave as one write and their replies are read from one buffer, in order (Redis answers a
connection's commands in the order they arrive), at about 11 us per call at 50 streams at once
and no more than ``redis.asyncio`` at one (``bench/state_bench.py``).

The connection is redis-py's own (:class:`redis.asyncio.connection.AbstractConnection`: URL,
TLS, unix sockets, AUTH, SELECT), used through its public ``send_packed_command`` and
``read_response``; commands are encoded by ``hiredis.pack_command``.

Errors: a call's error reply is raised for that call alone (a
:class:`redis.exceptions.ResponseError`); a broken or timed-out connection fails every call of
the batch it was in with a :class:`redis.exceptions.RedisError` (the connection is dropped and
opened again for the next batch). A call whose waiter is cancelled still has its reply read, so
the connection never falls out of step. Nothing is retried: a command may have run.
"""

from __future__ import annotations

import asyncio
from typing import Any

import hiredis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError

__all__ = ["AutoPipeline"]

Arg = str | bytes | int | float


class AutoPipeline:
    """Send Redis commands over ``connection``, batching those made while a batch is out.

    :meth:`call` never blocks; its future resolves to the raw reply (``bytes``, ``int``,
    ``list``, ``None``…, as redis-py's parser gives it without decoding).
    """

    def __init__(self, connection: AbstractConnection) -> None:
        self._conn = connection
        self._queue: list[tuple[bytes, asyncio.Future[Any]]] = []
        self._task: asyncio.Task[None] | None = None

    def call(self, *args: Arg) -> asyncio.Future[Any]:
        """Queue one command (``"GET", key``…) for the next batch; the future of its reply.
        Raises :class:`TypeError` for an argument that is not str, bytes, int or float."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        # hiredis's stub types the tuple as one element; it takes any number
        self._queue.append((hiredis.pack_command(args), fut))  # type: ignore[arg-type]
        if self._task is None:
            self._task = loop.create_task(self._pump())
        return fut

    async def _pump(self) -> None:
        conn = self._conn
        try:
            while self._queue:
                batch = self._queue
                self._queue = []
                answered = 0
                try:
                    await conn.send_packed_command(
                        b"".join([packed for packed, _ in batch]), check_health=False
                    )
                    for _, fut in batch:
                        try:
                            reply = await conn.read_response()
                        except ResponseError as exc:  # this command's error reply only
                            answered += 1
                            if not fut.done():
                                fut.set_exception(exc)
                            continue
                        answered += 1
                        if not fut.done():
                            fut.set_result(reply)
                except BaseException as exc:
                    self._fail(batch[answered:], exc)
                    await conn.disconnect(nowait=True)
                    if not isinstance(exc, Exception):  # cancelled: nothing more is sent
                        self._fail(self._queue, exc)
                        self._queue = []
                        raise
        finally:
            self._task = None

    @staticmethod
    def _fail(calls: list[tuple[bytes, asyncio.Future[Any]]], exc: BaseException) -> None:
        for _, fut in calls:
            if fut.done():
                continue
            if isinstance(exc, RedisError | OSError):
                fut.set_exception(exc)
            else:  # cancelled, or a fault of the client: the callers see a Redis failure
                lost = RedisConnectionError(f"redis call lost ({type(exc).__name__})")
                lost.__cause__ = exc
                fut.set_exception(lost)

    async def close(self) -> None:
        """Let the batches already queued finish, then close the connection."""
        while self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        await self._conn.disconnect()
