"""``POST /v1/messages`` and ``POST /v1/messages/count_tokens``: the Anthropic front door's
thin handlers.

The body becomes a :class:`~proxy.conversation.Conversation`
(:mod:`proxy.frontdoors.anthropic`, model names through the ``anthropic_model_map`` setting);
the service opens the upstream turn; the one relay (:mod:`proxy.relay`) streams the answer
through :class:`~proxy.frontdoors.anthropic.AnthropicStream` or folds it with
:class:`~proxy.frontdoors.anthropic.AnthropicBody`. Errors leave in Anthropic's shape (the
request's front door is :data:`~proxy.frontdoors.anthropic.ANTHROPIC`). A history that continues
an answer of the gateway continues its upstream chat (native multi-turn, :mod:`proxy.continuation`,
scoped by the client's key) exactly as on the OpenAI side. ``count_tokens`` is
answered from the request alone: nothing goes upstream (Claude Code calls it dozens of times a
second at start-up). Query strings (``?beta=true``) and ``anthropic-version`` are accepted and
ignored, and so are ``anthropic-beta`` headers, except that one naming
``interleaved-thinking-…`` lets ``thinking.budget_tokens`` exceed ``max_tokens``, as it does
on Anthropic's API.
"""

from __future__ import annotations

import orjson
from aiohttp import web

from proxy.api_models import decode_json_body
from proxy.continuation import SCOPE_KEY, scope_of
from proxy.errors import ClientRequestError
from proxy.frontdoors.anthropic import (
    ANTHROPIC,
    AnthropicBody,
    AnthropicStream,
    count_tokens,
    parse_count_tokens,
    parse_messages,
)
from proxy.metrics import MODEL_KEY
from proxy.relay import StreamStart, aggregate, relay
from proxy.state import FRONT_DOOR, SERVICE, SETTINGS

__all__ = ["messages", "messages_count_tokens"]


async def messages(request: web.Request) -> web.StreamResponse:
    """Handle one Anthropic Messages request, streamed or not."""
    request[FRONT_DOOR] = ANTHROPIC
    settings = request.app[SETTINGS]
    betas = ",".join(request.headers.getall("anthropic-beta", ()))
    conv = parse_messages(
        decode_json_body(await request.read()),
        model_map=settings.anthropic_model_map,
        default_model=settings.anthropic_default_model,
        interleaved_thinking="interleaved-thinking" in betas,
    )
    service = request.app[SERVICE]
    route = await service.route_for(conv)
    request[MODEL_KEY] = route.model  # the catalog id (metrics label), not the client's name
    if route.chat_type == "t2v":
        raise ClientRequestError(
            f"`{conv.model}` is a video model; /v1/messages cannot carry a video task, use "
            "POST /v1/videos/generations",
            param="model",
        )
    model = str(conv.metadata.get("requested_model", conv.model))

    def input_tokens() -> int:  # only when the site reports no usage
        return count_tokens(conv)

    conv.metadata[SCOPE_KEY] = scope_of(request.headers)  # kept through corrective turns
    if conv.stream:
        # built while the completion's headers are on their way (ChatService.open_chat)
        start = StreamStart(
            request, conv, lambda: AnthropicStream(model=model, input_tokens=input_tokens)
        )
        async with service.open_chat(conv, route=route, warm=start) as chat:
            return await relay(request, conv, chat, start.renderer(), start=start)
    async with service.open_chat(conv, route=route) as chat:
        return await aggregate(
            request, conv, chat, AnthropicBody(model=model, input_tokens=input_tokens)
        )


async def messages_count_tokens(request: web.Request) -> web.Response:
    """``{"input_tokens": N}``: the documented estimate of
    :func:`proxy.frontdoors.anthropic.count_tokens` (no tokenizer, no upstream call)."""
    request[FRONT_DOOR] = ANTHROPIC
    settings = request.app[SETTINGS]
    conv = parse_count_tokens(
        decode_json_body(await request.read()),
        model_map=settings.anthropic_model_map,
        default_model=settings.anthropic_default_model,
    )
    return web.Response(
        body=orjson.dumps({"input_tokens": count_tokens(conv)}), content_type="application/json"
    )
