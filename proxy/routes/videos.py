"""Video generation: ``POST /v1/videos/generations`` and chat with a ``-video`` model.

The t2v flow (docs/protocol.md §6.3): ``chats/new`` (``chat_type: t2v``), a ``stream: false``
completion answered with JSON holding the task id, then ``GET /api/v1/tasks/status/<id>`` until
``task_status`` is ``success`` (the URL in ``content``), ``failed`` (502
``upstream_task_failed``) or ``video_deadline_s`` passes (504 ``upstream_task_timeout``).

``POST /v1/videos/generations`` takes ``{"prompt", "model"?, "size"?}`` (``size`` an aspect ratio
or ``WxH``, default ``16:9``) and answers, once the video is ready,
``{"created": <unix s>, "data": [{"url": "<video url>"}]}``: the shape of the images API. It
holds the connection until then (30-120 s upstream), so give the client a long timeout.

Chat with ``<model>-video``: the content is ``[video](<url>)``. Not streamed, the answer comes
when the video is ready. Streamed, the task is created first (its failures are real HTTP
errors), then the 200 is committed with the role chunk, and an SSE comment ``: keep-alive``
is written before every poll wait (at most ``video_poll_max_interval_s`` apart) so proxies and
clients do not time out. A failure after that point is an OpenAI ``error`` event without
``[DONE]``, like any mid-stream failure.

Once the task has started, the request's one log line is ``video_generated`` (model, account,
the failure if the task failed or timed out).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable

import orjson
import structlog
from aiohttp import web

from proxy.api_models import VideoGenerationRequest, decode_json_body, parse_body
from proxy.conversation import Conversation
from proxy.errors import ProxyError, clip, error_body
from proxy.metrics import MODEL_KEY, total_timing
from proxy.qwen.media import aspect_ratio
from proxy.qwen.request import ModelRoute, flatten_messages
from proxy.qwen.translate import Aggregate, ChunkEncoder, Finish, Media
from proxy.relay import first_byte
from proxy.service import VideoTask
from proxy.state import LOGGED, SERVICE, START_KEY

__all__ = ["KEEPALIVE", "video_chat", "videos_generations"]

log = structlog.get_logger("proxy.videos")

KEEPALIVE = b": keep-alive\n\n"
"""The SSE comment sent while a video task runs (ignored by SSE parsers)."""

_SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}


async def videos_generations(request: web.Request) -> web.Response:
    """``POST /v1/videos/generations``: one video, answered when ready (see module doc)."""
    body = parse_body(VideoGenerationRequest, decode_json_body(await request.read()))
    service = request.app[SERVICE]
    route = await service.media_route(body.model, "t2v")
    request[MODEL_KEY] = route.model
    task = await service.start_video(
        route, body.prompt, size=aspect_ratio(body.size, default="16:9")
    )
    media = await _waited(request, route, task)
    payload = {"created": int(time.time()), "data": [{"url": media.url}]}
    return web.Response(body=orjson.dumps(payload), content_type="application/json")


async def _waited(
    request: web.Request,
    route: ModelRoute,
    task: VideoTask,
    on_wait: Callable[[], Awaitable[None]] | None = None,
) -> Media:
    """:meth:`~proxy.service.ChatService.wait_video` for ``task``, then the request's line
    (:func:`_log_video`), the video ready or its task failed (re-raised)."""
    try:
        media = await request.app[SERVICE].wait_video(task, on_wait=on_wait)
    except ProxyError as exc:
        _log_video(request, route, task, exc)
        raise
    _log_video(request, route, task, None)
    return media


def _log_video(
    request: web.Request, route: ModelRoute, task: VideoTask, failure: ProxyError | None
) -> None:
    """The request's one line (:data:`~proxy.state.LOGGED`): ``video_generated`` with the
    model, the label of the account whose quota the task spent, and the failure's code and
    message when the task failed or timed out (its error answer then logs no other line)."""
    request[LOGGED] = failure or True
    extra = {} if failure is None else {"message": clip(failure.message, 500)}
    log.info(
        "video_generated",
        model=route.model,
        account=task.account.label,
        failure=failure.error_code() if failure is not None else None,
        **extra,
    )


async def video_chat(
    request: web.Request, conv: Conversation, route: ModelRoute
) -> web.StreamResponse:
    """A chat completion with a ``-video`` model, streamed (keep-alives) or not."""
    service = request.app[SERVICE]
    prompt = flatten_messages(conv.turns)
    task = await service.start_video(route, prompt, size=aspect_ratio(conv.size, default="16:9"))
    completion_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    if not conv.stream:
        media = await _waited(request, route, task)
        agg = Aggregate()
        agg.add(media)
        agg.add(Finish())
        out = agg.completion(
            completion_id=completion_id, model=conv.model, created=created, usage=None
        )
        return web.Response(body=orjson.dumps(out), content_type="application/json")
    encoder = ChunkEncoder(
        completion_id=completion_id,
        model=conv.model,
        created=created,
        include_usage=conv.include_usage,
    )
    resp = web.StreamResponse(status=200, headers=_SSE_HEADERS)
    t0 = request[START_KEY]
    resp.headers["Server-Timing"] = total_timing(t0)
    await resp.prepare(request)
    first_byte(request, t0)
    await resp.write(encoder.role())

    async def keepalive() -> None:
        await resp.write(KEEPALIVE)

    try:
        media = await _waited(request, route, task, on_wait=keepalive)
    except ProxyError as exc:
        await resp.write(b"data: " + orjson.dumps(error_body(exc)) + b"\n\n")
        await resp.write_eof()
        return resp
    await resp.write(encoder.encode(media) + encoder.encode(Finish()))
    await resp.write_eof()
    return resp
