"""``GET /v1/models`` and ``GET /v1/models/{id}``, from the upstream model list
(docs/protocol.md §8).

A request with an ``anthropic-version`` header (the anthropic SDK, Claude Code's gateway model
discovery) gets the same list with Anthropic's fields added
(:func:`proxy.frontdoors.anthropic.models_page`) and errors in Anthropic's shape.
"""

from __future__ import annotations

import orjson
from aiohttp import web

from proxy.errors import ModelNotFoundError
from proxy.frontdoors.anthropic import ANTHROPIC, model_info, models_page
from proxy.state import FRONT_DOOR, SERVICE

__all__ = ["get_model", "list_models"]


async def list_models(request: web.Request) -> web.Response:
    """The OpenAI model list: upstream ids plus their ``-thinking``/``-search`` variants."""
    anthropic = _anthropic(request)
    catalog = await request.app[SERVICE].catalog()
    body = models_page(catalog.openai_list()) if anthropic else catalog.openai_list()
    return web.Response(body=orjson.dumps(body), content_type="application/json")


async def get_model(request: web.Request) -> web.Response:
    """One model object; 404 in OpenAI form when the id (variant included) is unknown."""
    anthropic = _anthropic(request)
    catalog = await request.app[SERVICE].catalog()
    name = request.match_info["model"]
    catalog.route(name)  # raises ModelNotFoundError
    wanted = name.lower()  # names match case-insensitively, as in requests
    entry = next((m for m in catalog.openai_list()["data"] if m["id"].lower() == wanted), None)
    if entry is None:  # routable but not a listed id (e.g. a variant spelled another way)
        raise ModelNotFoundError(f"The model `{name[:80]}` is not a listed id.", param="model")
    body = model_info(entry) if anthropic else entry
    return web.Response(body=orjson.dumps(body), content_type="application/json")


def _anthropic(request: web.Request) -> bool:
    """True for an Anthropic client; its errors then take Anthropic's shape."""
    if "anthropic-version" not in request.headers:
        return False
    request[FRONT_DOOR] = ANTHROPIC
    return True
