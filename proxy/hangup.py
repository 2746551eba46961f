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
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from proxy.sweep import Sweeper

__all__ = ["HangupWatch"]


class HangupWatch:
    """Cancels ``task`` once ``request``'s client connection is gone, checked on each tick of
    ``sweeper`` until :meth:`disarm`. ``fired`` tells whether it cancelled the task."""

    __slots__ = ("_request", "_sweeper", "_task", "fired")

    def __init__(self, request: web.Request, task: asyncio.Task[object], sweeper: Sweeper) -> None:
        self._request = request
        self._task = task
        self._sweeper = sweeper
        self.fired = False
        sweeper.add(self)

    def check(self, now: float) -> bool:
        """The sweeper's tick: cancel the handler if its client is gone (then stop watching)."""
        transport = self._request.transport
        if transport is None or transport.is_closing():
            self.fired = True
            self._task.cancel("client disconnected")
            return False
        return True

    def disarm(self) -> None:
        """Stop watching (the handler is done)."""
        self._sweeper.discard(self)
