"""``POST /v1/responses``, ``GET`` and ``DELETE /v1/responses/{response_id}``: the thin handlers
of the OpenAI Responses front door.

The body becomes a :class:`~proxy.conversation.Conversation` (:mod:`proxy.frontdoors.responses`),
joined with the stored history when ``previous_response_id`` is given; the service opens the
upstream turn; the one relay (:mod:`proxy.relay`) streams the answer as Responses events or folds
it into one response object. A finished answer (``completed`` or ``incomplete``) is kept in the
app's state store (``put_response``, ``response_ttl_s`` seconds) unless the request said
``store: false``, so a follow-up can continue it and ``GET /v1/responses/{id}`` can return it;
both only for a client with the same API key (:func:`proxy.continuation.scope_of`).

A streamed answer is stored just after its last event was sent; a follow-up naming it that
arrives in between (a fast client) waits for the store (:data:`RESPONSES_IN_FLIGHT`, at most
:data:`STORE_WAIT_S` seconds) instead of missing it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses

import orjson
import structlog
from aiohttp import web

from proxy.api_models import decode_json_body
from proxy.continuation import SCOPE_KEY, scope_of
from proxy.conversation import Turn
from proxy.errors import (
    ClientRequestError,
    PreviousResponseNotFoundError,
    ResponseNotFoundError,
    clip,
)
from proxy.frontdoors.responses import (
    RESPONSES,
    ResponsesBodyRenderer,
    ResponsesStreamRenderer,
    StoredResponse,
    build_conversation,
    dump_entry,
    input_items_page,
    load_entry,
    new_ids,
    parse_request,
)
from proxy.relay import StreamStart, aggregate, relay
from proxy.state import FRONT_DOOR, RESPONSES_IN_FLIGHT, SERVICE, SETTINGS, STORE

__all__ = [
    "STORE_WAIT_S",
    "create_response",
    "delete_response",
    "get_response",
    "list_input_items",
    "stored_response",
]

log = structlog.get_logger("proxy.responses")

#: Seconds a lookup waits for an answer of this process that is being stored.
STORE_WAIT_S = 5.0


async def stored_response(
    app: web.Application, response_id: str, scope: str
) -> StoredResponse | None:
    """The stored response ``response_id`` of the client ``scope`` (an answer made with another
    API key counts as absent), waiting (at most :data:`STORE_WAIT_S` seconds) when this process
    is still storing it; ``None`` when there is none."""
    data = await app[STORE].get_response(response_id)
    if data is None:
        event = app[RESPONSES_IN_FLIGHT].get(response_id)
        if event is None:
            return None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), STORE_WAIT_S)
        data = await app[STORE].get_response(response_id)
    if not data:  # absent, or deleted (an empty value)
        return None
    entry = load_entry(data)
    return entry if entry.scope == scope else None


async def create_response(request: web.Request) -> web.StreamResponse:
    """Handle one Responses API request, streamed or not."""
    request[FRONT_DOOR] = RESPONSES
    req = parse_request(decode_json_body(await request.read()))
    app = request.app
    scope = scope_of(request.headers)
    history: list[Turn] = []
    prompt_req = req  # the request as the prompt is built from (instructions carried over)
    if req.previous_response_id:
        previous = await stored_response(app, req.previous_response_id, scope)
        if previous is None:
            raise PreviousResponseNotFoundError(
                f"Previous response with id '{clip(req.previous_response_id)}' not found (never "
                "stored, stored with `store: false`, or expired).",
                param="previous_response_id",
            )
        history = previous.turns
        carried = previous.response.get("instructions")
        if not req.instructions and isinstance(carried, str) and carried:
            # The upstream chat holds the earlier instructions once the turn continues it
            # natively; say so in the flattened fallback too, so both paths agree and the
            # continuation key (which covers them) is found.
            prompt_req = dataclasses.replace(req, instructions=carried)
    conv = build_conversation(prompt_req, history)
    if req.ignored_tools:
        log.info("responses_tools_ignored", types=sorted(set(req.ignored_tools)))
    service = app[SERVICE]
    route = await service.route_for(conv)
    if route.chat_type == "t2v":
        raise ClientRequestError(
            "video models are not served on /v1/responses; use /v1/videos/generations",
            param="model",
        )
    ids = new_ids()
    ttl = app[SETTINGS].response_ttl_s
    keep = req.store and ttl > 0
    in_flight = app[RESPONSES_IN_FLIGHT]
    if keep:
        in_flight[ids.response_id] = asyncio.Event()
    try:
        conv.metadata[SCOPE_KEY] = scope  # kept through corrective turns
        # a stream's first turn is made ready while the completion's headers are on their way
        start = StreamStart(request, conv, lambda: ResponsesStreamRenderer(req, ids))
        async with service.open_chat(conv, route=route, warm=start if req.stream else None) as chat:
            if req.stream:
                stream = start.renderer()
                output = stream.output
                resp = await relay(request, conv, chat, stream, start=start)
            else:
                body = ResponsesBodyRenderer(req, ids)
                output = body.output
                resp = await aggregate(request, conv, chat, body)
        if keep and output.status in ("completed", "incomplete"):
            # The conversation after this answer, without `instructions` (not carried over).
            turns = conv.turns[1:] if prompt_req.instructions else conv.turns
            entry = dump_entry(
                [*turns, output.assistant_turn()],
                output.response(),
                scope=scope,
                input_items=req.input_items,
            )
            await app[STORE].put_response(ids.response_id, entry, ttl_s=ttl)
    finally:
        event = in_flight.pop(ids.response_id, None)
        if event is not None:
            event.set()
    return resp


async def get_response(request: web.Request) -> web.Response:
    """``GET /v1/responses/{response_id}``: a stored response object, or 404."""
    request[FRONT_DOOR] = RESPONSES
    response_id = request.match_info["response_id"]
    stored = await stored_response(request.app, response_id, scope_of(request.headers))
    if stored is None:
        raise ResponseNotFoundError(
            f"No response found with id '{clip(response_id)}'.", param="response_id"
        )
    return web.Response(body=orjson.dumps(stored.response), content_type="application/json")


async def delete_response(request: web.Request) -> web.Response:
    """``DELETE /v1/responses/{response_id}``: forget a stored response (it can no longer be
    retrieved or continued), or 404. The store has no delete: an empty value replaces it for
    ``response_ttl_s`` seconds."""
    request[FRONT_DOOR] = RESPONSES
    response_id = request.match_info["response_id"]
    app = request.app
    if await stored_response(app, response_id, scope_of(request.headers)) is None:
        raise ResponseNotFoundError(
            f"No response found with id '{clip(response_id)}'.", param="response_id"
        )
    await app[STORE].put_response(response_id, b"", ttl_s=max(app[SETTINGS].response_ttl_s, 1))
    body = {"id": response_id, "object": "response", "deleted": True}
    return web.Response(body=orjson.dumps(body), content_type="application/json")


async def list_input_items(request: web.Request) -> web.Response:
    """``GET /v1/responses/{response_id}/input_items`` (``order``, ``limit``, ``after``): the
    input items of a stored response, or 404."""
    request[FRONT_DOOR] = RESPONSES
    response_id = request.match_info["response_id"]
    stored = await stored_response(request.app, response_id, scope_of(request.headers))
    if stored is None:
        raise ResponseNotFoundError(
            f"No response found with id '{clip(response_id)}'.", param="response_id"
        )
    q = request.query
    try:
        limit = int(q.get("limit", "20"))
    except ValueError:
        raise ClientRequestError("`limit` must be an integer", param="limit") from None
    page = input_items_page(
        stored.input_items, order=q.get("order", "desc"), limit=limit, after=q.get("after")
    )
    return web.Response(body=orjson.dumps(page), content_type="application/json")
