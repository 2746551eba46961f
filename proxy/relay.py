"""The one streaming relay and its non-stream twin, for every front door (the hot path).

The relay only moves bytes: upstream chunks go into the pure :class:`SSEDecoder`, its events
into the pure :class:`Translator` (and, when tools are offered, the pure tool stage), and the
resulting events out through the front door's :class:`StreamRenderer`. Upstream is always
streamed (``stream:false`` is refused upstream since 2025-11, PROTOCOL.md §11.3); a non-stream
client gets the same events folded by the front door's :class:`BodyRenderer`.

Rules every front door gets from here:

- Nothing is sent to a streaming client until the first event: until then every failure can
  still be a real HTTP error status (never an empty 200). The 200 is committed with the
  renderer's :meth:`~StreamRenderer.head` and the first events in one write.
- After that, a failure is rendered by the renderer (an ``error`` event) and the stream ends
  without the API's success terminator: never a silent truncation.
- ``Server-Timing: proxy;dur=…, upstream;dur=…`` (milliseconds) on every answer: time spent in
  the proxy and time spent waiting on chat.qwen.ai until the response was committed.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Any, Protocol

import aiohttp
import orjson
import structlog
from aiohttp import web

from proxy.conversation import Conversation
from proxy.errors import UpstreamError
from proxy.qwen.client import network_failure
from proxy.qwen.envelope import classify_response
from proxy.qwen.sse import SSEDecoder, SSEEvent
from proxy.qwen.translate import Failure, OutEvent, Translator, Usage
from proxy.service import OpenChat
from proxy.state import SETTINGS, START_KEY

__all__ = [
    "SSE_HEADERS",
    "BodyRenderer",
    "StreamRenderer",
    "aggregate",
    "relay",
    "server_timing",
]

log = structlog.get_logger("proxy.relay")

SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}
"""Headers of every streamed answer (``X-Accel-Buffering: no`` keeps nginx from buffering)."""


class StreamRenderer(Protocol):
    """A front door's streaming encoder (pure): events in, the API's SSE bytes out.

    ``id`` names the answer in logs (``chatcmpl-…``, ``msg_…``, ``resp_…``); ``content_type``
    is the stream's media type.
    """

    id: str
    content_type: str

    def head(self) -> bytes:
        """Bytes sent with the first events when the 200 is committed (OpenAI: the role
        chunk; Anthropic: ``message_start``; Responses: ``response.created``…)."""
        ...

    def render(self, events: list[OutEvent], usage: Usage | None) -> bytes:
        """Bytes for a batch of events, :class:`Finish` (the success terminator) and
        :class:`Failure` (the API's error event, no terminator) included. ``usage``: the
        translator's token counts so far."""
        ...

    def keepalive(self) -> bytes:
        """Bytes that keep an idle stream open without changing the answer (an SSE comment,
        Anthropic's ``ping``)."""
        ...


class BodyRenderer(Protocol):
    """A front door's non-stream encoder (pure): events folded into one JSON answer."""

    id: str

    def add(self, event: OutEvent) -> None:
        """Record one event."""
        ...

    def body(self, usage: Usage | None) -> dict[str, Any]:
        """The answer object. Raises the recorded :class:`UpstreamError` if the stream
        failed."""
        ...


class _UpstreamBroken(Exception):
    """Reading from chat.qwen.ai failed mid-stream (message is secret-free)."""


async def _next_chunk(it: AsyncIterator[bytes]) -> bytes | None:
    """The next upstream chunk, ``None`` at clean EOF; raises :class:`_UpstreamBroken`."""
    try:
        return await anext(it)
    except StopAsyncIteration:
        return None
    except TimeoutError:
        raise _UpstreamBroken("no data within the read timeout") from None
    except aiohttp.ClientError as exc:
        raise _UpstreamBroken(network_failure(exc)) from None


def server_timing(t0: float, upstream_s: float) -> str:
    """The ``Server-Timing`` value: proxy time since ``t0`` (a ``perf_counter`` value) minus
    ``upstream_s`` seconds spent waiting on chat.qwen.ai, both in milliseconds."""
    total = time.perf_counter() - t0
    proxy = max(0.0, total - upstream_s)
    return f"proxy;dur={proxy * 1000:.2f}, upstream;dur={upstream_s * 1000:.2f}"


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
        self._upstream = chat.upstream
        self._translator = translator
        self._decoder = SSEDecoder()
        self._it = chat.chunks()
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
                yield tr.abort(str(exc), upstream=self._upstream)
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


async def relay(
    request: web.Request, conv: Conversation, chat: OpenChat, renderer: StreamRenderer
) -> web.StreamResponse:
    """Stream ``chat``'s answer to the client through ``renderer`` (see the module doc).

    Raises the stream's :class:`UpstreamError` when it fails before the first event (the error
    middleware then answers with a real HTTP status); ``ConnectionResetError`` when the client
    left before the commit.
    """
    t0: float = request[START_KEY]
    translator = chat.translator(request.app[SETTINGS].reasoning)
    pump = _Pump(chat, translator)
    resp: web.StreamResponse | None = None
    try:
        async with aclosing(pump.batches()) as batches:
            async for out in batches:
                if not out:
                    continue
                if resp is None:
                    resp = await _start(request, out, renderer, t0, pump.wait_s)
                    pump.counting = False
                    await resp.write(renderer.head() + renderer.render(out, translator.usage))
                else:
                    await resp.write(renderer.render(out, translator.usage))
        assert resp is not None  # translator.done implies events were produced
        await resp.write_eof()
    except ConnectionResetError:
        log.info("client_disconnected", response_id=renderer.id)
        if resp is None:
            raise
    _log_done(renderer.id, conv, translator, chat)
    return resp


async def _start(
    request: web.Request,
    out: list[OutEvent],
    renderer: StreamRenderer,
    t0: float,
    upstream_s: float,
) -> web.StreamResponse:
    """Commit the 200 stream, or raise the failure if nothing has been sent yet.

    The head is not written here: the caller sends it together with the first events, so
    headers, head and first text leave in as few packets as possible.
    """
    if isinstance(out[0], Failure):
        raise out[0].error
    headers = dict(SSE_HEADERS)
    headers["Content-Type"] = renderer.content_type
    resp = web.StreamResponse(status=200, headers=headers)
    resp.headers["Server-Timing"] = server_timing(t0, upstream_s)
    await resp.prepare(request)
    return resp


async def aggregate(
    request: web.Request, conv: Conversation, chat: OpenChat, renderer: BodyRenderer
) -> web.Response:
    """Answer ``chat`` as one JSON body built by ``renderer`` from the same events a stream
    gets. Raises the stream's :class:`UpstreamError` if it failed."""
    t0: float = request[START_KEY]
    translator = chat.translator(request.app[SETTINGS].reasoning)
    pump = _Pump(chat, translator)
    async with aclosing(pump.batches()) as batches:
        async for out in batches:
            for e in out:
                renderer.add(e)
    body = renderer.body(translator.usage)
    _log_done(renderer.id, conv, translator, chat)
    return web.Response(
        body=orjson.dumps(body),
        content_type="application/json",
        headers={"Server-Timing": server_timing(t0, pump.wait_s)},
    )


def _log_done(response_id: str, conv: Conversation, translator: Translator, chat: OpenChat) -> None:
    failure = translator.failure
    log.info(
        "chat_completion",
        completion_id=response_id,
        model=chat.route.model,
        chat_type=chat.route.chat_type,
        account=chat.account.label,
        prompt_tokens=translator.usage.prompt_tokens if translator.usage else None,
        completion_tokens=translator.usage.completion_tokens if translator.usage else None,
        failure=failure.error_code() if failure else None,
        ignored_phases=translator.ignored_phases or None,
    )
