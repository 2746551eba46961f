"""Work done once per event-loop iteration, for everything that asked for it in that iteration.

Bookkeeping that no answer waits for (the conversation entry of a finished answer, the
request's log line) costs measurably less CPU when the iteration's items are handled together,
in one pass at the end of the iteration, than one at a time in the middle of each request's
other work (bench/README.md, "2026-11-29, last round"): under load one iteration ends many
streams. The delay is one loop iteration; the items keep their order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

__all__ = ["IterationBatch"]


class IterationBatch[T]:
    """Items handed to ``handle`` together, at the end of the running loop's iteration.

    :meth:`add` keeps an item; the first item of an iteration schedules :meth:`flush`
    (``loop.call_soon``), which calls ``handle`` once with the iteration's items, in the order
    added. Without a running loop ``handle`` gets the item at once. :meth:`flush` may be called
    at any time (shutdown, or to keep the order with work done at once). ``handle`` should not
    raise: an exception it raises in the scheduled pass goes to the loop's exception handler.
    """

    __slots__ = ("_handle", "_items", "_loop")

    def __init__(self, handle: Callable[[list[T]], None]) -> None:
        self._handle = handle
        self._items: list[T] = []
        self._loop: asyncio.AbstractEventLoop | None = None  # where the pass is scheduled

    def __len__(self) -> int:
        return len(self._items)

    def add(self, item: T) -> None:
        """Handle ``item`` at the end of the loop's current iteration (at once without one;
        items left waiting by a loop that stopped are handled first)."""
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is None:
            self.flush()
            self._handle([item])
            return
        items = self._items
        if not items or loop is not self._loop:
            loop.call_soon(self.flush)
            self._loop = loop
        items.append(item)

    def flush(self) -> None:
        """Handle the items waiting, in the order they were added."""
        items = self._items
        if items:
            self._items = []
            self._handle(items)
