"""``GET /healthz``: liveness plus a secret-free summary of the configuration."""

from __future__ import annotations

import time

from aiohttp import web

from proxy.state import SERVICE

__all__ = ["healthz"]


async def healthz(request: web.Request) -> web.Response:
    """``{"status": "ok", "offline": bool, "accounts": {"total", "resting"}}``."""
    service = request.app[SERVICE]
    now = time.monotonic()
    accounts = service.pool.accounts
    return web.json_response(
        {
            "status": "ok",
            "offline": bool(service.settings.replay),
            "accounts": {
                "total": len([a for a in accounts if a.token is not None]),
                "resting": len([a for a in accounts if a.parked_until > now]),
            },
        }
    )
