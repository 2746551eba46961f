"""One timer for the watches of every request in flight, instead of timers per request.

Each stream used to arm three timers of its own (the client hang-up poll, the upstream read
watch, the deadline until the answer's headers); with uvloop a timer is a libuv handle made,
stopped and closed, and the three cost about as much CPU per stream as the log line
(bench/README.md, "2026-11-29, last round"). A :class:`Sweeper` instead ticks every
``interval`` seconds while it holds any watch and asks each one whether it still has something
to watch; per request, a watch is only added to and removed from a set. The request body's
deadline (:func:`proxy.guard.with_body_deadline`) was the last timer per request; it is a
:class:`Deadline` too, ended once the body is all in.

A watch (:class:`Watch`) fires late by at most ``interval`` (0.25 s by default, see
:func:`sweep_interval`): right for timeouts of seconds to minutes, which is what these are.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

import structlog

__all__ = ["Deadline", "Sweeper", "Watch", "sweep_interval"]

log = structlog.get_logger(__name__)

#: The longest tick (seconds): how late a client that hung up is noticed, at worst.
MAX_INTERVAL_S = 0.25


def sweep_interval(shortest_timeout_s: float) -> float:
    """The tick for a gateway whose shortest watched timeout is ``shortest_timeout_s`` seconds
    (the read or the body timeout): :data:`MAX_INTERVAL_S`, or a quarter of the timeout when
    that is shorter."""
    return min(MAX_INTERVAL_S, shortest_timeout_s / 4)


class Watch(Protocol):
    """What a :class:`Sweeper` watches."""

    def check(self, now: float) -> bool:
        """Look at what is watched at ``now`` (the loop's clock, seconds); act if it is due.
        Returns whether to keep watching."""
        ...


class Sweeper:
    """Calls :meth:`Watch.check` of each watch it holds every ``interval`` seconds.

    :meth:`add` starts the timer if it is not running; a tick re-arms it while watches remain
    and for ``linger`` ticks after the last one went (requests one after the other do not
    start a timer each), so an idle gateway has no timer. :meth:`discard` is a set removal (the
    timer is left to find the set empty). A watch whose ``check`` raises is logged and dropped.
    Lives in the app (one per event loop); :meth:`close` stops the timer.
    """

    __slots__ = ("_handle", "_idle", "_interval", "_linger", "_loop", "_watches")

    def __init__(self, interval: float = MAX_INTERVAL_S, *, linger: int = 8) -> None:
        if interval <= 0:
            raise ValueError("the sweep interval must be positive")
        self._interval = interval
        self._linger = linger
        self._idle = 0  # ticks in a row that found nothing to watch
        self._watches: set[Watch] = set()
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the timer's

    @property
    def interval(self) -> float:
        """Seconds between two ticks."""
        return self._interval

    def __len__(self) -> int:
        return len(self._watches)

    def add(self, watch: Watch) -> None:
        """Watch ``watch`` from the next tick on (the running loop's)."""
        self._watches.add(watch)
        loop = asyncio.get_running_loop()
        if self._handle is None or loop is not self._loop:  # (a loop that stopped took its timer)
            self._handle = loop.call_later(self._interval, self._tick)
            self._loop = loop

    def discard(self, watch: Watch) -> None:
        """Stop watching ``watch`` (nothing happens if it is not watched)."""
        self._watches.discard(watch)

    def close(self) -> None:
        """Stop the timer and forget every watch."""
        self._watches.clear()
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _tick(self) -> None:
        self._handle = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        watches = self._watches
        for watch in list(watches):  # a check may add or discard watches
            try:
                if watch.check(now):
                    continue
            except Exception:
                log.exception("watch_failed", watch=type(watch).__name__)
            watches.discard(watch)
        self._idle = 0 if watches else self._idle + 1
        if self._idle <= self._linger:
            self._handle = loop.call_later(self._interval, self._tick)


class Deadline:
    """``with Deadline(sweeper, seconds):`` like ``asyncio.timeout(seconds)``, on ``sweeper``'s
    ticks instead of a timer of its own: once ``seconds`` have passed (noticed on the next tick)
    the task is cancelled, and the block ends with :class:`TimeoutError` instead of the
    ``CancelledError`` (the cancellation withdrawn) unless the task is being cancelled for
    another reason too. ``fired`` tells whether the deadline passed. ``until``: a condition that
    ends the deadline early once it holds on a tick (the rest of the block then runs unbounded:
    the request body's deadline ends once the body is all in). Entering it outside a task
    raises :class:`RuntimeError`."""

    __slots__ = ("_at", "_cancelling", "_seconds", "_sweeper", "_task", "_until", "fired")

    _task: asyncio.Task[object]  # set, with _at and _cancelling, when the block is entered
    _at: float
    _cancelling: int

    def __init__(
        self, sweeper: Sweeper, seconds: float, *, until: Callable[[], bool] | None = None
    ) -> None:
        self._sweeper = sweeper
        self._seconds = seconds
        self._until = until
        self.fired = False

    def __enter__(self) -> Deadline:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("a Deadline is entered in a task")
        self._task = task
        self._cancelling = task.cancelling()
        self._at = asyncio.get_running_loop().time() + self._seconds
        self._sweeper.add(self)
        return self

    def __exit__(self, typ: object, exc: BaseException | None, _tb: object) -> None:
        self._sweeper.discard(self)
        if (
            typ is asyncio.CancelledError
            and self.fired
            and self._task.uncancel() <= self._cancelling
        ):
            raise TimeoutError from exc

    def check(self, now: float) -> bool:
        """The sweeper's tick: let go once ``until`` holds; cancel the task once the deadline
        passed (then let go)."""
        if self._until is not None and self._until():
            return False
        if now < self._at:
            return True
        self.fired = True
        self._task.cancel()
        return False
