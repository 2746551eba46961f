"""Stop work for a client that hung up (the site's stop call: docs/protocol.md §13.1).

aiohttp does not cancel a handler when its client disconnects (``handler_cancellation`` is off
by default): a streamed answer notices only at its next write, a non-stream answer keeps reading
chat.qwen.ai to the end, and a silent upstream holds the connection until the read timeout.

:class:`HangupWatch` watches the client's connection while a handler runs (the app's front
middleware, :func:`proxy.app.gateway_middleware`, arms one per request): a timer checks the
transport every :data:`POLL_S` seconds (no task per request, no work per chunk) and, once the
client is gone, cancels the handler's task. The cancellation unwinds the handler like any
``CancelledError``: the upstream response is released (its connection closed, never returned
half-read to the pool), and :class:`proxy.service.ChatService` sends the site's stop call for an
unfinished answer (docs/protocol.md §13.1).
"""

from __future__ import annotations

import asyncio

from aiohttp import web

__all__ = ["POLL_S", "HangupWatch"]

POLL_S = 0.25
"""Seconds between two checks of the client's connection (the upstream stops within this)."""


class HangupWatch:
    """Cancels ``task`` once ``request``'s client connection is gone.

    Polls with ``loop.call_later`` every ``interval`` seconds until :meth:`disarm`. ``fired``
    tells whether it cancelled the task.
    """

    __slots__ = ("_handle", "_interval", "_loop", "_request", "_task", "fired")

    def __init__(
        self, request: web.Request, task: asyncio.Task[object], *, interval: float = POLL_S
    ) -> None:
        self._request = request
        self._task = task
        self._interval = interval
        self._loop = asyncio.get_running_loop()
        self.fired = False
        self._handle: asyncio.TimerHandle | None = self._loop.call_later(interval, self._check)

    def _check(self) -> None:
        self._handle = None
        transport = self._request.transport
        if transport is None or transport.is_closing():
            self.fired = True
            self._task.cancel("client disconnected")
            return
        self._handle = self._loop.call_later(self._interval, self._check)

    def disarm(self) -> None:
        """Stop watching (the handler is done)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
