"""Hostile-input defences in front of the routes: forged browser requests, slow bodies, and the
HTTP parser's own refusals.

:func:`guard_check` (one plain function call per request, made by the app's front middleware
after the API-key check, so a caller without the key learns nothing beyond 401) checks, in
order:

1. ``Host``: the listening address, ``localhost`` (when listening on loopback or on every
   address), any IP literal (when listening on every address) or a name in ``allowed_hosts``,
   with an optional numeric port; anything else is 403 ``forbidden_host``, a value that is not
   exactly one ``host[:port]`` too (a comma list, whitespace or junk after the host,
   ``user@host``, an empty or non-numeric port, an IPv6 address without brackets: the check
   judges the whole value, never a prefix of it). A DNS-rebinding page reaches the gateway
   under its own domain name, so this is what stops it from reading answers. ``/healthz`` and
   ``/metrics`` are exempt (probes and scrapers use service names; neither holds a secret).
2. ``Origin``, when no API key is configured: a browser ``Origin`` that is not in
   ``cors_origins`` is 403 ``forbidden_origin`` (a web page must not spend the account).
3. ``Content-Type`` of a POST with a body: ``application/json`` (``multipart/form-data`` for
   ``/images/edits``), else 415. A cross-site "simple" request (``text/plain``, a form) cannot
   carry those types without a CORS preflight, which the gateway only answers for
   ``cors_origins``. A ``Content-Encoding`` the server does not decode is 415 too (the body
   would be read as if not encoded): it decodes one coding given as the header's whole value,
   and a header of only ``identity`` entries means none (:func:`_check_coding`). A JSON body whose
   ``Content-Length`` is over ``max_body_bytes`` is 413 at once, before it is read
   (:func:`announced_too_large`).
4. ``Expect``: only ``100-continue`` (answered by :func:`expect_continue`, the routes'
   expect handler); any other expectation is 417 ``expectation_failed``, an error object that
   does not quote the header (aiohttp's own answer is plain text that does, and a 500 when the
   value is not ASCII). A request no route serves gets the same 417 from the runner
   (:class:`GatewayRunner`), before aiohttp's own expect handler would run.
5. The body must arrive within ``body_timeout_s`` seconds (408 ``request_timeout``; watched on
   the app's sweeper ticks, so at most one tick late); a client that hangs up during its upload
   is logged in one line (``client_gone``) and gets no answer.

:class:`GatewayRunner` is an :class:`aiohttp.web.AppRunner` whose connections answer requests
that aiohttp's HTTP parser refuses (over-long request line or header, too many headers, invalid
characters, bad framing) with an OpenAI error object, 431 for header size, 414 for an over-long
request target and 400 otherwise, and log them in one line. Neither quotes the offending bytes:
aiohttp's own answer echoes the first hundred bytes of the header, which may be ``Authorization:
Bearer <key>``. aiohttp has no supported hook for this (aio-libs/aiohttp#3287), so the runner
swaps in a :class:`aiohttp.web.RequestHandler` subclass overriding its public ``handle_error``.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
import structlog
from aiohttp import HttpVersion11, http_exceptions, web
from aiohttp.abc import AbstractRouter
from aiohttp.compression_utils import HAS_BROTLI, HAS_ZSTD
from aiohttp.web_request import BaseRequest
from multidict import CIMultiDictProxy

from proxy.config import Settings
from proxy.errors import (
    BodyTooLargeError,
    ForbiddenRequestError,
    HeadersTooLargeError,
    HTTPStatusError,
    MalformedHTTPError,
    ProxyError,
    RequestTimeoutError,
    UnsupportedMediaTypeError,
    URITooLongError,
    clip,
    error_body,
    quote,
)
from proxy.frontdoors import OPENAI, FrontDoor, door_for_path
from proxy.state import FRONT_DOORS, LOGGED, MASKER, SETTINGS
from proxy.sweep import Deadline, Sweeper

__all__ = [
    "DECODED_CODINGS",
    "GatewayRunner",
    "allowed_host_names",
    "announced_too_large",
    "discard_input",
    "expect_continue",
    "guard_check",
    "log_path",
    "parse_error_response",
    "with_body_deadline",
]

log = structlog.get_logger("proxy.guard")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_MULTIPART_PATHS = ("/images/edits",)
_HOST_EXEMPT = frozenset({"/healthz", "/metrics"})  # probes and scrapers use any name
_WILDCARD_BINDS = frozenset({"0.0.0.0", "::", ""})
_MAX_VERDICTS = 64  # Host header values judged and kept (see guard_check)
# the Content-Type values JSON clients send, as aiohttp's parser reads them (a known value is
# not parsed again: that parse is a few µs on every request's first-token path)
_JSON_TYPES = {
    "application/json": "application/json",
    "application/json; charset=utf-8": "application/json",
    "application/json;charset=utf-8": "application/json",
    "application/json; charset=UTF-8": "application/json",
}


def log_path(request: web.Request) -> str:
    """The request's path as logs show it: clipped, with any configured secret in it masked
    (a key pasted into a URL is still a key)."""
    return request.app[MASKER].mask(clip(request.path))


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def allowed_host_names(settings: Settings) -> tuple[frozenset[str], bool, bool]:
    """``(names, any_ip_literal, any_host)`` for the Host check (names lower-case, IPv6 without
    brackets)."""
    bind = settings.host.strip("[]").lower()
    names = {bind, *(h.strip("[]").lower() for h in settings.allowed_hosts)}
    if bind in _WILDCARD_BINDS or _is_loopback(bind):
        names |= {"localhost", "127.0.0.1", "::1"}
    return frozenset(names), bind in _WILDCARD_BINDS, "*" in settings.allowed_hosts


#: a Host header value (RFC 9110 §7.2): one host, a name or an IP literal (IPv6 in brackets),
#: and an optional numeric port; nothing else (no list, no whitespace, no userinfo)
_HOST_VALUE = re.compile(r"(?:\[([0-9a-f:.]+)\]|([a-z0-9_.-]+))(?::([0-9]{1,5}))?", re.ASCII)


def _host_name(header: str) -> str | None:
    """The host of a Host header value, lower-case, IPv6 brackets removed; ``None`` when the
    value is not exactly ``host[:port]`` (``host`` a name, an IPv4 address or a bracketed IPv6
    address, ``port`` 0-65535): a comma list, whitespace or junk after the host, ``user@host``,
    an empty or non-numeric port, an unbracketed IPv6 address."""
    found = _HOST_VALUE.fullmatch(header.lower())
    if found is None:
        return None
    ipv6, name, port = found.groups()
    if port is not None and int(port) > 65535:
        return None
    if ipv6 is not None:
        return ipv6 if _is_ip(ipv6) and ":" in ipv6 else None  # (an IPv6 address, as written)
    return name


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


async def expect_continue(request: web.Request) -> None:
    """The routes' handler of the ``Expect`` header, run by aiohttp before any middleware:
    ``100-continue`` on HTTP/1.1 gets ``100 Continue`` (RFC 9110 §10.1.1), as aiohttp's default
    handler does, unless the announced body is over the limit (:func:`announced_too_large`):
    then no 100 is sent and :func:`guard_check` answers 413 (after the API-key check) without
    the body being sent. Any other value is left to :func:`guard_check` (417 as an error object
    of the route's front door) instead of aiohttp's plain-text answer, which quotes the
    value."""
    if (
        request.version == HttpVersion11
        and _continues(request.headers.get("Expect", ""))
        and announced_too_large(request, request.app[SETTINGS].max_body_bytes) is None
    ):
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # the 100 is not part of the answer that follows


def announced_too_large(request: web.Request, limit: int) -> BodyTooLargeError | None:
    """The 413 for a POST to a JSON route whose ``Content-Length`` is over ``limit`` (setting
    ``max_body_bytes``, the limit aiohttp enforces as it reads the body), decided from the header
    before any of the body is read; ``None`` otherwise. (A compressed body's limit is on its
    decompressed size, which is never smaller in practice. ``/images/edits`` reads its
    multipart body part by part, with per-image limits: not judged here.)"""
    length = request.content_length
    if (
        length is None
        or length <= limit
        or request.method != "POST"
        or request.path.endswith(_MULTIPART_PATHS)
    ):
        return None
    return BodyTooLargeError(
        f"the request body is larger than the limit of {limit} bytes (its `Content-Length` "
        f"is {length}; setting max_body_bytes)"
    )


#: the request body codings aiohttp's server decodes (its HTTP parser: one coding, the whole
#: header value, any case; ``br`` with the Brotli package, ``zstd`` with zstandard support)
DECODED_CODINGS = ("gzip", "deflate") + ("br",) * HAS_BROTLI + ("zstd",) * HAS_ZSTD


def _check_coding(header: str) -> None:
    """Raise :class:`~proxy.errors.UnsupportedMediaTypeError` (415, RFC 9110 §15.5.16) for a
    ``Content-Encoding`` the server would not decode: the body would be read as if it were not
    encoded. Served: one of :data:`DECODED_CODINGS` as the header's whole value (any case), or
    only ``identity`` entries (no coding: the body is read as sent). Anything else is refused,
    ``gzip, identity`` too, naming what to send: aiohttp's HTTP parser (C and Python alike)
    decodes only a header that is exactly one coding, and has no hook to decode another; the
    gateway would have to decompress the body itself, with its own size limit, behind the
    request's back."""
    value = header.strip().lower()
    if value in DECODED_CODINGS:
        return
    codings = [c.strip() for c in value.split(",")]
    left = [c for c in codings if c and c != "identity"]
    if not left:
        return
    unknown = [c for c in left if c not in DECODED_CODINGS]
    if unknown or len(left) > 1:
        what = quote(unknown[0] if unknown else ", ".join(left), 40)
        raise UnsupportedMediaTypeError(
            f"the request body's `Content-Encoding` {what} is not one this gateway decodes "
            f"(it decodes one of {', '.join(DECODED_CODINGS)}, alone); send the body "
            "uncompressed or in one of those"
        )
    raise UnsupportedMediaTypeError(
        f"send `Content-Encoding: {left[0]}` alone: a body is decoded only when its coding is the "
        "header's whole value (not with `identity` entries beside it)"
    )


def _continues(expect: str) -> bool:
    return expect.strip().lower() == "100-continue"


def _expectation_failed() -> HTTPStatusError:
    return HTTPStatusError(
        "the request's `Expect` header asks for something this gateway does not do "
        "(only `100-continue` is understood); send the request without it",
        status=417,
        code="expectation_failed",
    )


def guard_check(settings: Settings) -> Callable[[web.Request], bool]:
    """The checks described in the module docstring (1 to 4), for ``settings``, as one plain
    function: it raises :class:`~proxy.errors.ForbiddenRequestError`,
    :class:`~proxy.errors.UnsupportedMediaTypeError` or an
    :class:`~proxy.errors.HTTPStatusError` (417), else returns ``True`` when the request's
    body is still arriving (run the handler under :func:`with_body_deadline`, check 5)."""
    names, any_ip, any_host = allowed_host_names(settings)
    origins = frozenset(settings.cors_origins)
    check_origin = not settings.api_keys and "*" not in origins
    max_body_bytes = settings.max_body_bytes

    # a gateway sees a handful of Host values: each is judged once (a bounded cache)
    @functools.lru_cache(maxsize=_MAX_VERDICTS)
    def refused_host(raw: str) -> str | None:
        """Why a Host header value is refused (the error message), ``None`` when it is
        served."""
        name = _host_name(raw)
        if name is None:
            return (
                f"the Host {quote(raw, 60)} is not one host name or IP address with an optional "
                "`:port`, so not one this gateway serves (a defence against DNS rebinding)"
            )
        if name in names or (any_ip and _is_ip(name)):
            return None
        return (
            f"the Host {quote(name, 60)} is not one this gateway serves; add it to "
            "`allowed_hosts` if it is yours (a defence against DNS rebinding)"
        )

    def check(request: web.Request) -> bool:
        headers = request.headers
        if not any_host and request.path not in _HOST_EXEMPT:
            refusal = refused_host(headers.get("Host", ""))
            if refusal is not None:
                raise ForbiddenRequestError(refusal, code="forbidden_host")
        if check_origin:
            origin = headers.get("Origin")
            if origin is not None and origin not in origins:
                raise ForbiddenRequestError(
                    f"requests from the web page {clip(origin, 60)!r} are refused: no API key "
                    "is configured, so only origins listed in `cors_origins` may call the "
                    "gateway",
                    code="forbidden_origin",
                )
        expect = headers.get("Expect")
        if expect is not None and not _continues(expect):
            raise _expectation_failed()
        if request.method != "POST" or not request.body_exists:
            return False  # no body, nothing a page could have forged
        ctype = _JSON_TYPES.get(headers.get("Content-Type", "")) or request.content_type
        want = (
            "multipart/form-data" if request.path.endswith(_MULTIPART_PATHS) else "application/json"
        )
        if ctype != want and not (want == "application/json" and ctype.endswith("+json")):
            raise UnsupportedMediaTypeError(
                f"{clip(request.path, 60)} takes a `Content-Type: {want}` body; "
                + _sent_type(headers)
            )
        coding = headers.get("Content-Encoding")
        if coding is not None:
            _check_coding(coding)
        too_large = announced_too_large(request, max_body_bytes)
        if too_large is not None:  # answered now, not once the body has arrived (or not)
            raise too_large
        # the whole body came with the headers (the usual case): no deadline to watch
        return not request.content.is_eof()

    return check


def _sent_type(headers: CIMultiDictProxy[str]) -> str:
    """What the message of a refused ``Content-Type`` says the client sent: the header as sent
    (quoted, cut to 60 characters), or that it is missing or empty. Not aiohttp's parse of it,
    which reads a missing, empty or malformed value (``a/b, c/d``) as
    ``application/octet-stream``. (Two ``Content-Type`` headers never get here: the parser
    refuses them.)"""
    value = headers.get("Content-Type")
    if value is None:
        return "the request has no `Content-Type` header"
    if not value.strip():
        return "the request's `Content-Type` header is empty"
    return f"the request's is {quote(value, 60)}"


async def with_body_deadline(
    request: web.Request, handler: Handler, timeout_s: float, sweeper: Sweeper
) -> web.StreamResponse:
    """Run ``handler``; cancel it if the body is not all received in ``timeout_s`` seconds
    (a :class:`~proxy.sweep.Deadline` on ``sweeper``, at most one tick late, that ends once the
    body is in). Raises :class:`~proxy.errors.RequestTimeoutError` (408) then; a client gone
    during its upload is logged in one line (``client_gone``) and its ``CancelledError`` or
    ``ConnectionError`` passes through."""
    content = request.content
    if content.is_eof():
        return await handler(request)
    deadline = Deadline(sweeper, timeout_s, until=content.is_eof)
    try:
        with deadline:
            return await handler(request)
    except TimeoutError:
        if not deadline.fired:
            raise
        raise RequestTimeoutError(
            f"the request body did not arrive within {timeout_s:g} s (setting body_timeout_s)"
        ) from None
    except asyncio.CancelledError:
        transport = request.transport
        if not content.is_eof() and (transport is None or transport.is_closing()):
            _log_gone(request)
        raise
    except ConnectionError:
        if not content.is_eof():
            _log_gone(request)
        raise


def _log_gone(request: web.Request) -> None:
    """The request's one line (:data:`~proxy.state.LOGGED`) for a client gone mid-upload."""
    request[LOGGED] = True
    log.info("client_gone", method=request.method, path=log_path(request), during="upload")


def parse_error_response(exc: BaseException | None, status: int) -> tuple[ProxyError, int]:
    """The error to answer for a request aiohttp's parser refused (``exc``, ``status``)."""
    if status >= 500:
        return ProxyError("internal error in the proxy; see its log"), status
    if isinstance(exc, http_exceptions.LineTooLong) and _is_target(
        exc.args[0] if exc.args else b""
    ):
        return URITooLongError("the request target (path and query) is too long"), 414
    if isinstance(exc, http_exceptions.LineTooLong) or (
        isinstance(exc, http_exceptions.BadHttpMessage)
        and "too many headers" in str(exc.message).lower()
    ):
        return (
            HeadersTooLargeError(
                "the request line or a header is too long, or there are too many headers"
            ),
            431,
        )
    if isinstance(exc, http_exceptions.BadHttpMethod):
        what = "the request method is not valid"
    elif isinstance(exc, http_exceptions.InvalidHeader):
        what = "a header name or value holds characters HTTP does not allow"
    elif isinstance(exc, http_exceptions.BadStatusLine):
        what = "the request line is malformed"
    elif isinstance(
        exc, http_exceptions.TransferEncodingError | http_exceptions.ContentLengthError
    ):
        what = "the body framing (Content-Length / Transfer-Encoding) is invalid"
    else:
        what = "the HTTP request is malformed"
    return MalformedHTTPError(what), 400


def _is_target(prefix: object) -> bool:
    """Whether the start of an over-long line (as the parser reports it, never echoed) is a
    request target (``/path``, ``http://…``) rather than a header."""
    raw = bytes(prefix) if isinstance(prefix, bytes | bytearray) else str(prefix).encode()
    return raw.startswith((b"/", b"http://", b"https://"))


_LINGER_S = 2.0  # how long a refused upload may go on being dropped after its answer


class _HalfClosingTransport:
    """A connection's transport whose ``close`` first ends the answer (a FIN after the bytes
    already written) and closes once the client has closed its side too, or after
    ``_LINGER_S``: what it still sends in between is read and dropped. Closing a socket with
    unread input resets the connection, and a client that sends its whole body before reading
    (curl, most HTTP libraries) would lose the answer to that reset. Everything else is the
    transport's own."""

    __slots__ = ("_inner", "_timer")

    def __init__(self, inner: asyncio.Transport) -> None:
        self._inner = inner
        self._timer: asyncio.TimerHandle | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def close(self) -> None:
        inner = self._inner
        if self._timer is not None or inner.is_closing():
            return
        if not inner.can_write_eof():
            inner.close()
            return
        inner.write_eof()
        self._timer = asyncio.get_running_loop().call_later(_LINGER_S, inner.close)

    def cancel(self) -> None:
        """The connection is gone: no close is due any more."""
        if self._timer is not None:
            self._timer.cancel()


def discard_input(request: web.Request) -> bool:
    """Drop what ``request``'s client still sends, unread and undecoded, and end its connection
    gracefully once the answer is out (see ``_HalfClosingTransport``), if it is served by
    :class:`GatewayRunner`; ``False`` otherwise (nothing done)."""
    protocol = request.protocol
    if not isinstance(protocol, _RequestHandler):
        return False
    protocol.discard_input()
    return True


class _RequestHandler(web.RequestHandler):
    """aiohttp's per-connection handler, answering parser refusals as OpenAI errors, and
    bounding the time a request's head (request line and headers) may take to arrive.

    The head deadline (``header_timeout_s``) is armed when the connection opens (its first
    request) and when the first bytes of a later request arrive without its whole head, and
    disarmed once the head is parsed (an idle kept-alive connection is left to aiohttp's
    keep-alive timeout). A client that has not sent a whole head by
    then gets a 408 error object and the connection closes: a client trickling header bytes
    cannot hold a connection (and a file descriptor) for long, nor can one that opens a
    connection and sends nothing. (aiohttp alone drops such a connection only after its
    keep-alive timeout, 75 s after it opened.)
    """

    _head_timer: asyncio.TimerHandle | None = None
    _discarding = False
    _last_data = b""  # the last bytes received: where a refused request's line is looked for

    def discard_input(self) -> None:
        """From now on, drop the client's bytes unparsed (the rest of a compressed body refused
        before it was read: never decompressed), and close gracefully."""
        self._discarding = True
        transport = self.transport
        if transport is not None and not isinstance(transport, _HalfClosingTransport):
            self.transport = _HalfClosingTransport(transport)  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self._discarding:
            return
        self._last_data = data
        super().data_received(data)
        if self._messages:  # a head is complete: its deadline, if one runs, is over
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None
        elif self._head_timer is None and self._waiting_for_head():
            self._arm_head_timer()  # a request began and its head is not complete

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm_head_timer()  # a connection that never sends a byte is bounded too

    def connection_lost(self, exc: BaseException | None) -> None:
        if isinstance(self.transport, _HalfClosingTransport):
            self.transport.cancel()
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().connection_lost(exc)

    def _arm_head_timer(self) -> None:
        timeout_s = getattr(self._manager, "header_timeout_s", None)
        if timeout_s:
            self._head_timer = self._loop.call_later(timeout_s, self._head_timed_out, timeout_s)

    def _waiting_for_head(self) -> bool:
        """True while the connection waits for a request that has not fully arrived (not
        while a request is handled, nor while the end of its body is drained)."""
        waiter = self._waiter
        return waiter is not None and not waiter.done() and not self._messages

    def _head_timed_out(self, timeout_s: float) -> None:
        self._head_timer = None
        if not self._waiting_for_head() or self.transport is None:
            return  # the head came, or a request is being handled
        log.info("client_too_slow", during="request head", timeout_s=timeout_s)
        err = RequestTimeoutError(
            f"the request line and headers did not arrive within {timeout_s:g} s "
            "(setting header_timeout_s)"
        )
        body = orjson.dumps(error_body(err))
        head = (
            "HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        self.transport.write(head.encode() + body)
        self.force_close()

    async def finish_response(
        self, request: BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        """Send ``resp``; an aiohttp HTTP error raised outside the app's middleware (which
        answers every other failure) becomes an error object first: the 417 of an unknown
        ``Expect`` on a path or method no route has (:func:`_unrouted_expectations`)."""
        if isinstance(resp, web.HTTPException) and resp.status >= 400:
            if resp.status == 417:
                err = _expectation_failed()
            else:
                err = HTTPStatusError(resp.reason, status=resp.status, code="http_error")
            log.info("request_failed", status=resp.status, code=err.error_code())
            resp = web.Response(
                status=resp.status,
                body=orjson.dumps(error_body(err)),
                content_type="application/json",
            )
            if start_time is not None:  # aiohttp's start: its loop's clock, in seconds
                ms = (self._loop.time() - start_time) * 1000
                resp.headers["Server-Timing"] = f"total;dur={ms:.2f}"
        return await super().finish_response(request, resp, start_time)

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if isinstance(exc, ConnectionError):  # the client left: nobody reads an answer
            if LOGGED not in request:  # (the app's front middleware has logged it)
                log.info("client_disconnected", status=499)
            resp = web.Response(status=499)
            resp.force_close()
            return resp
        err, status = parse_error_response(exc, status)
        if status >= 500:
            log.error("unhandled_error", exc_info=exc)
        else:
            log.info(
                "http_parse_error",
                status=status,
                code=err.error_code(),
                error=type(exc).__name__ if exc else None,
            )
        door = self._door_of_refused()
        _, headers, body = door.render_error(err)
        resp = web.Response(
            status=status, body=orjson.dumps(body), content_type="application/json", headers=headers
        )
        resp.force_close()
        return resp

    def _door_of_refused(self) -> FrontDoor:
        """The front door whose error shape a request the parser refused gets: the one of the
        path in its request line, when the last bytes received begin with one (the parser
        keeps no request for a refused head), else OpenAI's."""
        doors: Mapping[str, FrontDoor] | None = getattr(self._manager, "doors", None)
        found = _REQUEST_PATH.match(self._last_data) if doors else None
        if doors is None or found is None:
            return OPENAI
        return door_for_path(doors, found.group(1).decode("latin-1")) or OPENAI


#: a request line's method and path (the path up to its query, at most 200 bytes)
_REQUEST_PATH = re.compile(rb"\s*[!#$%&'*+.^_`|~0-9A-Za-z-]{1,20} +(/[^ ?#\r\n]{0,200})")


ServerHandler = Callable[[BaseRequest], Awaitable[web.StreamResponse]]


def _unrouted_expectations(handler: ServerHandler, router: AbstractRouter) -> ServerHandler:
    """``handler`` (the app's), except that a request no route serves (an unknown path or
    method) with an ``Expect`` other than ``100-continue`` gets a bare 417, which
    :meth:`_RequestHandler.finish_response` turns into an error object. aiohttp's own expect
    handler of such a request quotes the header in its plain-text 417, and fails with a 500
    when the value is not ASCII (it encodes the quote as UTF-8). The routes' requests keep
    theirs (:func:`expect_continue`, then the guard after the API-key check)."""

    async def handle(request: BaseRequest) -> web.StreamResponse:
        expect = request.headers.get("Expect")
        if (
            expect is not None
            and request.version == HttpVersion11
            and not _continues(expect)
            and isinstance(request, web.Request)  # (the app's requests always are)
        ):
            match_info = await router.resolve(request)
            if match_info.http_exception is not None:  # no route: aiohttp's expect handler
                raise web.HTTPExpectationFailed()
        return await handler(request)

    return handle


class _Server(web.Server):
    def __init__(
        self,
        base: web.Server,
        kwargs: dict[str, Any],
        loop: Any,
        header_timeout_s: float,
        router: AbstractRouter | None = None,
        doors: Mapping[str, FrontDoor] | None = None,
    ) -> None:
        self.header_timeout_s = header_timeout_s
        #: the app's front doors by route path (the error shape of a refused request)
        self.doors = doors
        handler = base.request_handler
        if router is not None:
            handler = _unrouted_expectations(handler, router)
        super().__init__(
            handler,
            request_factory=base.request_factory,
            handler_cancellation=base.handler_cancellation,
            loop=loop,
            **kwargs,
        )
        self._handler_kwargs = kwargs

    def __call__(self) -> web.RequestHandler:
        return _RequestHandler(self, loop=self._loop, **self._handler_kwargs)


class GatewayRunner(web.AppRunner):
    """An :class:`aiohttp.web.AppRunner` whose parser refusals are error objects of the front
    door of their path (OpenAI's, or Anthropic's on ``/v1/messages``; see above)."""

    async def _make_server(self) -> web.Server:
        base = await super()._make_server()
        app = self.app if isinstance(self.app, web.Application) else None
        settings = app[SETTINGS] if app is not None else None
        timeout_s = settings.header_timeout_s if settings is not None else 0.0
        router = app.router if app is not None else None
        doors = app.get(FRONT_DOORS) if app is not None else None
        return _Server(base, dict(base._kwargs), base._loop, timeout_s, router, doors)
