"""The upstream HTTP client: the only module of ``proxy.qwen`` that does I/O.

It speaks the v2 flow (docs/protocol.md §3, §4) over the app's one ``aiohttp.ClientSession``:
``GET /api/models``, ``POST /api/v2/chats/new``, ``POST /api/v2/chat/completions?chat_id=…``;
for media (§6, §7) also the t2v JSON completion, ``GET /api/v1/tasks/status/<id>``,
``POST /api/v2/files/getstsToken``, the signed OSS PutObject and the download of a generated
image from the CDN (never with the account's token: CDN URLs are signed by their ``?key=``).
Every answer that is not the expected JSON success or SSE stream is turned into an
:class:`~proxy.errors.UpstreamError` by :func:`proxy.qwen.envelope.classify_response`
(docs/protocol.md §4.3: branch on the content type before parsing).

Requests carry UTF-8 JSON bytes with ``Content-Type: application/json; charset=utf-8`` and
ASCII-only headers (a non-ASCII ``timezone`` header broke other proxies, §11.9 (c)). The token
goes both in ``Authorization: Bearer`` and in the ``token`` cookie, as browsers and most proxies
send it (§1). No anti-bot token is generated or forged here.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import inspect
import re
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

import aiohttp
import orjson
from aiohttp.client_proto import ResponseHandler
from aiohttp.http import RawResponseMessage
from aiohttp.http_exceptions import HttpProcessingError

from proxy.accounts import Account
from proxy.config import Settings
from proxy.errors import (
    UpstreamBadMediaError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamReplayMissError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
    clip,
)
from proxy.qwen.envelope import classify_response, envelope_error
from proxy.qwen.files import OssPut, StsGrant, parse_sts, sniff
from proxy.qwen.media import host_allowed
from proxy.qwen.request import encode_json, new_uuid
from proxy.sweep import Deadline, Sweeper, sweep_interval

__all__ = [
    "QwenClient",
    "ReadWatch",
    "js_timezone_header",
    "network_failure",
    "upstream_connector",
    "upstream_label",
]

#: Bytes read from a non-stream error answer (an envelope is small; a WAF page a few KB).
ERROR_BODY_LIMIT = 256 * 1024
#: The most of a JSON answer read (``chats/new``, the model list, a task's status), in bytes:
#: they are a few hundred kB at most; a larger one is refused, not held whole.
JSON_BODY_LIMIT = 16 * 2**20
#: How many times :meth:`QwenClient._open` sends a request whose pooled connection turns out
#: closed by the server before any answer (the first time and two more).
_OPEN_ATTEMPTS = 3
#: The redirect statuses a media download follows: a generated image's
#: (:meth:`QwenClient.fetch_media`) and a client's media URL (:func:`proxy.fetch.fetch_url`).
REDIRECT_STATUSES = frozenset((301, 302, 303, 307, 308))
#: The most redirects one media download follows.
MAX_MEDIA_REDIRECTS = 3
#: Bounds on the head of an upstream answer, above aiohttp's defaults (8190 bytes per status
#: line or header field, 128 header fields), which refuse valid HTTP/1.1: a WAF's 9 KB
#: ``Set-Cookie``, a CDN or WAF adding many headers. Still bounded: at most 512 fields of 64 KiB.
UPSTREAM_MAX_LINE_SIZE = 64 * 1024
UPSTREAM_MAX_FIELD_SIZE = 64 * 1024
UPSTREAM_MAX_HEADERS = 512


def _head_limits() -> dict[str, Any]:
    """Those bounds as ``ClientSession.request`` arguments, each one this aiohttp takes (the
    session's constructor documents the same names; ``max_headers`` is recent)."""
    accepted = inspect.signature(aiohttp.ClientSession).parameters
    limits = {
        "max_line_size": UPSTREAM_MAX_LINE_SIZE,
        "max_field_size": UPSTREAM_MAX_FIELD_SIZE,
        "max_headers": UPSTREAM_MAX_HEADERS,
    }
    return {name: value for name, value in limits.items() if name in accepted}


_HEAD_LIMITS = _head_limits()

#: A chat id this proxy uses as ``chats/new`` issued it: the ids are UUIDs (docs/protocol.md §3);
#: any URL-safe token up to 128 characters is taken, anything else (characters that would
#: change the completion's URL: ``&``, ``/``, ``#``…) is refused.
_CHAT_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")

#: How errors name the object store an upload goes to (its signed URL is never quoted).
_OBJECT_STORE = "chat.qwen.ai's object store"

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class _MalformedBodyError(aiohttp.ClientPayloadError):
    """An answer's body broke its HTTP framing after its head was read (a chunk size that is
    not hex, a chunk shorter than it said): what its reader raises (:func:`network_failure`:
    "it sent a malformed HTTP answer")."""


class _IdleParser:
    """Stands in for a kept-alive connection's HTTP parser from the end of an answer until the
    connection is taken for the next request (:class:`_LeanResponseHandler`).

    HTTP/1.1 has no way to tell which request an answer belongs to but the order: bytes that
    come while no request is waiting for one (an unsolicited answer from a broken site or
    middlebox, a doubled last chunk, a late keep-alive line) would be read as the next
    request's answer on this connection. Any such byte closes the connection instead; the
    connector never hands out a closing connection, so the next request takes another one.
    ``parser``: the parser it stands in for, put back when the connection is taken."""

    __slots__ = ("_protocol", "parser")

    def __init__(self, protocol: _LeanResponseHandler, parser: Any) -> None:
        self._protocol = protocol
        self.parser = parser

    def feed_data(self, data: bytes) -> tuple[tuple[()], bool, bytes]:
        """The parser's call for bytes read (``(messages, upgraded, tail)``): any byte closes
        the connection, and none is parsed."""
        if data:  # (an empty feed is the protocol resuming, not the network)
            self._protocol.unsolicited()
        return (), False, b""

    def feed_eof(self) -> None:
        """The connection's end between answers: nothing to finish."""
        return None

    def pause_reading(self) -> None:
        """Flow control between answers: nothing is parsed, so nothing to pause."""
        return None


class _LeanResponseHandler(ResponseHandler):
    """aiohttp's client protocol, minus a needless call after every read of a body, and
    never reused after bytes that no request asked for.

    aiohttp 3.14's ``StreamReader`` calls its protocol's ``resume_reading()`` after every read
    that leaves its buffer below the low-water mark, whether reading was paused or not; each
    call feeds the parser an empty chunk and asks the transport to resume. On a streamed
    answer that is one such round per network chunk (about 30 per short answer: 15-20 µs of
    CPU per stream, bench/README.md, "2026-11-29, evening"). Here it is done only when reading
    is paused (flow control or a held buffer), the one case it does anything: an unpaused
    parser holds no unparsed data and an unpaused transport has nothing to resume.

    aiohttp leaves a kept-alive connection's parser in place between requests, so bytes
    arriving after an answer's end are parsed and queued, and the next request on the
    connection reads them as its answer (another request's answer, another account's). Here,
    once an answer's body is complete (its ``StreamReader``'s end: a 1xx is not the answer),
    the parser gives way to an :class:`_IdleParser` that closes the connection on any byte,
    and a message parsed from the bytes after the end (in the same network read) does the
    same; :meth:`set_response_params`, which aiohttp calls when the connection is taken for a
    request, before anything is written, puts the parser back. Nothing is added per network
    chunk: the stand-in is only in place between answers. Where aiohttp has no ``_parser``
    (another version), the connection is left as aiohttp handles it.
    """

    __slots__ = ()

    def resume_reading(self, resume_parser: bool = True) -> None:
        if self._reading_paused or getattr(self, "_buffer_paused", False):
            super().resume_reading(resume_parser)

    def set_response_params(self, *args: Any, **kwargs: Any) -> None:
        """aiohttp's call when the connection is taken for a request (before anything is
        written): the parser the :class:`_IdleParser` stood in for is put back first."""
        parser = getattr(self, "_parser", None)
        if isinstance(parser, _IdleParser):
            self._parser = parser.parser
        super().set_response_params(*args, **kwargs)

    def feed_data(
        self, data: tuple[RawResponseMessage, aiohttp.StreamReader], size: int = 0
    ) -> None:
        """A parsed message (``(head, body reader)``): one that comes while no request waits
        closes the connection; the answer's body end puts the :class:`_IdleParser` in place."""
        if isinstance(getattr(self, "_parser", None), _IdleParser):
            self.unsolicited()  # parsed after the answer's end, in the same network read
            return
        message, payload = data
        if not 100 <= message.code <= 199:  # the answer itself, not an informational 1xx
            payload.on_eof(self._answer_ended)
        super().feed_data(data, size)

    def set_exception(self, exc: BaseException, *args: Any, **kwargs: Any) -> None:
        """aiohttp's, and a parse error also fails the body being read.

        aiohttp 3.14 puts an error of its parser on the protocol only (where the next answer's
        head is read), and closes the connection; the answer whose body was being read is
        left waiting (``connection_lost`` fails it only when the parser still says the body is
        unfinished, which after some errors it does not), until a read timeout: 180 s by
        default, then reported as a silence. Here its reader fails at once."""
        super().set_exception(exc, *args, **kwargs)
        if isinstance(exc, HttpProcessingError):
            payload = self._payload
            if payload is not None and not payload.is_eof() and payload.exception() is None:
                payload.set_exception(_MalformedBodyError("the answer's framing is broken"), exc)

    def _answer_ended(self) -> None:
        parser = getattr(self, "_parser", None)
        if parser is not None and not isinstance(parser, _IdleParser):
            self._parser = _IdleParser(self, parser)  # type: ignore[assignment]

    def unsolicited(self) -> None:
        """Bytes came that no request asked for: close the connection, never to be reused."""
        self.force_close()
        transport = self.transport
        if transport is not None:
            transport.close()


def upstream_connector(**kwargs: Any) -> aiohttp.TCPConnector:
    """An ``aiohttp.TCPConnector(**kwargs)`` whose connections use :class:`_LeanResponseHandler`.

    The protocol factory is a private attribute of aiohttp's connector; where it is not what
    this expects (another aiohttp version), the connector is left as aiohttp made it: the
    answers are the same, only a little more CPU is spent per chunk.
    """
    connector = aiohttp.TCPConnector(**kwargs)
    factory = getattr(connector, "_factory", None)
    if isinstance(factory, functools.partial) and factory.func is ResponseHandler:
        connector._factory = functools.partial(  # type: ignore[assignment]
            _LeanResponseHandler, *factory.args, **factory.keywords
        )
    return connector


def js_timezone_header(now: datetime | None = None) -> str:
    """The ``timezone`` header in JavaScript ``Date.toString()`` form, ASCII only.

    Example: ``Sun Oct 26 2025 10:50:29 GMT-0400`` (docs/protocol.md §1). Built from numbers, never
    from the OS locale, so a Chinese-locale machine cannot put non-ASCII text in a header.
    """
    now = (now or datetime.now()).astimezone()
    offset = now.utcoffset()
    minutes = int(offset.total_seconds() // 60) if offset else 0
    sign = "+" if minutes >= 0 else "-"
    minutes = abs(minutes)
    zone = f"GMT{sign}{minutes // 60:02d}{minutes % 60:02d}"
    return (
        f"{_DAYS[now.weekday()]} {_MONTHS[now.month - 1]} {now.day:02d} {now.year} "
        f"{now.hour:02d}:{now.minute:02d}:{now.second:02d} {zone}"
    )


def upstream_label(url: str) -> str:
    """How messages name the upstream: ``chat.qwen.ai`` for the site, else ``the upstream at
    <scheme://host:port>`` (a replay server, a mirror), never with credentials or a path."""
    parts = urlsplit(url)
    host = parts.hostname or url
    if host == "chat.qwen.ai":
        return "chat.qwen.ai"
    port = f":{parts.port}" if parts.port else ""
    return f"the upstream at {parts.scheme}://{host}{port}"


def network_failure(exc: BaseException) -> str:
    """What went wrong on the network, in words, never a library class name: ``"its host
    name could not be resolved"``, ``"the connection was refused"``, ``"the answer was cut
    off before its end"``…"""
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return "its host name could not be resolved"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError | aiohttp.ClientSSLError):
        return "its TLS certificate was not accepted"
    if isinstance(exc, aiohttp.ClientConnectorError):
        if exc.os_error.errno == errno.ECONNREFUSED:
            return "the connection was refused (nothing listens there?)"
        return "no connection could be made"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "it closed the connection without answering"
    if isinstance(exc, _MalformedBodyError):
        return "it sent a malformed HTTP answer"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "the answer was cut off before its end"
    if isinstance(exc, aiohttp.ClientResponseError):
        return "it sent a malformed HTTP answer"
    if isinstance(exc, aiohttp.InvalidURL):
        return "the URL is not valid"
    if isinstance(exc, TimeoutError):
        return "it did not answer in time"
    if isinstance(exc, OSError) and exc.strerror:
        return f"a network error occurred ({exc.strerror.lower()})"
    return "a network error occurred"


async def read_capped(
    stream: aiohttp.StreamReader, limit: int, *, into: bytearray | None = None
) -> bytes:
    """The body up to ``limit`` bytes, however many network chunks it arrives in.

    (``StreamReader.read(n)`` returns only what has arrived so far, so one call can cut a
    multi-chunk error envelope mid-JSON.) Raises what the stream raises; ``into``: the buffer
    read into, which keeps what came when the read is cut short (a timeout)."""
    buf = bytearray() if into is None else into
    while len(buf) < limit:
        chunk = await stream.read(limit - len(buf))
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


class ReadWatch:
    """Fails a response body's reader (``content``) with :class:`aiohttp.ServerTimeoutError`
    once no byte has arrived for ``timeout_s`` seconds while its reader waits, as aiohttp's
    ``sock_read`` timeout does, without a timer per network read: on each tick of ``sweeper``
    (:class:`proxy.sweep.Sweeper`) it looks at the byte count, so a silence is caught between
    ``timeout_s`` and ``timeout_s`` + the sweeper's interval after the last byte.

    ``waiting``: the reader says whether it is waiting for the body (the default) or busy with
    what it read (the relay writing to a slow client): like aiohttp, which stops its timer while
    reading is paused for backpressure, time spent busy is not the site's silence.
    :meth:`cancel` when the body is done with.

    ``on_silence``: called on each tick while the reader waits and no byte came since the last
    one (the relay writes its client's keep-alives from there)."""

    __slots__ = ("_content", "_seen", "_since", "_sweeper", "_timeout", "on_silence", "waiting")

    def __init__(self, content: aiohttp.StreamReader, timeout_s: float, sweeper: Sweeper) -> None:
        self._content = content
        self._timeout = timeout_s
        self._sweeper = sweeper
        self.waiting = True
        self.on_silence: Callable[[], None] | None = None
        self._seen = content.total_bytes
        self._since = asyncio.get_running_loop().time()
        sweeper.add(self)

    def check(self, now: float) -> bool:
        """The sweeper's tick (``now``: the loop's clock). Returns whether to keep watching."""
        content = self._content
        if content.is_eof() or content.exception() is not None:
            return False
        if content.total_bytes != self._seen or not self.waiting:
            self._seen, self._since = content.total_bytes, now
        elif now - self._since >= self._timeout:
            content.set_exception(aiohttp.ServerTimeoutError("Timeout on reading data from socket"))
            return False
        elif self.on_silence is not None and now > self._since:
            self.on_silence()
        return True

    @property
    def timeout_s(self) -> float:
        """The longest silence allowed, in seconds."""
        return self._timeout

    def cancel(self) -> None:
        """Stop watching."""
        self._sweeper.discard(self)


class QwenClient:
    """Calls chat.qwen.ai for one app. ``session`` is the app's shared ``ClientSession``."""

    def __init__(
        self, session: aiohttp.ClientSession, settings: Settings, sweeper: Sweeper | None = None
    ) -> None:
        self._session = session
        #: watches the completion streams' silences and the deadline until their headers
        self.sweeper = sweeper or Sweeper(sweep_interval(settings.read_timeout_s))
        self._base = settings.upstream_url
        #: How error messages name the upstream (:func:`upstream_label`).
        self.label = upstream_label(settings.upstream_url)
        self._settings = settings
        self._proxy = settings.upstream_proxy
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=settings.connect_timeout_s, sock_read=settings.read_timeout_s
        )
        # The completion stream and the JSON calls: no per-read timer (aiohttp re-arms one on
        # every network read, a dozen per answer); a Deadline on the sweeper bounds the JSON
        # answer and the stream's headers, a ReadWatch the stream's silences.
        self._deadline_timeout = aiohttp.ClientTimeout(
            total=None, connect=settings.connect_timeout_s, sock_read=None
        )
        static = {
            "Accept": "application/json, text/plain, */*",
            "Accept-Language": "en-US,en;q=0.9",
            "Content-Type": "application/json; charset=utf-8",
            "Origin": self._base,
            "User-Agent": settings.user_agent,
            "source": "web",
            "version": settings.frontend_version,
        }
        #: the first non-ASCII constant header, refused at each request (not at start-up)
        self._bad_static = next((n for n, v in static.items() if not v.isascii()), None)
        self._static = static
        self._static_stream = {**static, "Accept": "text/event-stream", "x-accel-buffering": "no"}
        self._creds: dict[int, tuple[Account, dict[str, str]]] = {}
        self._tz: tuple[int, str] = (-1, "")

    # -- headers -------------------------------------------------------------------------------

    def headers(self, account: Account, *, referer: str, stream: bool = False) -> dict[str, str]:
        """The header set for one upstream request (docs/protocol.md §1). All values are ASCII.

        The constant part is built and checked once per client, the credentials once per
        account, the ``timezone`` value once per second; per request only ``Referer``,
        ``timezone`` and ``x-request-id`` are set.
        """
        if self._bad_static is not None:
            raise UpstreamProtocolError(f"refusing to send a non-ASCII `{self._bad_static}` header")
        h = dict(self._static_stream if stream else self._static)
        ref = f"{self._base}{referer}"
        h["Referer"] = ref
        h["timezone"] = self._timezone()
        h["x-request-id"] = new_uuid()
        creds = self._creds.get(id(account))
        if creds is None or creds[0] is not account:
            creds = (account, self._credentials(account))
            self._creds[id(account)] = creds
        h.update(creds[1])
        if not ref.isascii():
            raise UpstreamProtocolError("refusing to send a non-ASCII `Referer` header")
        return h

    def _credentials(self, account: Account) -> dict[str, str]:
        """``Authorization`` and ``Cookie`` for ``account`` (checked to be ASCII)."""
        out: dict[str, str] = {}
        cookies: list[str] = []
        if account.token is not None:
            token = account.token.get_secret_value()
            out["Authorization"] = f"Bearer {token}"
            cookies.append(f"token={token}")
        if self._settings.cookies is not None:
            cookies.append(self._settings.cookies.get_secret_value())
        if cookies:
            out["Cookie"] = "; ".join(cookies)
        for name, value in out.items():
            if not value.isascii():
                raise UpstreamProtocolError(f"refusing to send a non-ASCII `{name}` header")
        return out

    def _timezone(self) -> str:
        """:func:`js_timezone_header` for now, computed at most once per second."""
        now = int(time.time())
        if self._tz[0] != now:
            self._tz = (now, js_timezone_header())
        return self._tz[1]

    # -- calls ---------------------------------------------------------------------------------

    async def fetch_models(self, account: Account) -> Any:
        """``GET /api/models``, or the 2026 ``GET /api/v2/models/`` when the first is gone.

        Returns the decoded JSON (docs/protocol.md §2, §8). Raises :class:`UpstreamError`; when both
        paths fail, the error of the first.
        """
        try:
            return await self._json("GET", "/api/models", account, None, referer="/")
        except (UpstreamProtocolError, UpstreamReplayMissError) as first:
            try:
                return await self._json("GET", "/api/v2/models/", account, None, referer="/")
            except UpstreamError:
                raise first from None

    async def new_chat(self, account: Account, body: dict[str, Any]) -> str:
        """``POST /api/v2/chats/new``; returns the server-issued chat id (``data.id``, §3)."""
        payload = await self._json(
            "POST", "/api/v2/chats/new", account, body, referer="/c/new-chat"
        )
        data = payload.get("data") if isinstance(payload, dict) else None
        chat_id = data.get("id") if isinstance(data, dict) else None
        if not isinstance(chat_id, str) or not chat_id:
            raise UpstreamProtocolError("chat.qwen.ai created a chat but returned no chat id")
        if _CHAT_ID.fullmatch(chat_id) is None:  # (the id itself is not quoted)
            raise UpstreamProtocolError(
                f"{self.label} created a chat whose id is not a URL-safe token (letters, digits, "
                "'-' and '_', at most 128 characters)"
            )
        return chat_id

    async def open_stream(
        self, account: Account, chat_id: str, body: dict[str, Any]
    ) -> tuple[aiohttp.ClientResponse, ReadWatch]:
        """Open the completion stream: the response positioned at its first byte and the
        :class:`ReadWatch` of its body (``read_timeout_s``; a reader sets its ``waiting``).

        Raises :class:`UpstreamError` when the answer is not an SSE stream,
        :class:`UpstreamTimeoutError` when its headers do not come within ``read_timeout_s``
        (noticed on the first tick of :attr:`sweeper` after it).
        The caller cancels the watch and releases the response when done with it, also on
        error or client disconnect (:meth:`proxy.service.ChatService.open_turn` does); on a
        raise, nothing is left to release.
        """
        quoted = quote(chat_id, safe="")
        url = f"{self._base}/api/v2/chat/completions?chat_id={quoted}"
        headers = self.headers(account, referer=f"/c/{quoted}", stream=True)
        data = encode_json(body)
        del body  # not kept alive for the whole stream
        read_timeout_s = self._settings.read_timeout_s
        try:
            with Deadline(self.sweeper, read_timeout_s):  # until the answer's headers
                resp = await self._open("POST", url, data, headers, self._deadline_timeout)
        except TimeoutError:
            raise self._timed_out() from None
        del data, headers
        watch = ReadWatch(resp.content, read_timeout_s, self.sweeper)
        try:
            ctype = resp.headers.get("Content-Type", "").lower()
            if resp.status != 200 or "text/event-stream" not in ctype:
                raise await self._failure(resp, ctype)
        except BaseException:
            watch.cancel()
            resp.release()
            raise
        return resp, watch

    async def stop(self, account: Account, chat_id: str, response_id: str | None) -> None:
        """``POST /api/v2/chat/completions/stop?chat_id=<id>`` with ``{"chat_id", "response_id"}``
        (docs/protocol.md §13.1): what the browser sends when the user presses stop, so the account
        is not kept busy with an answer nobody reads. ``response_id`` is left out when the stream
        never said it. Raises :class:`UpstreamError`."""
        body: dict[str, Any] = {"chat_id": chat_id}
        if response_id:
            body["response_id"] = response_id
        quoted = quote(chat_id, safe="")
        path = f"/api/v2/chat/completions/stop?chat_id={quoted}"
        await self._json("POST", path, account, body, referer=f"/c/{quoted}")

    async def list_chats(self, account: Account, page: int) -> list[dict[str, Any]]:
        """``GET /api/v2/chats/?page=N`` (§2): the page's chats (``id``, ``title``,
        ``updated_at``…), ``[]`` past the last page. Raises :class:`UpstreamError`."""
        payload = await self._json("GET", f"/api/v2/chats/?page={page}", account, None, referer="/")
        data = payload.get("data") if isinstance(payload, dict) else None
        if isinstance(data, dict):  # tolerate a {"data": {"data": [...]}} wrapping
            data = data.get("data")
        return [c for c in data if isinstance(c, dict)] if isinstance(data, list) else []

    async def delete_chat(self, account: Account, chat_id: str) -> None:
        """``DELETE /api/v2/chats/<id>`` (§2). Raises :class:`UpstreamError`."""
        path = f"/api/v2/chats/{quote(chat_id, safe='')}"
        await self._json("DELETE", path, account, None, referer="/")

    # -- media (docs/protocol.md §6, §7) ----------------------------------------------------------

    async def completion_json(self, account: Account, chat_id: str, body: dict[str, Any]) -> Any:
        """``POST /api/v2/chat/completions`` with ``stream: false`` (t2v, §6.3): the JSON answer.

        Raises :class:`UpstreamError` for an error envelope, a WAF page or a failed request.
        """
        quoted = quote(chat_id, safe="")
        return await self._json(
            "POST",
            f"/api/v2/chat/completions?chat_id={quoted}",
            account,
            body,
            referer=f"/c/{quoted}",
        )

    async def task_status(self, account: Account, task_id: str) -> Any:
        """``GET /api/v1/tasks/status/<task_id>`` (§6.3): the decoded JSON."""
        path = f"/api/v1/tasks/status/{quote(task_id, safe='')}"
        return await self._json("GET", path, account, None, referer="/")

    async def sts_token(
        self, account: Account, filename: str, size: int, filetype: str
    ) -> StsGrant:
        """``POST /api/v2/files/getstsToken`` (§7.1): the upload grant (secrets stay inside it)."""
        body = {"filename": filename, "filesize": str(size), "filetype": filetype}
        payload = await self._json("POST", "/api/v2/files/getstsToken", account, body, referer="/")
        return parse_sts(payload)

    async def put_object(self, put: OssPut, data: bytes) -> None:
        """Send the signed OSS PutObject (§7.2). Raises :class:`UpstreamUnavailableError` when the
        object store does not answer 200 (its answer is not quoted: it may echo the request)."""
        resp = await self._open("PUT", put.url, data, put.headers, label=_OBJECT_STORE)
        try:
            await read_capped(resp.content, ERROR_BODY_LIMIT)
        except (TimeoutError, aiohttp.ClientError):
            pass
        finally:
            resp.release()
        if resp.status not in (200, 201, 204):
            raise UpstreamUnavailableError(
                f"the upload to chat.qwen.ai's object store failed (HTTP {resp.status})"
            )

    async def fetch_media(self, url: str, *, limit: int, timeout_s: float) -> tuple[bytes, str]:
        """Download a generated image from the CDN: ``(bytes, media type from magic bytes)``.

        Sent without credentials. Raises :class:`UpstreamBadMediaError` when the answer is not
        200, is larger than ``limit`` bytes, or is not an image (content type and magic bytes,
        §6.4: a captcha page is not an image); :class:`UpstreamTimeoutError` after
        ``timeout_s`` seconds.
        """
        headers = {"User-Agent": self._settings.user_agent, "Accept": "image/*,*/*;q=0.8"}
        try:
            async with asyncio.timeout(timeout_s):
                resp = await self._open_media(url, headers)
                try:
                    declared = resp.headers.get("Content-Type", "").lower()
                    length = resp.content_length
                    if resp.status != 200:
                        raise UpstreamBadMediaError(
                            f"the generated image could not be downloaded (HTTP {resp.status})"
                        )
                    if length is not None and length > limit:
                        raise UpstreamBadMediaError(
                            f"the generated image is larger than {limit} bytes"
                        )
                    buf = bytearray()
                    async for chunk in resp.content.iter_chunked(65536):
                        buf += chunk
                        if len(buf) > limit:
                            raise UpstreamBadMediaError(
                                f"the generated image is larger than {limit} bytes"
                            )
                finally:
                    resp.release()
        except TimeoutError:
            raise UpstreamTimeoutError("the generated image did not download in time") from None
        except aiohttp.ClientError as exc:
            raise UpstreamUnavailableError(
                f"the generated image could not be downloaded: {network_failure(exc)}"
            ) from exc
        kind = sniff(bytes(buf[:16]))
        if kind is None or not kind.startswith("image/") or not declared.startswith("image/"):
            raise UpstreamBadMediaError(
                f"the generated image URL answered {declared or 'untyped'} data that is not an "
                "image (a captcha or error page?)"
            )
        return bytes(buf), kind

    # -- internals -----------------------------------------------------------------------------

    async def _json(
        self, method: str, path: str, account: Account, body: dict[str, Any] | None, *, referer: str
    ) -> Any:
        url = f"{self._base}{path}"
        headers = self.headers(account, referer=referer)
        data = encode_json(body) if body is not None else None
        try:
            # the whole answer within read_timeout_s (on the sweeper's ticks: no timer per
            # request, where aiohttp's per-read timeout re-arms one on every network read)
            with Deadline(self.sweeper, self._settings.read_timeout_s):
                resp = await self._open(method, url, data, headers, self._deadline_timeout)
                try:
                    ctype = resp.headers.get("Content-Type", "").lower()
                    if resp.status == 200:
                        raw = await read_capped(resp.content, JSON_BODY_LIMIT + 1)
                        if len(raw) > JSON_BODY_LIMIT:
                            raise UpstreamProtocolError(
                                f"{self.label} answered {path} with more than "
                                f"{JSON_BODY_LIMIT / 2**20:g} MiB of JSON"
                            )
                    else:
                        raw = await read_capped(resp.content, ERROR_BODY_LIMIT)
                finally:
                    resp.release()
        except TimeoutError as exc:
            raise self._timed_out() from exc
        except aiohttp.ClientError as exc:
            raise UpstreamUnavailableError(
                f"{self.label} broke the connection: {network_failure(exc)}"
            ) from exc
        if resp.status != 200 or "json" not in ctype:
            raise classify_response(
                resp.status,
                ctype,
                raw,
                resp.headers.get("Location"),
                retry_after=resp.headers.get("Retry-After"),
                upstream=self.label,
            )
        try:
            payload = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise classify_response(resp.status, ctype, raw, upstream=self.label) from None
        err = envelope_error(payload)
        if err is not None:
            raise err
        return payload

    async def _open(
        self,
        method: str,
        url: str,
        data: bytes | None,
        headers: dict[str, str],
        limits: aiohttp.ClientTimeout | None = None,
        *,
        label: str | None = None,
    ) -> aiohttp.ClientResponse:
        """Send one request and return the response at its headers.

        A pooled keep-alive connection that the server closed while idle fails before any
        answer arrives (``ServerDisconnectedError`` / connection reset); that one case is sent
        again, at most ``_OPEN_ATTEMPTS`` - 1 times: the failed connection is closed, never
        pooled again, so each attempt takes another pooled connection or a new one (a server
        whose idle timeout closed several pooled connections at once costs an attempt each).
        ``limits``: the request's aiohttp timeouts (default: connect and per-read, from the
        settings); ``label``: how errors name the server (default: the upstream's label).
        Redirects are not followed: a 3xx answer is returned like any other (the site's API
        never redirects a working request; a redirect to another host would take the request
        there). Raises :class:`UpstreamTimeoutError` or :class:`UpstreamUnavailableError`.
        """
        for attempt in range(1, _OPEN_ATTEMPTS + 1):
            try:
                return await self._session.request(
                    method,
                    url,
                    data=data,
                    headers=headers,
                    timeout=limits or self._timeout,
                    proxy=self._proxy,
                    allow_redirects=False,  # a redirect is an answer (classify_response)
                    **_HEAD_LIMITS,
                )
            except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
                raise self._timed_out(label) from exc
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
                if attempt == _OPEN_ATTEMPTS or isinstance(exc, aiohttp.ClientConnectorError):
                    raise UpstreamUnavailableError(
                        f"could not reach {label or self.label}: {network_failure(exc)}"
                    ) from exc
            except aiohttp.ClientError as exc:
                raise UpstreamUnavailableError(
                    f"could not reach {label or self.label}: {network_failure(exc)}"
                ) from exc
        raise AssertionError("unreachable")

    async def _open_media(self, url: str, headers: dict[str, str]) -> aiohttp.ClientResponse:
        """``GET url`` at its headers, following at most :data:`MAX_MEDIA_REDIRECTS` redirects,
        each to ``url``'s own host or a host of ``media_hosts`` (a CDN may send a generated
        image on to a signed copy; nowhere else). Raises :class:`UpstreamBadMediaError` for
        any other redirect."""
        origin = urlsplit(url).hostname or ""
        hosts = tuple(self._settings.media_hosts)
        for _ in range(MAX_MEDIA_REDIRECTS + 1):
            resp = await self._open("GET", url, None, headers)
            location = resp.headers.get("Location")
            if resp.status not in REDIRECT_STATUSES or location is None:
                return resp
            resp.release()
            url = urljoin(url, location)
            host = _http_host(url)
            if host is None or not (host == origin or host_allowed(host, hosts)):
                raise UpstreamBadMediaError(
                    "the generated image's URL redirected elsewhere than http(s) on its own host "
                    f"or a host of the media CDN allow-list ({clip(host or '?', 80)}); not "
                    "followed"
                )
        raise UpstreamBadMediaError(
            f"the generated image's URL redirected more than {MAX_MEDIA_REDIRECTS} times"
        )

    def _timed_out(self, label: str | None = None) -> UpstreamTimeoutError:
        s = self._settings
        return UpstreamTimeoutError(
            f"{label or self.label} did not answer in time (connect timeout "
            f"{s.connect_timeout_s:g} s, read timeout {s.read_timeout_s:g} s)"
        )

    async def _failure(self, resp: aiohttp.ClientResponse, ctype: str) -> UpstreamError:
        """The error for a completion answer that is not an SSE stream (docs/protocol.md §4.3):
        :func:`classify_response` of its status, headers and body, read for at most
        ``read_timeout_s`` in all (as a JSON answer is, :meth:`_json`): a body that drips
        slowly is cut there and what came of it is classified."""
        buf = bytearray()
        try:
            with Deadline(self.sweeper, self._settings.read_timeout_s):
                await read_capped(resp.content, ERROR_BODY_LIMIT, into=buf)
        except (TimeoutError, aiohttp.ClientError):
            pass
        return classify_response(
            resp.status,
            ctype,
            bytes(buf),
            resp.headers.get("Location"),
            retry_after=resp.headers.get("Retry-After"),
            upstream=self.label,
        )


def _http_host(url: str) -> str | None:
    """The host of an http(s) ``url`` (lower case), ``None`` for any other or malformed URL."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:  # a bad port, an unclosed IPv6 bracket
        return None
    return host if parts.scheme in ("http", "https") and host else None


def monotonic_ms() -> float:
    """Milliseconds on the monotonic clock (for Server-Timing)."""
    return time.perf_counter() * 1000.0
