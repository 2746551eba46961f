"""Front doors: one adapter per client API over the one core.

Each front door (``openai_chat``, and the Anthropic and Responses ones) provides, purely:
request body -> :class:`proxy.conversation.Conversation`; a stream renderer and a body renderer
for the translator's events (the protocols in :mod:`proxy.relay`); and an error renderer that
maps the proxy's one exception tree (:mod:`proxy.errors`) to that API's error shape. The thin
aiohttp handlers live in :mod:`proxy.routes`.

:class:`FrontDoor` is what the app's error middleware needs to know about a request's API: the
handler sets it per request (``proxy.state.FRONT_DOOR``), or the app maps the route's path to it
(``proxy.state.FRONT_DOORS``); requests of neither kind get OpenAI error objects.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from proxy.errors import ProxyError, to_openai

__all__ = ["OPENAI", "ErrorRenderer", "FrontDoor", "door_for_path"]

ErrorRenderer = Callable[[ProxyError], tuple[int, dict[str, str], dict[str, Any]]]
"""``exc -> (HTTP status, extra headers, JSON body)`` in one API's error shape."""


@dataclass(frozen=True, slots=True)
class FrontDoor:
    """One client API: its ``name`` (for logs) and its :data:`ErrorRenderer`."""

    name: str
    render_error: ErrorRenderer


OPENAI = FrontDoor("openai", to_openai)
"""The OpenAI APIs (chat completions, images, videos, models): ``{"error": {...}}`` objects."""


def door_for_path(doors: Mapping[str, FrontDoor], path: str) -> FrontDoor | None:
    """The front door registered for ``path`` or for a path it lies under (``doors``: route
    path -> front door, :data:`proxy.state.FRONT_DOORS`), ``None`` when none is."""
    path = path.rstrip("/")
    found = doors.get(path)
    if found is not None:
        return found
    for prefix, door in doors.items():
        prefix = prefix.rstrip("/")
        if path == prefix or path.startswith(prefix + "/"):
            return door
    return None
