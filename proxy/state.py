"""Typed application state keys (aiohttp ``web.AppKey``), shared by the app and its routes."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from aiohttp import web

from proxy.cleanup import ChatJanitor
from proxy.config import Settings
from proxy.errors import ProxyError
from proxy.frontdoors import FrontDoor
from proxy.metrics import Metrics
from proxy.secrets import SecretMasker
from proxy.service import ChatService
from proxy.store import StateStore
from proxy.sweep import Sweeper
from proxy.tools.stage import ToolCounters

__all__ = [
    "FRONT_DOOR",
    "FRONT_DOORS",
    "JANITOR",
    "KEY_RULE",
    "LOGGED",
    "MASKER",
    "METRICS",
    "RESPONSES_IN_FLIGHT",
    "SERVICE",
    "SETTINGS",
    "START_KEY",
    "STORE",
    "SWEEPER",
    "TOOL_COUNTERS",
    "KeyRule",
]


@dataclass(frozen=True, slots=True)
class KeyRule:
    """The limits of one API key. ``key_id`` is a hash of the key (never the key), the same in
    every process, so counters add up across instances; ``0`` = no limit."""

    key_id: str
    name: str
    requests_per_minute: int
    max_streams: int


SETTINGS = web.AppKey("settings", Settings)
SERVICE = web.AppKey("service", ChatService)
#: The idle-chat deleter (docs/landscape.md §3.12), when ``chat_cleanup = "delete"`` and tokens.
JANITOR = web.AppKey("janitor", ChatJanitor)
#: The app's shared state (:mod:`proxy.store`), created in ``cleanup_ctx`` before the service.
STORE = web.AppKey("store", StateStore)
#: Per-request key: ``time.perf_counter()`` when the proxy started handling the request.
START_KEY = web.RequestKey("qwen_proxy_t0", float)
#: Per-request key: set once the request's one log line is written (``chat_completion``,
#: ``images_generated``, ``request_failed``, ``client_gone``…): ``True``, or the
#: :class:`~proxy.errors.ProxyError` that line reported (its error answer then logs no
#: ``request_failed`` line besides). The front middleware writes the generic ``request`` line
#: for a request without it when it is done.
LOGGED: web.RequestKey[ProxyError | bool] = web.RequestKey("qwen_proxy_logged")
#: Per-request key: the front door (client API) the request came through; the error middleware
#: renders failures in its shape. Set by the handler.
FRONT_DOOR = web.RequestKey("qwen_proxy_front_door", FrontDoor)
#: App key: front doors by route path (``request.match_info.route.resource.canonical``), for
#: failures raised before the handler runs (API keys, unknown methods).
FRONT_DOORS = web.AppKey("front_doors", dict[str, FrontDoor])
#: App key: tool-call outcome counts (:class:`~proxy.tools.stage.ToolCounters`), for metrics.
TOOL_COUNTERS = web.AppKey("tool_counters", ToolCounters)
#: The app's :class:`~proxy.secrets.SecretMasker` (every configured secret, for errors and logs).
MASKER = web.AppKey("secret_masker", SecretMasker)
#: The app's Prometheus metrics (:mod:`proxy.metrics`).
METRICS = web.AppKey("metrics", Metrics)
#: The app's :class:`~proxy.sweep.Sweeper`: the one timer of the requests' watches (client
#: hang-ups, upstream silences, the deadline until an answer's headers).
SWEEPER = web.AppKey("sweeper", Sweeper)
#: Per-request key: the limits of the API key that authenticated the request, if it has any.
KEY_RULE = web.RequestKey("qwen_proxy_key_rule", KeyRule)
#: App key: ``/v1/responses`` answers being produced, by response id; each event is set once the
#: answer is stored (or will not be), so a follow-up that races the store waits for it.
RESPONSES_IN_FLIGHT = web.AppKey("responses_in_flight", dict[str, asyncio.Event])
