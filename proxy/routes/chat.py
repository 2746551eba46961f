"""``POST /v1/chat/completions``: the streaming relay (the hot path) and its non-stream twin.

The handler only moves bytes: upstream chunks go into the pure :class:`SSEDecoder`, its events
into the pure :class:`Translator`, and the translator's events out through the
:class:`ChunkEncoder`. Upstream is always streamed (``stream:false`` is refused upstream since
2025-11, PROTOCOL.md §11.3); a non-stream client gets the same events folded by
:class:`Aggregate`.

Nothing is sent to a streaming client until the first piece of text: until then every failure
can still be a real HTTP error status (never an empty 200). After that, a failure is sent as an
OpenAI ``error`` event and the stream ends without ``[DONE]``: never a silent truncation.

Media models: ``-image``/``-image-edit`` answer Markdown ``![image](<url>)`` (the image is the
answer; no image is an error, never ``![image](null)``); ``-video`` is handed to
:func:`proxy.routes.videos.video_chat` (task polling with keep-alive comments).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

import aiohttp
import orjson
import structlog
from aiohttp import web

from proxy.api_models import ChatCompletionRequest, decode_json_body, parse_chat_request
from proxy.qwen.sse import SSEDecoder
from proxy.qwen.translate import Aggregate, ChunkEncoder, Failure, OutEvent, Translator
from proxy.routes.videos import video_chat
from proxy.service import OpenChat
from proxy.state import SERVICE, SETTINGS, START_KEY

__all__ = ["chat_completions"]

log = structlog.get_logger("proxy.chat")

_SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}


class _UpstreamBroken(Exception):
    """Reading from chat.qwen.ai failed mid-stream (message is secret-free)."""


async def _next_chunk(it: AsyncIterator[bytes]) -> bytes | None:
    """The next upstream chunk, ``None`` at clean EOF; raises :class:`_UpstreamBroken`."""
    try:
        return await anext(it)
    except StopAsyncIteration:
        return None
    except TimeoutError:
        raise _UpstreamBroken("no data from chat.qwen.ai within the read timeout") from None
    except aiohttp.ClientError as exc:
        raise _UpstreamBroken(type(exc).__name__) from None


def _server_timing(t0: float, upstream_s: float) -> str:
    total = time.perf_counter() - t0
    proxy = max(0.0, total - upstream_s)
    return f"proxy;dur={proxy * 1000:.2f}, upstream;dur={upstream_s * 1000:.2f}"


async def chat_completions(request: web.Request) -> web.StreamResponse:
    """Handle one chat completion, streamed or not (OpenAI Chat Completions API)."""
    req = parse_chat_request(decode_json_body(await request.read()))
    service = request.app[SERVICE]
    route = await service.route_for(req)
    if route.chat_type == "t2v":
        return await video_chat(request, req, route)
    async with service.open_chat(req, route=route) as chat:
        if req.stream:
            return await _relay(request, req, chat)
        return await _aggregate(request, req, chat)


def _ids() -> tuple[str, int]:
    return f"chatcmpl-{uuid.uuid4().hex}", int(time.time())


async def _relay(
    request: web.Request, req: ChatCompletionRequest, chat: OpenChat
) -> web.StreamResponse:
    t0: float = request[START_KEY]
    completion_id, created = _ids()
    translator = chat.translator(request.app[SETTINGS].reasoning)
    include_usage = bool(req.stream_options and req.stream_options.include_usage)
    encoder = ChunkEncoder(
        completion_id=completion_id, model=req.model, created=created, include_usage=include_usage
    )
    decoder = SSEDecoder()
    upstream_s = chat.upstream_wait_s
    resp: web.StreamResponse | None = None
    it = chat.response.content.iter_any().__aiter__()
    out: list[OutEvent] = []
    try:
        while not translator.done:
            t_read = time.perf_counter()
            try:
                chunk = await _next_chunk(it)
            except _UpstreamBroken as exc:
                out = translator.abort(str(exc))
                break
            if resp is None:
                upstream_s += time.perf_counter() - t_read
            if chunk is None:
                out = []
                for event in decoder.close():
                    out.extend(translator.feed(event.data))
                out.extend(translator.close())
                break
            out = []
            for event in decoder.feed(chunk):
                out.extend(translator.feed(event.data))
                if translator.done:
                    break
            if not out:
                continue
            if resp is None:
                resp = await _start(request, out, encoder, t0, upstream_s)
                await resp.write(encoder.role() + _encode(encoder, out, translator))
            else:
                await resp.write(_encode(encoder, out, translator))
            out = []
        if out:
            if resp is None:
                resp = await _start(request, out, encoder, t0, upstream_s)
                await resp.write(encoder.role() + _encode(encoder, out, translator))
            else:
                await resp.write(_encode(encoder, out, translator))
        assert resp is not None  # translator.done implies events were produced
        await resp.write_eof()
    except ConnectionResetError:
        log.info("client_disconnected", completion_id=completion_id)
        if resp is None:
            raise
    _log_done(completion_id, translator, chat)
    return resp


def _encode(encoder: ChunkEncoder, out: list[OutEvent], translator: Translator) -> bytes:
    if len(out) == 1:
        return encoder.encode(out[0], translator.usage)
    return b"".join([encoder.encode(e, translator.usage) for e in out])


async def _start(
    request: web.Request,
    out: list[OutEvent],
    encoder: ChunkEncoder,
    t0: float,
    upstream_s: float,
) -> web.StreamResponse:
    """Commit the 200 stream, or raise the failure if nothing has been sent yet.

    The role chunk is not written here: the caller sends it together with the first events, so
    headers, role and first text leave in as few packets as possible.
    """
    if isinstance(out[0], Failure):
        raise out[0].error
    resp = web.StreamResponse(status=200, headers=_SSE_HEADERS)
    resp.headers["Server-Timing"] = _server_timing(t0, upstream_s)
    await resp.prepare(request)
    return resp


async def _aggregate(
    request: web.Request, req: ChatCompletionRequest, chat: OpenChat
) -> web.Response:
    t0: float = request[START_KEY]
    completion_id, created = _ids()
    translator = chat.translator(request.app[SETTINGS].reasoning)
    decoder = SSEDecoder()
    agg = Aggregate()
    upstream_s = chat.upstream_wait_s
    it = chat.response.content.iter_any().__aiter__()
    while not translator.done:
        t_read = time.perf_counter()
        try:
            chunk = await _next_chunk(it)
        except _UpstreamBroken as exc:
            for e in translator.abort(str(exc)):
                agg.add(e)
            break
        upstream_s += time.perf_counter() - t_read
        if chunk is None:
            for event in decoder.close():
                for e in translator.feed(event.data):
                    agg.add(e)
            for e in translator.close():
                agg.add(e)
            break
        for event in decoder.feed(chunk):
            for e in translator.feed(event.data):
                agg.add(e)
            if translator.done:
                break
    body = agg.completion(
        completion_id=completion_id, model=req.model, created=created, usage=translator.usage
    )
    _log_done(completion_id, translator, chat)
    return web.Response(
        body=orjson.dumps(body),
        content_type="application/json",
        headers={"Server-Timing": _server_timing(t0, upstream_s)},
    )


def _log_done(completion_id: str, translator: Translator, chat: OpenChat) -> None:
    failure = translator.failure
    log.info(
        "chat_completion",
        completion_id=completion_id,
        model=chat.route.model,
        chat_type=chat.route.chat_type,
        account=chat.account.label,
        prompt_tokens=translator.usage.prompt_tokens if translator.usage else None,
        completion_tokens=translator.usage.completion_tokens if translator.usage else None,
        failure=failure.error_code() if failure else None,
        ignored_phases=translator.ignored_phases or None,
    )
