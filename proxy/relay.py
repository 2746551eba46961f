"""The one streaming relay and its non-stream twin, for every front door (the hot path).

The relay only moves bytes: upstream chunks go into the pure :class:`SSEDecoder`, its events
into the pure :class:`Translator` (then, when tools are offered, the pure tool stage, and, when
the request has stop sequences or an output-token limit, the pure stop stage), and the
resulting events out through the front door's :class:`StreamRenderer`. Upstream is always
streamed (``stream:false`` is refused upstream since 2025-11, docs/protocol.md §11.3); a non-stream
client gets the same events folded by the front door's :class:`BodyRenderer`.

Rules every front door gets from here:

- Nothing is sent to a streaming client until the first event: until then every failure can
  still be a real HTTP error status (never an empty 200). The 200 is committed with the
  renderer's :meth:`~StreamRenderer.head` and the first events in one write.
- After that, a failure is rendered by the renderer (an ``error`` event) and the stream ends
  without the API's success terminator: never a silent truncation.
- ``Server-Timing: proxy;dur=…, upstream;dur=…`` (milliseconds) on every answer: time spent in
  the proxy and time spent waiting on chat.qwen.ai until the response was committed.
- A renderer may carry ``reasoning_mode`` (``"field"`` or ``"think_tags"``): the translator's
  reasoning mode for its API (``None`` or absent: the ``reasoning`` setting). APIs with their
  own reasoning blocks (Anthropic ``thinking``, Responses ``reasoning`` items) set ``"field"``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Protocol

import aiohttp
import orjson
import structlog
from aiohttp import web

from proxy.conversation import Conversation
from proxy.errors import ProxyError, UpstreamError, UpstreamProtocolError, clip
from proxy.metrics import route_template
from proxy.qwen.client import network_failure
from proxy.qwen.envelope import classify_response
from proxy.qwen.sse import SSEDecoder
from proxy.qwen.translate import Failure, OutEvent, ReasoningMode, Translator, Usage
from proxy.service import OpenChat
from proxy.state import LOGGED, MASKER, METRICS, SERVICE, SETTINGS, START_KEY, TOOL_COUNTERS
from proxy.stop import StopStage
from proxy.tools.prompt import CORRECTION_KEY, repeated_calls
from proxy.tools.stage import ToolStage

__all__ = [
    "KEEPALIVE_S",
    "SSE_HEADERS",
    "BodyRenderer",
    "StreamRenderer",
    "StreamStart",
    "aggregate",
    "first_byte",
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

KEEPALIVE_S = 10.0
"""Seconds without a write after which an idle committed stream gets ``renderer.keepalive()``."""

RELAY_FAILED = "internal error in the proxy while relaying the answer; see its log"
"""The message of the error event a committed stream ends with when the relay itself fails."""

MAX_EVENT_BYTES = 16 * 2**20
"""The most of one unfinished upstream SSE event held, in bytes: the site's frames are a few kB
(a tool call carrying a long file, a few MB); a stream that never ends an event fails with
``upstream_protocol_error`` instead of growing without bound."""


#: a turn's translator, tool stage and stop stage (:func:`_stages`)
type _Stages = tuple[Translator, ToolStage | None, StopStage | None]


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


def server_timing(t0: float, upstream_s: float) -> str:
    """The ``Server-Timing`` value: proxy time since ``t0`` (a ``perf_counter`` value) minus
    ``upstream_s`` seconds spent waiting on chat.qwen.ai, both in milliseconds."""
    total = time.perf_counter() - t0
    proxy = max(0.0, total - upstream_s)
    return f"proxy;dur={proxy * 1000:.2f}, upstream;dur={upstream_s * 1000:.2f}"


class _Pump:
    """Reads chat.qwen.ai's stream and returns batches of translated events.

    Shared by the streaming relay and the non-stream aggregation. ``wait_s`` (seconds) counts
    the time spent waiting on chat.qwen.ai while ``counting`` is on (until the client's response
    is committed), for ``Server-Timing``. While ``eager`` is on (the streaming relay, until it
    commits), a batch ends with the first event that gives the client something and the rest
    of the network chunk waits for the next call: the first token is never held behind the
    translation of the whole chunk (at c = 1 a short answer often arrives in one read). A body
    labelled ``text/event-stream`` that holds no SSE event at all (an error envelope sent with
    the stream's content type) is classified like any non-stream answer, so it still becomes the
    right error (docs/protocol.md §4.3, §10).
    """

    _HEAD_LIMIT = 64 * 1024

    def __init__(
        self,
        chat: OpenChat,
        translator: Translator,
        stage: ToolStage | None = None,
        stop: StopStage | None = None,
    ) -> None:
        self.wait_s = chat.upstream_wait_s
        self.counting = True
        self.eager = False
        self._rest: list[str] = []  # events of the last chunk not translated yet (``eager``)
        self._upstream = chat.upstream
        self._translator = translator
        self._stage = stage
        self._stop = stop
        self._plain = stage is None and stop is None
        self._decoder = SSEDecoder()
        # what OpenChat holds to read: the prelude (a continuation's first chunks, already
        # read), then the body as it arrives (one read per network chunk), and its read watch
        self._prelude = list(chat.prelude)
        self._content = chat.response.content
        self._watch = chat.read_watch
        self._ctype = chat.response.headers.get("Content-Type", "").lower()
        self._head = bytearray()
        self._seen_event = False
        self._over = False

    async def next_batch(self) -> list[OutEvent] | None:
        """The next batch of translated events (possibly empty: a chunk that carried only
        keep-alives), or ``None`` once the answer is done (a finish or a failure was returned).

        One plain coroutine per network chunk (no async generator, no iterator object): this
        is the per-chunk path of every stream."""
        tr = self._translator
        stop = self._stop
        if self._rest:
            events, self._rest = self._rest, []
            return self._feed(events)
        while not self._over and not tr.done and (stop is None or not stop.done):
            t_read = time.perf_counter() if self.counting else 0.0
            try:
                if self._prelude:
                    chunk = self._prelude.pop(0)
                elif self._watch is not None:
                    self._watch.waiting = True  # silences count only while waiting for data
                    chunk = await self._content.readany()
                    self._watch.waiting = False
                else:
                    chunk = await self._content.readany()
            except (TimeoutError, aiohttp.ClientError, aiohttp.EofStream) as exc:
                self._over = True
                if isinstance(exc, aiohttp.EofStream):
                    chunk = b""
                elif isinstance(exc, TimeoutError):  # ReadWatch: silent for read_timeout_s
                    return self._staged(
                        tr.abort(self._silence(), upstream=self._upstream, timed_out=True)
                    )
                else:
                    return self._staged(tr.abort(network_failure(exc), upstream=self._upstream))
            if self.counting:
                self.wait_s += time.perf_counter() - t_read
            if not chunk:  # the end of the body
                self._over = True
                out = self._feed([e.data for e in self._decoder.close()], eager=False)
                if not tr.done and not self._cut():
                    stray = self._stray_body()
                    out.extend(self._staged(tr.fail(stray) if stray is not None else tr.close()))
                return out
            if not self._seen_event and len(self._head) < self._HEAD_LIMIT:
                self._head += chunk[: self._HEAD_LIMIT - len(self._head)]
            events = self._decoder.feed_data(chunk)
            if not events and self._decoder.held > MAX_EVENT_BYTES:
                self._over = True  # an event that never ends: stop before memory runs out
                return self._staged(
                    tr.fail(
                        UpstreamProtocolError(
                            f"{self._upstream} sent an SSE event larger than "
                            f"{MAX_EVENT_BYTES / 2**20:g} MiB without finishing it"
                        )
                    )
                )
            out = self._feed(events)
            if out or events:  # an empty batch still says upstream is alive (keep-alives)
                return out
        return None

    def _silence(self) -> str:
        watch = self._watch
        if watch is None:
            return "no data within the read timeout"
        return f"no data within the read timeout ({watch.timeout_s:g} s)"

    def _cut(self) -> bool:
        return self._stop is not None and self._stop.done

    def _staged(self, out: list[OutEvent]) -> list[OutEvent]:
        if self._stage is not None:
            out = self._stage.feed(out)
        if self._stop is not None:
            out = self._stop.feed(out, self._translator.usage)
        return out

    def _feed(self, events: list[str], eager: bool = True) -> list[OutEvent]:
        """Translate (and stage) the events (their ``data``) of one chunk. Without stages, the
        plain hot path; with them, event by event, so a cut (stop sequence, token limit) lands
        on the event. ``eager`` (with the pump's, only until the stream commits): event by event
        too, stopping after the first event with output (the rest waits in ``_rest``)."""
        tr = self._translator
        if events and not self._seen_event:
            self._seen_event = True
            self._head = bytearray()  # only a body without any event is classified
        eager = eager and self.eager
        if self._plain and not eager:
            return tr.feed_all(events)
        out: list[OutEvent] = []
        for i, data in enumerate(events):
            got = tr.feed(data)
            if got:
                out.extend(self._staged(got))
            elif self._stop is not None and self._stop.active:
                out.extend(self._stop.feed([], tr.usage))  # usage-only frames count too
            if tr.done or self._cut():
                break
            if eager and out:
                self._rest = events[i + 1 :]
                break
        return out

    def _stray_body(self) -> UpstreamError | None:
        if self._seen_event or not bytes(self._head).strip():
            return None
        return classify_response(200, self._ctype, bytes(self._head), upstream=self._upstream)


async def relay(
    request: web.Request,
    conv: Conversation,
    chat: OpenChat,
    renderer: StreamRenderer,
    *,
    keepalive_s: float = KEEPALIVE_S,
    start: StreamStart | None = None,
) -> web.StreamResponse:
    """Stream ``chat``'s answer to the client through ``renderer`` (see the module doc).
    ``start``: the :class:`StreamStart` given to ``open_chat`` as its ``warm`` (``renderer`` is
    its renderer): the first turn's relay state, built while the headers were on their way.

    After the commit, while chat.qwen.ai sends frames that give the client nothing (its
    ``response.info`` keep-alives, a long think phase in a mode that hides it, a held-back
    required call) or nothing at all (then on the ticks of the read watch),
    ``renderer.keepalive()`` is written whenever ``keepalive_s`` seconds passed since the last
    write (OpenAI: an SSE comment; Anthropic: ``ping``).

    Raises the stream's :class:`UpstreamError` when it fails before the first event (the error
    middleware then answers with a real HTTP status); ``ConnectionError`` when the client
    left before the commit.
    """
    if start is not None and start.turn is not None and start.chat is chat:
        turn, stages = start.turn, start.stages
        turn.keepalive_s = keepalive_s
    else:
        turn, stages = _Turn(request, renderer, keepalive_s), None
    stage = await turn.run(conv, chat, hold=_correctable(conv), stages=stages)
    if stage is not None and stage.wants_retry:
        corrected = _corrected(renderer.id, conv, stage)
        async with request.app[SERVICE].open_chat(corrected, route=chat.route) as again:
            await turn.run(corrected, again, hold=False)
    resp = turn.resp
    assert resp is not None  # a finished or failed answer always produced events
    if not turn.gone:
        await turn._end()  # (already done when the last turn ended normally)
    return resp


class _Turn:
    """The streaming state of one answer across its upstream turns (one, or two when a
    required tool call gets its corrective turn): the committed response, if any."""

    def __init__(self, request: web.Request, renderer: StreamRenderer, keepalive_s: float) -> None:
        self.request = request
        self.renderer = renderer
        self.keepalive_s = keepalive_s
        self.resp: web.StreamResponse | None = None
        self.wait_s = 0.0  # upstream wait of earlier turns
        self.gone = False
        self.last_write = 0.0
        self.tail = b""  # the last rendered bytes, written with the end of the body
        self.ended = False  # the body's end was written
        #: the response to commit, made ahead (StreamStart) with all its headers but
        #: Server-Timing, or None (made at the commit)
        self.ready: web.StreamResponse | None = None
        self._ping: asyncio.Task[None] | None = None  # a keep-alive still being written

    async def run(
        self, conv: Conversation, chat: OpenChat, *, hold: bool, stages: _Stages | None = None
    ) -> ToolStage | None:
        """Relay one upstream turn; returns its tool stage (``None`` without tools).
        ``stages``: this turn's, built ahead (:class:`StreamStart`)."""
        request, renderer = self.request, self.renderer
        translator, stage, stop = stages or _stages(request, conv, chat, renderer, hold=hold)
        pump = _Pump(chat, translator, stage, stop)
        pump.eager = self.resp is None  # the first token leaves without waiting for the rest
        watch = chat.read_watch
        if self.resp is not None and watch is not None:  # (a second turn: committed already)
            watch.on_silence = self._silence
        try:
            if self.tail:  # another turn follows: what was held back goes out now
                assert self.resp is not None
                await self.resp.write(self.tail)
                self.tail = b""
            while (out := await pump.next_batch()) is not None:
                if not out:
                    if self.resp is not None:
                        now = time.perf_counter()
                        if now - self.last_write >= self.keepalive_s:
                            self.last_write = now
                            await self.resp.write(renderer.keepalive())
                    continue
                self.last_write = time.perf_counter()
                # The head is rendered before the first events: renderers number their
                # events in render order (Responses' sequence_number starts at its head).
                head = renderer.head() if self.resp is None else b""
                data = renderer.render(out, translator.usage)
                first = self.resp is None
                if self.resp is None:
                    t0: float = request[START_KEY]
                    wait = self.wait_s + pump.wait_s
                    self.resp = await _start(request, out, renderer, t0, wait, self.ready)
                    self.ready = None
                    if watch is not None:  # keep-alives while the site is silent, from now on
                        watch.on_silence = self._silence
                    pump.counting = pump.eager = False
                    data = head + data
                if translator.done:  # the last batch: sent with the end of the body
                    self.tail = data
                else:
                    await self.resp.write(data)
                    if first:
                        chat.committed()  # the first byte is out
                if first:  # observed once the first bytes are on their way, not before
                    first_byte(request, request[START_KEY])
        except ConnectionError:  # reset, or lost while a write waited for the client
            if self.resp is None:
                raise  # nothing was sent: the front middleware counts (and logs) a 499
            self.gone = True  # said in the turn's line (_log_done)
        except Exception as exc:
            if self.resp is None or isinstance(exc, ProxyError):
                raise  # nothing sent (the middleware answers), or an error with its own path
            # A bug after the commit: the client still gets the front door's error event and
            # a whole body, not a stream cut mid-answer; the traceback goes to the log. (If
            # rendering that event fails too, that error propagates and the stream is cut.)
            log.error("unhandled_error", response_id=renderer.id, exc_info=exc)
            self.tail += renderer.render([Failure(ProxyError(RELAY_FAILED))], None)
            stage = None  # no corrective turn after it
        self.wait_s += pump.wait_s
        if self.resp is not None and not self.gone and not (stage and stage.wants_retry):
            await self._end()  # the answer's last bytes leave before the bookkeeping below
            chat.committed()
        _log_done(request, renderer.id, conv, translator, chat, stage, gone=self.gone)
        _remember(chat, translator, stage)
        return stage

    def _silence(self) -> None:
        """A tick of the read watch while the site sends nothing and the relay waits for it:
        ``renderer.keepalive()`` once ``keepalive_s`` seconds passed since the last write, as
        when the site sends frames that give the client nothing (a proxy in front of the
        client may close a connection idle for a minute). Not while a client leaves earlier
        bytes unread, nor after the end."""
        resp = self.resp
        if resp is None or self.ended or self.gone or self._ping is not None:
            return
        now = time.perf_counter()
        if now - self.last_write < self.keepalive_s:
            return
        transport = self.request.transport
        if transport is None or transport.get_write_buffer_size():
            return
        self.last_write = now
        task = asyncio.Task(
            resp.write(self.renderer.keepalive()),
            loop=asyncio.get_running_loop(),
            name="keepalive",
            eager_start=True,  # written now; only a full buffer's drain is waited for
        )
        if task.done():
            self._wrote(task)
        else:
            self._ping = task
            task.add_done_callback(self._wrote)

    def _wrote(self, task: asyncio.Task[None]) -> None:
        self._ping = None
        if not task.cancelled():
            task.exception()  # a client gone: the relay's next write finds out

    async def _end(self) -> None:
        """Write the held-back last bytes with the end of the body (once). A client gone by
        then sets ``gone`` (said in the turn's log line, which follows)."""
        if self.ended:
            return
        self.ended = True
        assert self.resp is not None
        try:
            await self.resp.write_eof(self.tail)
        except ConnectionError:
            self.gone = True
        self.tail = b""


class _SSEResponse(web.StreamResponse):
    """A stream whose headers leave with its first bytes: one packet, one system call less
    per stream. (aiohttp's ``web.Response`` already buffers them this way; a
    ``StreamResponse`` sends them at ``prepare`` unless this class attribute is off.)"""

    _send_headers_immediately = False


def _sse_response(renderer: StreamRenderer) -> web.StreamResponse:
    """The 200 stream for ``renderer``'s answer, not prepared: its headers but Server-Timing."""
    headers = dict(SSE_HEADERS)
    headers["Content-Type"] = renderer.content_type
    return _SSEResponse(status=200, headers=headers)


async def _start(
    request: web.Request,
    out: list[OutEvent],
    renderer: StreamRenderer,
    t0: float,
    upstream_s: float,
    ready: web.StreamResponse | None = None,
) -> web.StreamResponse:
    """Commit the 200 stream (``ready``, made ahead by :func:`_sse_response`, or a new one), or
    raise the failure if nothing has been sent yet.

    The head is not written here: the caller sends it together with the first events, so
    headers, head and first text leave in as few packets as possible.
    """
    if isinstance(out[0], Failure):
        raise out[0].error
    resp = ready if ready is not None else _sse_response(renderer)
    resp.headers["Server-Timing"] = server_timing(t0, upstream_s)
    await resp.prepare(request)
    return resp


class StreamStart[R: StreamRenderer]:
    """The first turn of a streamed answer, made ready while the completion's headers are on
    their way: handed to :meth:`proxy.service.ChatService.open_chat` as its ``warm``, which
    calls it with the turn's :class:`OpenChat` (its stream not open yet) once the request is
    sent. It builds the front door's renderer (``make_renderer()``, once), the relay's turn
    state with its response (every header but ``Server-Timing``; committed only with the first
    event), the translator and the tool and stop stages for that chat, so that after the
    headers only the pump is left to build before the first token is read (bench/README.md,
    "2026-11-29, late"). Called again for another chat (a refused continuation falls back to a
    new chat), it builds them again for that one.

    Then ``relay(request, conv, chat, start.renderer(), start=start)``: the relay takes what was
    built if it was built for ``chat``, and builds it itself otherwise.
    """

    __slots__ = ("_make", "_renderer", "chat", "conv", "request", "stages", "turn")

    def __init__(self, request: web.Request, conv: Conversation, make_renderer: Callable[[], R]):
        self.request = request
        self.conv = conv
        self._make: Callable[[], R] | None = make_renderer
        self._renderer: R | None = None
        self.chat: OpenChat | None = None  # what ``turn`` and ``stages`` were built for
        self.turn: _Turn | None = None
        self.stages: _Stages | None = None

    def renderer(self) -> R:
        """The renderer (built on the first call)."""
        make = self._make
        if make is not None:
            self._renderer = make()
            self._make = None
        return self._renderer  # type: ignore[return-value]

    def __call__(self, chat: OpenChat) -> None:
        renderer = self.renderer()
        conv = self.conv
        self.chat = chat
        self.turn = turn = _Turn(self.request, renderer, KEEPALIVE_S)
        turn.ready = _sse_response(renderer)
        self.stages = _stages(self.request, conv, chat, renderer, hold=_correctable(conv))


def first_byte(request: web.Request, t0: float) -> None:
    """Observe the time to first token of a stream committed now (``t0``: the request's
    ``perf_counter`` start) in the app's metrics (``time_to_first_token_seconds{route}``)."""
    request.app[METRICS].first_byte(route_template(request), time.perf_counter() - t0)


async def aggregate(
    request: web.Request, conv: Conversation, chat: OpenChat, renderer: BodyRenderer
) -> web.Response:
    """Answer ``chat`` as one JSON body built by ``renderer`` from the same events a stream
    gets. Raises the stream's :class:`UpstreamError` if it failed."""
    t0: float = request[START_KEY]
    stage, usage, wait = await _fold(request, conv, chat, renderer, hold=_correctable(conv))
    if stage is not None and stage.wants_retry:
        corrected = _corrected(renderer.id, conv, stage)
        async with request.app[SERVICE].open_chat(corrected, route=chat.route) as again:
            _, usage, more = await _fold(request, corrected, again, renderer, hold=False)
            wait += more
    body = renderer.body(usage)
    return web.Response(
        body=orjson.dumps(body),
        content_type="application/json",
        headers={"Server-Timing": server_timing(t0, wait)},
    )


async def _fold(
    request: web.Request, conv: Conversation, chat: OpenChat, renderer: BodyRenderer, *, hold: bool
) -> tuple[ToolStage | None, Usage | None, float]:
    translator, stage, stop = _stages(request, conv, chat, renderer, hold=hold)
    pump = _Pump(chat, translator, stage, stop)
    while (out := await pump.next_batch()) is not None:
        for e in out:
            renderer.add(e)
    _log_done(request, renderer.id, conv, translator, chat, stage)
    _remember(chat, translator, stage)
    return stage, translator.usage, pump.wait_s


def _remember(chat: OpenChat, translator: Translator, stage: ToolStage | None) -> None:
    """With tools, tell the conversation map (native multi-turn) the answer the client got:
    its text without call markup and its calls, which is what the client sends back next."""
    if stage is None or chat.on_answer is None:
        return
    if stage.finished and translator.failure is None:
        chat.on_answer(translator, "".join(stage.texts), tuple(stage.calls))


def _correctable(conv: Conversation) -> bool:
    """``tool_choice`` asks for a call and this is not already the corrective turn."""
    return (
        conv.tools_active
        and conv.tool_choice.mode in ("required", "named")
        and CORRECTION_KEY not in conv.metadata
    )


def _corrected(response_id: str, conv: Conversation, stage: ToolStage) -> Conversation:
    """The conversation of the one corrective turn: the prose answer and a system line asking
    for the call (:func:`proxy.tools.prompt.build_prompt`)."""
    log.info("tool_choice_retry", completion_id=response_id, mode=conv.tool_choice.mode)
    return replace(conv, metadata={**conv.metadata, CORRECTION_KEY: stage.prose()})


def _stages(
    request: web.Request,
    conv: Conversation,
    chat: OpenChat,
    renderer: StreamRenderer | BodyRenderer,
    *,
    hold: bool = False,
) -> _Stages:
    """One turn's translator (in the renderer's ``reasoning_mode``, else the settings'), tool
    stage (when tools are offered) and stop stage (when the conversation has stop sequences or
    an output-token limit, :mod:`proxy.stop`): all but the pump, which needs the open stream
    (:class:`StreamStart` builds them before it is open)."""
    stage = ToolStage(conv, hold_prose=hold) if conv.tools else None
    stop = StopStage(conv.stop, conv.max_output_tokens)
    reasoning: ReasoningMode | None = getattr(renderer, "reasoning_mode", None)
    translator = chat.translator(
        reasoning or request.app[SETTINGS].reasoning,
        native_tools=conv.tools_active,
        record=stage is None,
    )
    return translator, stage, stop if stop.active else None


def _log_done(
    request: web.Request,
    response_id: str,
    conv: Conversation,
    translator: Translator,
    chat: OpenChat,
    stage: ToolStage | None,
    *,
    gone: bool = False,
) -> None:
    """The turn's ``chat_completion`` line, the request's line: noted in
    :data:`~proxy.state.LOGGED` (with the failure it reports, whose error answer then logs no
    line besides). It holds the failure's code and message, if any, and
    ``client_disconnected`` when the client left after the commit (``gone``); the tool stage's
    events get their own lines first."""
    failure = translator.failure
    request[LOGGED] = failure or True
    tools: dict[str, Any] = {}
    if stage is not None:
        counters = request.app.get(TOOL_COUNTERS)
        if counters is not None:
            counters.record(conv, stage)
        for r in stage.rejections:
            log.warning(
                "tool_call_rejected",
                completion_id=response_id,
                reason=r.reason,
                tool=r.name,
                detail=r.detail,
            )
        unmet = not stage.calls and not stage.wants_retry and not failure
        if unmet and conv.tool_choice.mode in ("required", "named"):
            log.info("tool_choice_unmet", completion_id=response_id, mode=conv.tool_choice.mode)
        repeated = repeated_calls(conv.turns)
        if repeated:
            if counters is not None:
                counters.repeated_in_history += 1
            log.info(
                "tool_call_repeated_in_history",
                completion_id=response_id,
                tools=sorted({name for name, _, _ in repeated}),
            )
        tools = {
            "tool_calls": len(stage.calls),
            "tool_rejections": len(stage.rejections) or None,
            "dropped_after_call": stage.dropped_chars or None,
        }
    if failure is not None:
        tools["message"] = request.app[MASKER].mask(clip(failure.message, 500))
    if gone:
        tools["client_disconnected"] = True
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
        **tools,
    )
