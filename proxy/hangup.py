"""Stop work for a client that hung up (the site's stop call: docs/protocol.md §13.1).

aiohttp does not cancel a handler when its client disconnects (``handler_cancellation`` is off
by default): a streamed answer notices only at its next write, a non-stream answer keeps reading
chat.qwen.ai to the end, and a silent upstream holds the connection until the read timeout.

:class:`HangupWatch` watches the client's connection while a handler runs (the app's front
middleware, :func:`proxy.app.gateway_middleware`, arms one per request): the app's
:class:`proxy.sweep.Sweeper` looks at the transport every tick (at most 0.25 s apart; no timer
or task per request, no work per chunk) and, once the client is gone, the watch cancels the
handler's task. The cancellation unwinds the handler like any ``CancelledError``: the upstream
response is released (its connection closed, never returned half-read to the pool), and
:class:`proxy.service.ChatService` sends the site's stop call for an unfinished answer
(docs/protocol.md §13.1).

A client that stays connected but stops reading is dropped the same way: once the answer's
bytes wait unsent in the connection's buffer (the kernel's is full) and that buffer has not
shrunk for ``write_timeout_s`` seconds, the watch closes the connection and cancels the
handler (logged as ``client_too_slow``). Otherwise such a client would hold its account's
answer slot, and the site's stream, for as long as it liked.
"""

from __future__ import annotations

import asyncio

import structlog
from aiohttp import web

from proxy.sweep import Sweeper

__all__ = ["HangupWatch"]

log = structlog.get_logger("proxy.hangup")


class HangupWatch:
    """Cancels ``task`` once ``request``'s client connection is gone, or once it has left the
    answer unread for ``stall_s`` seconds (then the connection is closed too), checked on each
    tick of ``sweeper`` until :meth:`disarm`. ``fired`` tells whether it cancelled the task,
    ``stalled`` whether that was for a client that stopped reading."""

    __slots__ = (
        "_pending",
        "_request",
        "_since",
        "_stall_s",
        "_sweeper",
        "_task",
        "fired",
        "stalled",
    )

    def __init__(
        self,
        request: web.Request,
        task: asyncio.Task[object],
        sweeper: Sweeper,
        stall_s: float,
    ) -> None:
        self._request = request
        self._task = task
        self._sweeper = sweeper
        self._stall_s = stall_s
        self._pending = 0  # the bytes waiting unsent at the last tick
        self._since: float | None = None  # since when they wait without the buffer shrinking
        self.fired = False
        self.stalled = False  # it fired because the client stopped reading
        sweeper.add(self)

    def check(self, now: float) -> bool:
        """The sweeper's tick: cancel the handler if its client is gone, or stalled (then stop
        watching)."""
        transport = self._request.transport
        if transport is None or transport.is_closing():
            self.fired = True
            self._task.cancel("client disconnected")
            return False
        pending = transport.get_write_buffer_size()
        if pending == 0:
            self._since = None
        elif self._since is None or pending < self._pending:  # began waiting, or it moved
            self._since = now
        elif now - self._since >= self._stall_s:
            log.info(
                "client_too_slow",
                during="answer",
                unsent_bytes=pending,
                timeout_s=self._stall_s,
            )
            self.fired = self.stalled = True
            transport.abort()
            self._task.cancel("client stopped reading")
            return False
        self._pending = pending
        return True

    def disarm(self) -> None:
        """Stop watching (the handler is done)."""
        self._sweeper.discard(self)
