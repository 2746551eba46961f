"""``GET /v1/models`` and ``GET /v1/models/{id}``, from the upstream model list (PROTOCOL.md §8)."""

from __future__ import annotations

import orjson
from aiohttp import web

from proxy.state import SERVICE

__all__ = ["get_model", "list_models"]


async def list_models(request: web.Request) -> web.Response:
    """The OpenAI model list: upstream ids plus their ``-thinking``/``-search`` variants."""
    catalog = await request.app[SERVICE].catalog()
    return web.Response(body=orjson.dumps(catalog.openai_list()), content_type="application/json")


async def get_model(request: web.Request) -> web.Response:
    """One model object; 404 in OpenAI form when the id (variant included) is unknown."""
    catalog = await request.app[SERVICE].catalog()
    name = request.match_info["model"]
    catalog.route(name)  # raises ModelNotFoundError
    entry = next(m for m in catalog.openai_list()["data"] if m["id"] == name)
    return web.Response(body=orjson.dumps(entry), content_type="application/json")
