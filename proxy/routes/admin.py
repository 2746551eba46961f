"""``GET /admin/accounts`` (the account table, guarded by ``admin_key``) and ``GET /metrics``
(Prometheus, guarded by ``metrics_key`` or like the API). Neither ever shows a token."""

from __future__ import annotations

import hmac
import time
from collections import Counter

from aiohttp import web
from pydantic import SecretStr

from proxy.errors import AuthenticationError, HTTPStatusError
from proxy.metrics import CONTENT_TYPE_LATEST
from proxy.state import METRICS, SERVICE, SETTINGS, STORE

__all__ = ["admin_accounts", "metrics"]


def _require(request: web.Request, key: SecretStr, what: str) -> None:
    """Require ``Authorization: Bearer <key>``, sent once (two ``Authorization`` headers are
    refused, as on the API), compared in constant time. Raises :class:`AuthenticationError`."""
    sent = request.headers.getall("Authorization", [])
    if len(sent) > 1:
        raise AuthenticationError(
            "Ambiguous credentials: the request carries more than one `Authorization` header; "
            "send the key once."
        )
    scheme, _, value = (sent[0] if sent else "").partition(" ")
    given = value.strip() if scheme.lower() == "bearer" else ""
    if not given or not hmac.compare_digest(
        given.encode("utf-8", "surrogateescape"), key.get_secret_value().encode("utf-8")
    ):
        raise AuthenticationError(
            f"Incorrect {what} provided."
            if given
            else f"Missing {what}: send `Authorization: Bearer <{what.replace(' ', '_')}>`."
        )


async def admin_accounts(request: web.Request) -> web.Response:
    """``{"object": "list", "data": [AccountStatus…], "store": "ok"|"degraded", "now": epoch s}``.

    403 ``admin_disabled`` when ``admin_key`` is not set; 401 for a missing or wrong key.
    """
    settings = request.app[SETTINGS]
    if settings.admin_key is None:
        raise HTTPStatusError(
            "the admin endpoints are off: set admin_key (QWEN_PROXY_ADMIN_KEY) on the gateway",
            status=403,
            code="admin_disabled",
        )
    _require(request, settings.admin_key, "admin key")
    pool = request.app[SERVICE].pool
    rows = await pool.statuses()
    return web.json_response(
        {
            "object": "list",
            "data": [r.to_json() for r in rows],
            "store": request.app[STORE].health(),
            "now": time.time(),
        }
    )


async def metrics(request: web.Request) -> web.Response:
    """The Prometheus text format. With ``metrics_key`` set, that key is required (the API keys
    are not); without it the API's key check applies (middleware)."""
    settings = request.app[SETTINGS]
    if settings.metrics_key is not None:
        _require(request, settings.metrics_key, "metrics key")
    m = request.app[METRICS]
    rows = await request.app[SERVICE].pool.statuses()
    m.set_accounts(dict(Counter(r.state for r in rows)))
    resp = web.Response(body=m.render())
    resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return resp
