"""``POST /v1/chat/completions``: the thin handler of the OpenAI chat front door.

The body becomes a :class:`~proxy.conversation.Conversation`
(:mod:`proxy.frontdoors.openai_chat`); the service opens the upstream turn; the one relay
(:mod:`proxy.relay`) streams the answer through :class:`~proxy.frontdoors.openai_chat.ChatStream`
or folds it with :class:`~proxy.frontdoors.openai_chat.ChatBody`. Nothing is sent to a streaming
client until the first event, so early failures are real HTTP errors; a later failure is an
OpenAI ``error`` event and no ``[DONE]``.

Media models: ``-image``/``-image-edit`` answer Markdown ``![image](<url>)`` (the image is the
answer; no image is an error, never ``![image](null)``); ``-video`` is handed to
:func:`proxy.routes.videos.video_chat` (task polling with keep-alive comments).
"""

from __future__ import annotations

from aiohttp import web

from proxy.continuation import SCOPE_KEY, scope_of
from proxy.frontdoors.openai_chat import OPENAI_CHAT, ChatBody, ChatStream, parse_chat
from proxy.metrics import MODEL_KEY
from proxy.relay import StreamStart, aggregate, relay
from proxy.routes.videos import video_chat
from proxy.state import FRONT_DOOR, SERVICE

__all__ = ["chat_completions"]


async def chat_completions(request: web.Request) -> web.StreamResponse:
    """Handle one chat completion, streamed or not (OpenAI Chat Completions API)."""
    request[FRONT_DOOR] = OPENAI_CHAT
    conv = parse_chat(await request.read())
    service = request.app[SERVICE]
    route = await service.route_for(conv)
    request[MODEL_KEY] = route.model  # the catalog id: a bounded label set
    if route.chat_type == "t2v":
        return await video_chat(request, conv, route)
    conv.metadata[SCOPE_KEY] = scope_of(request.headers)
    if conv.stream:
        # built while the completion's headers are on their way (ChatService.open_chat)
        start = StreamStart(request, conv, lambda: ChatStream(conv))
        async with service.open_chat(conv, route=route, warm=start) as chat:
            return await relay(request, conv, chat, start.renderer(), start=start)
    async with service.open_chat(conv, route=route) as chat:
        return await aggregate(request, conv, chat, ChatBody(conv))
