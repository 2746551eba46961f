"""``GET /healthz``: liveness plus a secret-free summary of the state."""

from __future__ import annotations

from collections import Counter

from aiohttp import web

from proxy.state import SERVICE, STORE

__all__ = ["healthz"]


async def healthz(request: web.Request) -> web.Response:
    """Always 200 while the process serves::

        {"status": "ok" | "degraded", "offline": bool,
         "upstream": {"state": "unknown" | "ok" | <error code>, "at": epoch s | null},
         "accounts": {"total", "resting", "available", "busy", "expired"},
         "redis": "off" | "ok" | "degraded"}

    ``degraded``: Redis is configured but unreachable (state is in-process meanwhile).
    """
    service = request.app[SERVICE]
    store = request.app[STORE]
    pool = service.pool
    rows = await pool.statuses()
    by_state = Counter(r.state for r in rows)
    health = store.health()
    redis = "off" if not service.settings.redis_url else health
    last = pool.last_upstream
    return web.json_response(
        {
            "status": health,
            "offline": bool(service.settings.replay),
            "upstream": {"state": last[0] if last else "unknown", "at": last[1] if last else None},
            "accounts": {
                "total": len([a for a in pool.accounts if a.token is not None]),
                "resting": by_state["resting"],
                "available": by_state["available"],
                "busy": by_state["busy"],
                "expired": by_state["expired"],
            },
            "redis": redis,
        }
    )
