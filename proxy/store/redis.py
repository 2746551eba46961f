"""The Redis :class:`~proxy.store.base.StateStore`: several gateway processes share one state.

Uses one connection of the ``redis`` package's asyncio client, pipelined automatically
(:mod:`proxy.store.autopipe`: the calls of concurrent requests share writes and reads). Every
update that reads then writes (rests, answer slots, per-key counters) is one Lua script, run by
its SHA1, so it is atomic across processes; the request path costs one call on its way to the
first token (key admission and account choice together). Slots (answers in flight, open
streams) are leases in sorted sets that expire after ``lease_ttl_s``, so a process that dies
does not hold them forever. Conversations and responses are plain keys with a TTL.

When Redis cannot be reached (refused, timed out, any ``RedisError``; a call is not retried,
since it may have run) the store serves from an embedded
:class:`~proxy.store.memory.MemoryStore`, reports ``degraded`` and logs at most one line per
minute; it tries Redis again after ``retry_s``. Slots taken in memory are given back in memory.
Not for Redis Cluster (scripts build key names).

Key layout (``prefix`` default ``qwen-gateway:``): ``rests`` (hash label -> "until|reason"),
``inflight:<label>`` and ``streams:<key_id>`` (zsets of leases), ``inflight-labels`` (set),
``rate:<key_id>`` (zset of hits), ``conv:<key>``, ``resp:<id>`` (strings with TTL), ``chats``
(zset chat_id -> deadline) and ``chat-accounts`` (hash chat_id -> label).
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NamedTuple, TypeVar
from urllib.parse import urlsplit

import orjson
import structlog
from redis.asyncio import ConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError

from proxy.store.autopipe import Arg, AutoPipeline
from proxy.store.base import Health
from proxy.store.memory import RATE_WINDOW_S, MemoryStore

__all__ = ["RedisStore"]

log = structlog.get_logger("proxy.store")

T = TypeVar("T")

#: The most slot releases kept while Redis is away (key/lease pairs, twice this many strings).
_MAX_PENDING = 2 * 10_000

_REST = """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur then
  local u = tonumber(string.match(cur, '^[^|]*'))
  if u and u >= tonumber(ARGV[2]) then return 0 end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. '|' .. ARGV[3])
return 1
"""

_RESTS = """
local all = redis.call('HGETALL', KEYS[1])
local now = tonumber(ARGV[1])
local out = {}
for i = 1, #all, 2 do
  local u = tonumber(string.match(all[i + 1], '^[^|]*')) or 0
  if u <= now then
    redis.call('HDEL', KEYS[1], all[i])
  else
    out[#out + 1] = all[i]
    out[#out + 1] = all[i + 1]
  end
end
return out
"""

# Writes nobody waits for are not a round trip of their own: slots given back (R), chat
# bookkeeping (T track, U touch, F forget) and conversation entries (C put, D delete) wait in the
# process and travel in front of its next script call, or within ``flush_s``. ARGV[1] = their
# count, ARGV[2] = the key prefix, ARGV[3] = the writes, 4 values each, joined by \x1f (one
# argument: each argument costs client CPU to encode); the script's own arguments follow, as A[1]…
_RELEASES = """
local n = tonumber(ARGV[1])
local p = ARGV[2]
local W = {}
if n > 0 then
  for w in string.gmatch(ARGV[3] .. '\\31', '(.-)\\31') do W[#W + 1] = w end
end
local i = 1
for _ = 1, n do
  local kind, x, y, z = W[i], W[i + 1], W[i + 2], W[i + 3]
  if kind == 'R' then
    redis.call('ZREM', x, y)
  elseif kind == 'T' then
    redis.call('ZADD', p .. 'chats', z, x)
    redis.call('HSET', p .. 'chat-accounts', x, y)
  elseif kind == 'U' then
    redis.call('ZADD', p .. 'chats', 'XX', z, x)
  elseif kind == 'F' then
    redis.call('ZREM', p .. 'chats', x)
    redis.call('HDEL', p .. 'chat-accounts', x)
  elseif kind == 'C' then
    redis.call('SET', p .. 'conv:' .. x, y, 'PX', z)
  elseif kind == 'D' then
    redis.call('DEL', p .. 'conv:' .. x)
  end
  i = i + 4
end
local A = {}
for j = 4, #ARGV do A[#A + 1] = ARGV[j] end
"""

_RELEASE = _RELEASES + "return n\n"


def _pick_account(first: int) -> str:
    """The Lua that picks the least busy account not resting among the labels ``A[first…]``
    (KEYS[1]: rests; ``A[6]``: in-flight key prefix; locals ``now`` and ``limit`` set). It sets
    ``best`` (``nil`` when none), ``soonest`` (the end of the shortest rest) and ``resting``."""
    return f"""
local best = nil
local bestn = 0
local soonest = 0
local resting = 0
for i = {first}, #A do
  local label = A[i]
  local rest = redis.call('HGET', KEYS[1], label)
  local u = 0
  if rest then u = tonumber(string.match(rest, '^[^|]*')) or 0 end
  if u > now then
    resting = resting + 1
    if soonest == 0 or u < soonest then soonest = u end
  else
    local key = A[6] .. label
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
    local n = redis.call('ZCARD', key)
    if (limit <= 0 or n < limit) and (best == nil or n < bestn) then
      best = label
      bestn = n
    end
  end
end
"""


# KEYS: zset, label registry set (or the zset again); ARGV: now, limit, deadline, lease, ttl_ms,
# label
_LEASE = (
    _RELEASES
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', A[1])
local limit = tonumber(A[2])
if limit > 0 and redis.call('ZCARD', KEYS[1]) >= limit then return 0 end
redis.call('ZADD', KEYS[1], A[3], A[4])
redis.call('PEXPIRE', KEYS[1], A[5])
if KEYS[2] ~= KEYS[1] then redis.call('SADD', KEYS[2], A[6]) end
return 1
"""
)

# KEYS: rests, label registry; ARGV: now, limit, deadline, lease, ttl_ms, inflight prefix, labels…
_ACQUIRE_ACCOUNT = (
    _RELEASES
    + """
local now = tonumber(A[1])
local limit = tonumber(A[2])
"""
    + _pick_account(7)
    + """
if best then
  local key = A[6] .. best
  redis.call('ZADD', key, A[3], A[4])
  redis.call('PEXPIRE', key, A[5])
  redis.call('SADD', KEYS[2], best)
  return {best, '0'}
end
if resting < #A - 6 then soonest = 0 end
return {'', tostring(soonest)}
"""
)

# KEYS: label registry; ARGV: now, inflight prefix
_INFLIGHT = (
    _RELEASES
    + """
local out = {}
for _, label in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local key = A[2] .. label
  redis.call('ZREMRANGEBYSCORE', key, '-inf', A[1])
  local n = redis.call('ZCARD', key)
  if n == 0 then
    redis.call('SREM', KEYS[1], label)
  else
    out[#out + 1] = label
    out[#out + 1] = n
  end
end
return out
"""
)

# KEYS: rate zset, streams zset; ARGV: now, per_min, streams, member, deadline, ttl_ms, window
_ADMIT = (
    _RELEASES
    + """
local now = tonumber(A[1])
local per_min = tonumber(A[2])
local streams = tonumber(A[3])
local window = tonumber(A[7])
if streams > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  if redis.call('ZCARD', KEYS[2]) >= streams then return {'streams', '1'} end
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if per_min > 0 then
  local n = redis.call('ZCARD', KEYS[1])
  if n >= per_min then
    local e = redis.call('ZRANGE', KEYS[1], n - per_min, n - per_min, 'WITHSCORES')
    return {'requests_per_minute', tostring(tonumber(e[2]) + window - now)}
  end
end
redis.call('ZADD', KEYS[1], now, A[4])
redis.call('PEXPIRE', KEYS[1], math.ceil(window * 1000) + 1000)
if streams > 0 then
  redis.call('ZADD', KEYS[2], A[5], A[4])
  redis.call('PEXPIRE', KEYS[2], A[6])
end
return {}
"""
)

# Key admission and account choice in one step. KEYS: rests, label registry, rate zset, streams
# zset; A: now, limit, deadline, lease, ttl_ms, inflight prefix, per_min, streams, window,
# labels… Returns {'!', limit name, wait} (refused; nothing counted), {label, '0'} (admitted,
# slot taken) or {'', soonest} (no account; nothing counted).
_ADMIT_ACQUIRE = (
    _RELEASES
    + """
local now = tonumber(A[1])
local limit = tonumber(A[2])
local per_min = tonumber(A[7])
local streams = tonumber(A[8])
local window = tonumber(A[9])
if streams > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
  if redis.call('ZCARD', KEYS[4]) >= streams then return {'!', 'streams', '1'} end
end
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - window)
if per_min > 0 then
  local n = redis.call('ZCARD', KEYS[3])
  if n >= per_min then
    local e = redis.call('ZRANGE', KEYS[3], n - per_min, n - per_min, 'WITHSCORES')
    return {'!', 'requests_per_minute', tostring(tonumber(e[2]) + window - now)}
  end
end
"""
    + _pick_account(10)
    + """
if not best then
  if resting < #A - 9 then soonest = 0 end
  return {'', tostring(soonest)}
end
local key = A[6] .. best
redis.call('ZADD', key, A[3], A[4])
redis.call('PEXPIRE', key, A[5])
redis.call('SADD', KEYS[2], best)
redis.call('ZADD', KEYS[3], now, A[4])
redis.call('PEXPIRE', KEYS[3], math.ceil(window * 1000) + 1000)
if streams > 0 then
  redis.call('ZADD', KEYS[4], A[3], A[4])
  redis.call('PEXPIRE', KEYS[4], A[5])
end
return {best, '0'}
"""
)

# KEYS: chats zset, chat-accounts hash; A: now, limit
_DUE = (
    _RELEASES
    + """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', A[1], 'LIMIT', 0, A[2])
local out = {}
for _, id in ipairs(ids) do
  if A[3] ~= '' then redis.call('ZADD', KEYS[1], 'XX', A[3], id) end
  out[#out + 1] = id
  out[#out + 1] = redis.call('HGET', KEYS[2], id) or ''
end
return out
"""
)


class _Script(NamedTuple):
    """A Lua script, run by its SHA1 (``EVALSHA``) and sent whole once Redis lacks it."""

    body: str
    sha: str

    @classmethod
    def of(cls, body: str) -> _Script:
        return cls(body, hashlib.sha1(body.encode()).hexdigest())


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _parse_rest(raw: Any) -> tuple[float, str]:
    until, _, reason = _s(raw).partition("|")
    return float(until), reason


def redacted_target(url: str) -> str:
    """``host:port/db`` of a Redis URL, without user or password (for logs and /healthz)."""
    parts = urlsplit(url)
    return f"{parts.hostname or '?'}:{parts.port or 6379}{parts.path or ''}"


class RedisStore:
    """:class:`~proxy.store.base.StateStore` on Redis, with an in-process fallback.

    ``url`` is a ``redis://`` / ``rediss://`` / ``unix://`` URL (it may hold a password; it is
    never logged). ``timeout_s`` bounds every connect and every reply (seconds); ``retry_s`` is how
    long the store serves from memory after a failure before it tries Redis again;
    ``lease_ttl_s`` is the longest an answer slot or stream slot is held; a slot given back
    travels with this process's next script call, or after ``flush_s`` seconds at the latest;
    ``clock`` returns epoch seconds.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "qwen-gateway:",
        timeout_s: float = 0.5,
        retry_s: float = 1.0,
        lease_ttl_s: float = 900.0,
        log_every_s: float = 60.0,
        flush_s: float = 0.05,
        clock: Callable[[], float] = time.time,
        fallback: MemoryStore | None = None,
    ) -> None:
        # One connection, pipelined (proxy/store/autopipe.py): the calls of concurrent requests
        # share its writes and reads. No retry: a failed call may have run; the store serves it
        # from memory instead.
        pool = ConnectionPool.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
        )
        self._pipe = AutoPipeline(pool.make_connection())  # the pool only builds it
        self.target = redacted_target(url)
        self._p = prefix
        self._retry_s = retry_s
        self._lease_ttl_s = lease_ttl_s
        self._log_every_s = log_every_s
        self._clock = clock
        self.memory = fallback or MemoryStore(clock=clock)
        self._down = False
        self._retry_at = 0.0
        self._logged_at = -1e18
        self._instance = uuid.uuid4().hex[:12]
        self._seq = itertools.count()
        # name -> the slots this process holds: (taken in Redis?, lease id), see _pop
        self._leases: dict[str, list[tuple[bool, str]]] = {}
        self._rest = _Script.of(_REST)
        self._rests = _Script.of(_RESTS)
        self._lease = _Script.of(_LEASE)
        self._acquire_account = _Script.of(_ACQUIRE_ACCOUNT)
        self._inflight = _Script.of(_INFLIGHT)
        self._admit = _Script.of(_ADMIT)
        self._due = _Script.of(_DUE)
        self._release = _Script.of(_RELEASE)
        self._admit_acquire = _Script.of(_ADMIT_ACQUIRE)
        self._flush_s = flush_s
        self._pending: list[str] = []  # kind, x, y, z per write not yet sent (see _RELEASES)
        self._seq_queued = 0  # writes queued so far
        self._seq_sent = 0
        # conversation writes not yet sent: key -> (write number, expiry (monotonic), entry or
        # None for a deletion), so this process reads its own writes at once
        self._overlay: dict[str, tuple[int, float, dict[str, Any] | None]] = {}
        self._flush_handle: asyncio.Handle | None = None
        self._flush_tasks: set[asyncio.Task[None]] = set()

    # -- plumbing --------------------------------------------------------------------------------

    async def _run(
        self, op: Callable[[], Awaitable[T]], fallback: Callable[[], Awaitable[T]]
    ) -> tuple[T, bool]:
        """``(result, from_redis)``: ``op`` against Redis, or ``fallback`` (memory) while it
        is unreachable."""
        if self._down and time.monotonic() < self._retry_at:
            return await fallback(), False
        try:
            result = await op()
        except (RedisError, OSError) as exc:
            self._mark_down(exc)
            return await fallback(), False
        if self._down:
            self._down = False
            log.warning("redis_recovered", redis=self.target)
        return result, True

    def _mark_down(self, exc: BaseException) -> None:
        self._down = True
        now = time.monotonic()
        self._retry_at = now + self._retry_s
        if now - self._logged_at >= self._log_every_s:
            self._logged_at = now
            log.warning(
                "redis_unreachable",
                redis=self.target,
                error=type(exc).__name__,
                serving="in-process state until Redis answers again",
            )

    async def ping(self) -> bool:
        """Check Redis now; True when it answered (also ends ``degraded``)."""
        _, ok = await self._run(self._ping, self._noop)
        return ok

    async def _ping(self) -> None:
        await self._pipe.call("PING")

    async def _noop(self) -> None:
        return None

    async def _eval(self, script: _Script, keys: list[str], args: list[Arg]) -> Any:
        """Run ``script`` (by SHA1; whole when Redis does not have it yet)."""
        try:
            return await self._pipe.call("EVALSHA", script.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await self._pipe.call("EVAL", script.body, len(keys), *keys, *args)

    async def _script(self, script: _Script, keys: list[str], args: list[Arg]) -> Any:
        """Run ``script`` with the pending writes in front of ``args`` (see ``_RELEASES``);
        they stay pending if the call fails."""
        writes = self._pending
        self._pending = []
        try:
            out = await self._eval(
                script, keys, [len(writes) // 4, self._p, "\x1f".join(writes), *args]
            )
        except BaseException:
            self._pending = writes + self._pending
            raise
        if writes and self._overlay:
            sent = self._seq_sent = self._seq_queued - len(self._pending) // 4
            self._overlay = {k: v for k, v in self._overlay.items() if v[0] > sent}
        return out

    def _defer(self, kind: str, x: str, y: str = "", z: str = "", *, urgent: bool = False) -> None:
        """Queue one write for the next script call, or the flush ``flush_s`` later; ``urgent``
        writes (conversations: another instance may get the next turn at once) are flushed on
        the next loop iteration instead, together with whatever else is queued."""
        self._pending += [kind, x, y, z]
        self._seq_queued += 1
        if len(self._pending) > _MAX_PENDING:  # Redis away for long: leases expire anyway
            dropped = (len(self._pending) - _MAX_PENDING) // 4
            del self._pending[: dropped * 4]
            gone = self._seq_queued - len(self._pending) // 4
            self._overlay = {k: v for k, v in self._overlay.items() if v[0] > gone}
        loop = asyncio.get_running_loop()
        if urgent:
            if self._flush_handle is not None:
                self._flush_handle.cancel()
            self._flush_handle = loop.call_soon(self._start_flush)
        elif self._flush_handle is None:
            self._flush_handle = loop.call_later(self._flush_s, self._start_flush)

    def _writes_go_to_memory(self) -> bool:
        """True while Redis is known to be away (writes then go to the embedded store)."""
        return self._down and time.monotonic() < self._retry_at

    def _start_flush(self) -> None:
        self._flush_handle = None
        if self._pending:
            task = asyncio.get_running_loop().create_task(self.flush())
            self._flush_tasks.add(task)
            task.add_done_callback(self._flush_tasks.discard)

    async def flush(self) -> None:
        """Send the pending writes now (one round trip; none if nothing waits)."""
        if not self._pending:
            return

        async def op() -> None:
            await self._script(self._release, [], [])

        await self._run(op, self._noop)
        if self._pending and self._flush_handle is None:  # Redis away: try again later
            self._flush_handle = asyncio.get_running_loop().call_later(
                max(self._flush_s, self._retry_s), self._start_flush
            )

    def _lease_id(self) -> str:
        return f"{self._instance}:{next(self._seq)}"

    def _push(self, name: str, in_redis: bool, lease: str) -> None:
        self._leases.setdefault(name, []).append((in_redis, lease))

    def _pop(self, name: str) -> tuple[bool, str] | None:
        """The slot to give back when one of this process's requests on ``name`` ends. A
        release does not say which request ended, so a slot taken in memory during an outage
        goes back first: a Redis lease is given back only once none is left in memory, and
        Redis never counts fewer answers than run (after an outage it may count one that ended,
        until this process's next release on ``name``: fewer admitted, never more)."""
        held = self._leases.get(name)
        if not held:
            return None
        for i in range(len(held) - 1, -1, -1):
            if not held[i][0]:
                item = held.pop(i)
                break
        else:
            item = held.pop()
        if not held:
            del self._leases[name]
        return item

    # -- accounts --------------------------------------------------------------------------------

    async def rest_account(self, label: str, until: float, reason: str) -> None:
        async def op() -> None:
            await self._eval(self._rest, [self._p + "rests"], [label, until, reason])

        await self.memory.rest_account(label, until, reason)  # kept for a later outage
        await self._run(op, self._noop)

    async def rests(self) -> dict[str, tuple[float, str]]:
        async def op() -> dict[str, tuple[float, str]]:
            flat = await self._eval(self._rests, [self._p + "rests"], [self._clock()])
            return {_s(flat[i]): _parse_rest(flat[i + 1]) for i in range(0, len(flat), 2)}

        result, _ = await self._run(op, self.memory.rests)
        return result

    async def try_acquire_inflight(self, label: str, limit: int) -> bool:
        lease = self._lease_id()
        now = self._clock()

        async def op() -> bool:
            ok = await self._script(
                self._lease,
                [self._p + "inflight:" + label, self._p + "inflight-labels"],
                [now, limit, now + self._lease_ttl_s, lease, self._ttl_ms, label],
            )
            return bool(ok)

        async def fb() -> bool:
            return await self.memory.try_acquire_inflight(label, limit)

        ok, in_redis = await self._run(op, fb)
        if ok:
            self._push("a:" + label, in_redis, lease)
        return ok

    async def release_inflight(self, label: str) -> None:
        item = self._pop("a:" + label)
        if item is None:
            return
        in_redis, lease = item
        if not in_redis:
            await self.memory.release_inflight(label)
            return

        self._defer("R", self._p + "inflight:" + label, lease)

    async def inflight(self) -> dict[str, int]:
        async def op() -> dict[str, int]:
            flat = await self._script(
                self._inflight,
                [self._p + "inflight-labels"],
                [self._clock(), self._p + "inflight:"],
            )
            return {_s(flat[i]): int(flat[i + 1]) for i in range(0, len(flat), 2)}

        result, _ = await self._run(op, self.memory.inflight)
        return result

    async def acquire_account(
        self, labels: Sequence[str], limit: int, now: float
    ) -> tuple[str | None, float]:
        lease = self._lease_id()

        async def op() -> tuple[str | None, float]:
            try:
                label, soonest = await self._script(
                    self._acquire_account,
                    [self._p + "rests", self._p + "inflight-labels"],
                    [*self._lease_args(now, limit, lease), *labels],
                )
            except (RedisError, OSError):  # it may have run: the fallback serves instead
                self._abandon(lease, labels)
                raise
            return (_s(label) or None), float(_s(soonest))

        async def fb() -> tuple[str | None, float]:
            return await self.memory.acquire_account(labels, limit, now)

        try:
            (label, soonest), in_redis = await self._run(op, fb)
        except asyncio.CancelledError:
            self._abandon(lease, labels)
            raise
        if label is not None:
            self._push("a:" + label, in_redis, lease)
        return label, soonest

    def _lease_args(self, now: float, limit: int, lease: str) -> list[Any]:
        """The arguments both account-choice scripts start with (the shared Lua fragment reads
        them): now, the per-account limit, the lease's expiry, the lease id, the key TTL in
        milliseconds and the prefix of the per-account lease sets."""
        return [now, limit, now + self._lease_ttl_s, lease, self._ttl_ms, self._p + "inflight:"]

    def _abandon(self, lease: str, labels: Sequence[str], key_id: str | None = None) -> None:
        """A call that may have taken ``lease`` was cancelled (the client left) or failed (a
        timeout, a lost connection: Redis may still have run it) before its answer came back:
        give the lease back wherever it may be, so no slot leaks."""
        for label in labels:
            self._defer("R", self._p + "inflight:" + label, lease)
        if key_id is not None:
            self._defer("R", self._p + "streams:" + key_id, lease)

    async def admit_and_acquire(
        self,
        key_id: str,
        per_min: int,
        streams: int,
        labels: Sequence[str],
        limit: int,
        now: float,
    ) -> tuple[str | None, float, tuple[str, float] | None]:
        lease = self._lease_id()

        async def op() -> tuple[str | None, float, tuple[str, float] | None]:
            try:
                out = await self._script(
                    self._admit_acquire,
                    [
                        self._p + "rests",
                        self._p + "inflight-labels",
                        self._p + "rate:" + key_id,
                        self._p + "streams:" + key_id,
                    ],
                    [
                        *self._lease_args(now, limit, lease),
                        per_min,
                        streams,
                        RATE_WINDOW_S,
                        *labels,
                    ],
                )
            except (RedisError, OSError):  # it may have run: the fallback serves instead
                self._abandon(lease, labels, key_id if streams > 0 else None)
                raise
            first = _s(out[0])
            if first == "!":
                return None, 0.0, (_s(out[1]), float(_s(out[2])))
            return (first or None), float(_s(out[1])), None

        async def fb() -> tuple[str | None, float, tuple[str, float] | None]:
            return await self.memory.admit_and_acquire(key_id, per_min, streams, labels, limit, now)

        try:
            (label, soonest, refused), in_redis = await self._run(op, fb)
        except asyncio.CancelledError:
            self._abandon(lease, labels, key_id if streams > 0 else None)
            raise
        if label is not None:
            self._push("a:" + label, in_redis, lease)
            if streams > 0:
                self._push("s:" + key_id, in_redis, lease)
        return label, soonest, refused

    @property
    def _ttl_ms(self) -> int:
        return int(self._lease_ttl_s * 1000) + 1000

    # -- conversations ---------------------------------------------------------------------------

    async def put_conversation(self, key: str, entry: dict[str, Any], ttl_s: float) -> None:
        if self._writes_go_to_memory():
            await self.memory.put_conversation(key, entry, ttl_s)
            return
        ttl_ms = max(1, int(ttl_s * 1000))
        self._defer("C", key, orjson.dumps(entry).decode(), str(ttl_ms), urgent=True)
        self._overlay[key] = (self._seq_queued, time.monotonic() + ttl_s, dict(entry))

    async def get_conversation(self, key: str) -> dict[str, Any] | None:
        local = self._overlay.get(key)
        if local is not None:  # written by this process, not yet in Redis
            _, expires, entry = local
            return dict(entry) if entry is not None and expires > time.monotonic() else None

        async def op() -> dict[str, Any] | None:
            raw = await self._pipe.call("GET", self._p + "conv:" + key)
            try:
                entry = None if raw is None else orjson.loads(raw)
            except orjson.JSONDecodeError:  # not ours (a foreign writer): as if absent
                return None
            return entry if isinstance(entry, dict) else None

        async def fb() -> dict[str, Any] | None:
            return await self.memory.get_conversation(key)

        result, _ = await self._run(op, fb)
        return result

    async def delete_conversation(self, key: str) -> None:
        await self.memory.delete_conversation(key)
        if self._writes_go_to_memory():
            return
        self._defer("D", key)
        self._overlay[key] = (self._seq_queued, time.monotonic() + 3600.0, None)

    # -- responses -------------------------------------------------------------------------------

    async def put_response(self, response_id: str, data: bytes, ttl_s: float) -> None:
        async def op() -> None:
            key = self._p + "resp:" + response_id
            await self._pipe.call("SET", key, data, "PX", max(1, int(ttl_s * 1000)))

        async def fb() -> None:
            await self.memory.put_response(response_id, data, ttl_s)

        await self._run(op, fb)

    async def get_response(self, response_id: str) -> bytes | None:
        async def op() -> bytes | None:
            raw = await self._pipe.call("GET", self._p + "resp:" + response_id)
            return None if raw is None else (raw if isinstance(raw, bytes) else raw.encode())

        async def fb() -> bytes | None:
            return await self.memory.get_response(response_id)

        result, _ = await self._run(op, fb)
        return result

    # -- per-key limits --------------------------------------------------------------------------

    async def admit_key(self, key_id: str, per_min: int, streams: int) -> tuple[str, float] | None:
        lease = self._lease_id()
        now = self._clock()

        async def op() -> tuple[str, float] | None:
            out = await self._script(
                self._admit,
                [self._p + "rate:" + key_id, self._p + "streams:" + key_id],
                [
                    now,
                    per_min,
                    streams,
                    lease,
                    now + self._lease_ttl_s,
                    self._ttl_ms,
                    RATE_WINDOW_S,
                ],
            )
            return (_s(out[0]), float(_s(out[1]))) if out else None

        async def fb() -> tuple[str, float] | None:
            return await self.memory.admit_key(key_id, per_min, streams)

        result, in_redis = await self._run(op, fb)
        if result is None and streams > 0:
            self._push("s:" + key_id, in_redis, lease)
        return result

    async def hit_rate(self, key_id: str, limit_per_min: int) -> float | None:
        result = await self.admit_key(key_id, limit_per_min, 0)
        return None if result is None else result[1]

    async def try_acquire_stream(self, key_id: str, limit: int) -> bool:
        lease = self._lease_id()
        now = self._clock()
        key = self._p + "streams:" + key_id

        async def op() -> bool:
            ok = await self._script(
                self._lease,
                [key, key],
                [now, limit, now + self._lease_ttl_s, lease, self._ttl_ms, ""],
            )
            return bool(ok)

        async def fb() -> bool:
            return await self.memory.try_acquire_stream(key_id, limit)

        ok, in_redis = await self._run(op, fb)
        if ok:
            self._push("s:" + key_id, in_redis, lease)
        return ok

    async def release_stream(self, key_id: str) -> None:
        item = self._pop("s:" + key_id)
        if item is None:
            return
        in_redis, lease = item
        if not in_redis:
            await self.memory.release_stream(key_id)
            return

        self._defer("R", self._p + "streams:" + key_id, lease)

    # -- chat cleanup ----------------------------------------------------------------------------

    async def track_chat(self, chat_id: str, account_label: str, idle_deadline: float) -> None:
        if self._writes_go_to_memory():
            await self.memory.track_chat(chat_id, account_label, idle_deadline)
        else:
            self._defer("T", chat_id, account_label, repr(idle_deadline))

    async def touch_chat(self, chat_id: str, idle_deadline: float) -> None:
        if self._writes_go_to_memory():
            await self.memory.touch_chat(chat_id, idle_deadline)
        else:
            self._defer("U", chat_id, "", repr(idle_deadline))

    async def due_chats(
        self, now: float, limit: int, claim_until: float | None = None
    ) -> list[tuple[str, str]]:
        async def op() -> list[tuple[str, str]]:
            flat = await self._script(
                self._due,
                [self._p + "chats", self._p + "chat-accounts"],
                [now, max(0, limit), "" if claim_until is None else repr(claim_until)],
            )
            return [(_s(flat[i]), _s(flat[i + 1])) for i in range(0, len(flat), 2)]

        async def fb() -> list[tuple[str, str]]:
            return await self.memory.due_chats(now, limit, claim_until)

        result, _ = await self._run(op, fb)
        return result

    async def forget_chat(self, chat_id: str) -> None:
        await self.memory.forget_chat(chat_id)
        if not self._writes_go_to_memory():
            self._defer("F", chat_id)

    # -- lifecycle -------------------------------------------------------------------------------

    def health(self) -> Health:
        return "degraded" if self._down else "ok"

    async def close(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        while self._flush_tasks:
            await asyncio.gather(*self._flush_tasks, return_exceptions=True)
        await self.flush()
        try:
            await self._pipe.close()
        except (RedisError, OSError):  # closing a broken connection: nothing left to do
            pass
