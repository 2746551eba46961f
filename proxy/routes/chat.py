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
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing

import aiohttp
import orjson
import structlog
from aiohttp import web

from proxy.api_models import ChatCompletionRequest, decode_json_body, parse_chat_request
from proxy.errors import UpstreamError
from proxy.qwen.envelope import classify_response
from proxy.qwen.sse import SSEDecoder, SSEEvent
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


class _Pump:
    """Reads chat.qwen.ai's stream and yields batches of translated events.

    Shared by the streaming relay and the non-stream aggregation. ``wait_s`` (seconds) counts
    the time spent waiting on chat.qwen.ai while ``counting`` is on (until the client's response
    is committed), for ``Server-Timing``. A body labelled ``text/event-stream`` that holds no SSE
    event at all (an error envelope sent with the stream's content type) is classified like any
    non-stream answer, so it still becomes the right error (PROTOCOL.md §4.3, §10).
    """

    _HEAD_LIMIT = 64 * 1024

    def __init__(self, chat: OpenChat, translator: Translator) -> None:
        self.wait_s = chat.upstream_wait_s
        self.counting = True
        self._translator = translator
        self._decoder = SSEDecoder()
        self._it = chat.response.content.iter_any().__aiter__()
        self._ctype = chat.response.headers.get("Content-Type", "").lower()
        self._head = bytearray()
        self._seen_event = False

    async def batches(self) -> AsyncGenerator[list[OutEvent]]:
        """Event batches until the translator is done (a finish or a failure)."""
        tr = self._translator
        while not tr.done:
            t_read = time.perf_counter()
            try:
                chunk = await _next_chunk(self._it)
            except _UpstreamBroken as exc:
                yield tr.abort(str(exc))
                return
            if self.counting:
                self.wait_s += time.perf_counter() - t_read
            if chunk is None:
                out = self._feed(self._decoder.close())
                if not tr.done:
                    stray = self._stray_body()
                    out.extend(tr.fail(stray) if stray is not None else tr.close())
                yield out
                return
            if not self._seen_event and len(self._head) < self._HEAD_LIMIT:
                self._head += chunk[: self._HEAD_LIMIT - len(self._head)]
            out = self._feed(self._decoder.feed(chunk))
            if out:
                yield out

    def _feed(self, events: list[SSEEvent]) -> list[OutEvent]:
        tr = self._translator
        out: list[OutEvent] = []
        for event in events:
            self._seen_event = True
            out.extend(tr.feed(event.data))
            if tr.done:
                break
        return out

    def _stray_body(self) -> UpstreamError | None:
        if self._seen_event or not bytes(self._head).strip():
            return None
        return classify_response(200, self._ctype, bytes(self._head))


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
    pump = _Pump(chat, translator)
    resp: web.StreamResponse | None = None
    try:
        async with aclosing(pump.batches()) as batches:
            async for out in batches:
                if not out:
                    continue
                if resp is None:
                    resp = await _start(request, out, encoder, t0, pump.wait_s)
                    pump.counting = False
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
    agg = Aggregate()
    pump = _Pump(chat, translator)
    async with aclosing(pump.batches()) as batches:
        async for out in batches:
            for e in out:
                agg.add(e)
    body = agg.completion(
        completion_id=completion_id, model=req.model, created=created, usage=translator.usage
    )
    _log_done(completion_id, translator, chat)
    return web.Response(
        body=orjson.dumps(body),
        content_type="application/json",
        headers={"Server-Timing": _server_timing(t0, pump.wait_s)},
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
