"""The probes (fixed requests) of the conformance harness and the raw HTTP layer that sends them.

Probes are plain data: the prompts below are fixed so that recordings can answer them
(``recorder/synthetic_probes.py`` on the chat.qwen.ai side, ``tests/broken_proxies.py`` on the
OpenAI side); change one only together with those. :class:`Client` sends a probe with aiohttp and
keeps the exact bytes, the status, the headers and the arrival time of every network chunk
(:class:`Exchange`), so framing and time to first token can be judged. :func:`fetch_image`
downloads an image URL a target returned, carefully (http(s) only, no private addresses unless
allowed, redirects re-checked, size cap, timeout).

The API key is sent only in the ``Authorization`` header and never recorded: request records
show it masked, and any echo of it in a response is replaced by ``<key>``.
"""

from __future__ import annotations

import asyncio
import io
import ipaddress
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal
from urllib.parse import urljoin, urlsplit

import aiohttp

from proxy.conformance.diagnosis import SSEParse, parse_sse, sniff_image
from proxy.conformance.report import MASK, Evidence, RequestRecord
from proxy.fetch import IPAddress, is_public, pinned_request
from proxy.secrets import SecretMasker

__all__ = [
    "ANTHROPIC_VERSION",
    "AUTH_PROMPT",
    "BAD_JSON_BODY",
    "ECHO_EN_PROMPT",
    "ECHO_EN_SENTENCE",
    "ECHO_ZH_PROMPT",
    "ECHO_ZH_SENTENCE",
    "IMAGE_PROMPT",
    "OVERSIZE_PROMPT",
    "PARALLEL_PROMPT",
    "ROUNDTRIP_CALL_ID",
    "ROUNDTRIP_PROMPT",
    "ROUNDTRIP_RESULT",
    "STREAM_PROMPT",
    "THINK_PROMPT",
    "TOOL_PROMPT",
    "UNKNOWN_MODEL",
    "UNKNOWN_MODEL_PROMPT",
    "WEATHER_TOOL",
    "WRONG_KEY",
    "Client",
    "Exchange",
    "ImageFetch",
    "Probe",
    "chat_body",
    "fetch_image",
]

# -- the fixed probe texts -----------------------------------------------------------------------

ECHO_ZH_SENTENCE = "我们在北京的咖啡馆里讨论量子计算。"
"""The Chinese sentence the echo probe asks to repeat (3-byte UTF-8 characters throughout)."""
ECHO_ZH_PROMPT = f"请原样重复这句话：{ECHO_ZH_SENTENCE}"
ECHO_EN_SENTENCE = "The quick brown fox jumps over the lazy dog near the quiet river."
ECHO_EN_PROMPT = f"Repeat this sentence exactly, and nothing else: {ECHO_EN_SENTENCE}"
STREAM_PROMPT = "Conformance probe: count from one to twelve in English words, separated by commas."
THINK_PROMPT = "Conformance probe: is 221 a prime number? Think it through, then answer yes or no."
IMAGE_PROMPT = "Conformance probe: a red apple on a white table, studio photo."
AUTH_PROMPT = "Conformance probe: this request carries a wrong API key."
UNKNOWN_MODEL = "conformance-probe-no-such-model"
UNKNOWN_MODEL_PROMPT = "Conformance probe: a model that does not exist."
OVERSIZE_PROMPT = "Conformance probe: an oversized request body."
BAD_JSON_BODY = (
    b'{"model": "conformance-probe", "messages": [{"role": "user", "content": "Conformance '
    b'probe: bad JSON"'
)
"""A chat request body cut off in the middle: not valid JSON."""
WRONG_KEY = "sk-conformance-probe-wrong-key"
"""The key the auth probe sends; not a secret, so reports show it."""

# -- agent probes (tools; Anthropic Messages; OpenAI Responses) ------------------------------------

WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "The city name."}},
            "required": ["city"],
        },
    },
}
"""The one tool the tool probes offer, in OpenAI chat form (Anthropic and Responses probes
carry the same name, description and JSON Schema in their own shapes)."""
TOOL_PROMPT = "Conformance probe: what is the weather in Paris right now? Use the get_weather tool."
PARALLEL_PROMPT = (
    "Conformance probe: what is the weather in Paris and in Tokyo? Call get_weather once for "
    "each city, both calls in one answer."
)
ROUNDTRIP_PROMPT = "Conformance probe: what is the weather in Berlin? Use the get_weather tool."
ROUNDTRIP_CALL_ID = "call_probe0000000000000000001"
ROUNDTRIP_RESULT = '{"city": "Berlin", "temperature_c": 21, "sky": "sunny"}'
"""The tool result the round-trip probe sends back; the answer must use it (21 °C)."""
ANTHROPIC_VERSION = "2023-06-01"

_RESPONSE_CAP = 16 * 1024 * 1024
DONE_GRACE_S = 2.0
"""Seconds a stream's body may stay open after its last event (``[DONE]``) before the answer
counts as not closed: every SDK reads to the end of the body, so it would hang there."""
_STREAM_END = re.compile(
    rb"(?:^|[\r\n])data: ?\[DONE\]"
    rb'|"type" ?: ?"(?:message_stop|response\.completed|response\.failed|response\.incomplete)"'
)
"""The last event of an OpenAI chat stream (``data: [DONE]``), an Anthropic one
(``message_stop``) or a Responses one (``response.completed``…)."""
_SHOWN_HEADERS = (
    "content-type",
    "content-length",
    "transfer-encoding",
    "cache-control",
    "retry-after",
    "server-timing",
    "www-authenticate",
    "x-request-id",
)


def chat_body(model: str, prompt: str, *, stream: bool, **more: Any) -> dict[str, Any]:
    """An OpenAI chat request with one user message ``prompt`` (plus ``more`` fields)."""
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "stream": stream,
    }
    body.update(more)
    return body


@dataclass(frozen=True)
class Probe:
    """One request: ``id`` (unique per run), ``method``, ``path`` (relative to the base URL, or
    to the site root when ``root``), the raw ``body`` bytes, whether the answer is expected as
    a stream, which key to send (``"key"`` the user's, ``"none"``, ``"wrong"``:
    :data:`WRONG_KEY`; ``"x-api-key"``: the user's key in Anthropic's ``x-api-key`` header),
    ``shown_body``: the body text reports show instead of a huge one, and ``headers``: extra
    request headers (a client profile's, Anthropic's ``anthropic-version``), sent as given
    after the harness's own (so they may replace ``User-Agent``)."""

    id: str
    method: str
    path: str
    body: bytes | None = None
    stream: bool = False
    auth: Literal["key", "none", "wrong", "x-api-key"] = "key"
    root: bool = False
    shown_body: str | None = None
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def json(cls, id: str, path: str, obj: Any, **kw: Any) -> Probe:
        """A POST of ``obj`` as UTF-8 JSON (non-ASCII kept, not escaped)."""
        return cls(id, "POST", path, json.dumps(obj, ensure_ascii=False).encode(), **kw)


@dataclass
class Exchange:
    """One probe's request and response as seen on the wire.

    ``status`` is ``None`` when the transport failed (``error`` says how). ``headers`` are the
    response headers with lower-case names; ``body`` the whole body bytes (capped at 16 MiB);
    ``arrivals`` lists ``(seconds since the request was sent, body bytes received so far)`` per
    network chunk; ``total_s`` is the time to the end of the body, in seconds.
    """

    probe: Probe
    request: RequestRecord
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    arrivals: list[tuple[float, int]] = field(default_factory=list)
    total_s: float = 0.0
    error: str | None = None
    key: str | None = None
    open_after_end: str | None = None
    """The stream's last event (``data: [DONE]``…) when it arrived but the body was not closed
    after it (``error`` then says so)."""

    @property
    def ok(self) -> bool:
        """HTTP 200 and no transport error."""
        return self.error is None and self.status == 200

    @property
    def content_type(self) -> str:
        """The media type, lower-case, without parameters."""
        return self.headers.get("content-type", "").split(";")[0].strip().lower()

    @property
    def charset(self) -> str | None:
        """The ``charset`` parameter of the content type, lower-case (``None``: none given)."""
        for param in self.headers.get("content-type", "").split(";")[1:]:
            name, _, value = param.partition("=")
            if name.strip().lower() == "charset":
                return value.strip().strip('"').lower() or None
        return None

    def text(self) -> str:
        """The body as text (UTF-8, U+FFFD for invalid bytes), key masked."""
        return self.mask(self.body.decode("utf-8", errors="replace"))

    def json(self) -> Any:
        """The body as JSON, or ``None`` when it is not JSON."""
        try:
            return json.loads(self.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return None

    @cached_property
    def sse(self) -> SSEParse:
        """The body parsed as SSE (:func:`proxy.conformance.diagnosis.parse_sse`)."""
        return parse_sse(self.body)

    def time_at(self, offset: int) -> float | None:
        """Seconds after sending at which body byte ``offset - 1`` had arrived."""
        for t, received in self.arrivals:
            if received >= offset:
                return t
        return None

    def mask(self, text: str) -> str:
        """``text`` with the user's key, and any fragment of 10 or more of its characters
        (any case, JSON- or URL-escaped), replaced by ``<key>``."""
        if self.key and len(self.key) >= 4:
            return SecretMasker([self.key], replacement=MASK, html=True).mask(text)
        return text

    def evidence(self, *, notes: list[str] | None = None, events: int = 12) -> Evidence:
        """The evidence block of a report: status, some headers, an excerpt or SSE events."""
        ev = Evidence(
            status=self.status,
            headers={k: v for k, v in self.headers.items() if k in _SHOWN_HEADERS},
            transport_error=self.error,
            notes=list(notes or []),
        )
        if self.status is None:
            return ev
        if self.probe.stream and self.content_type == "text/event-stream":
            datas = [
                self.mask(e.data if e.event is None else f"[{e.event}] {e.data}")
                for e in self.sse.events
            ]
            ev.events = [_cut(d, 400) for d in datas[:events]]
            if len(datas) > events:
                ev.events.append("… " + _cut(datas[-1], 400))
            ev.event_count = len(datas)
            if self.sse.tail:
                ev.notes.append(f"unterminated tail: {_cut(self.mask(self.sse.tail), 200)!r}")
        else:
            text = self.text()
            ev.body_excerpt = _cut(text, 2000) if text else "(empty body)"
        return ev


def _cut(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


class Client:
    """Sends probes to one target and remembers each answer (a probe is sent once per run).

    ``base_url`` is the OpenAI base URL (usually ending in ``/v1``); ``key`` the API key or
    ``None``; ``timeout_s`` the limit per request in seconds; ``concurrency`` the most requests
    in flight at once; ``done_grace_s`` how long a stream's body may stay open after its last
    event (``data: [DONE]``) before it counts as not closed (not the whole ``timeout_s``).
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        key: str | None,
        *,
        timeout_s: float,
        concurrency: int,
        done_grace_s: float = DONE_GRACE_S,
    ) -> None:
        self.session = session
        self.done_grace_s = done_grace_s
        self.base_url = base_url.rstrip("/")
        self.root_url: str | None = self.base_url[:-3] if self.base_url.endswith("/v1") else None
        """The base URL without its ``/v1`` (``None`` when it does not end in ``/v1``)."""
        self.host = urlsplit(self.base_url).hostname or ""
        self.key = key
        self.timeout_s = timeout_s
        self._sem = asyncio.Semaphore(max(1, concurrency))
        self._locks: dict[str, asyncio.Lock] = {}
        self._done: dict[str, Exchange] = {}

    def url(self, probe: Probe) -> str:
        """The absolute URL of ``probe``."""
        return ((self.root_url or "") if probe.root else self.base_url) + probe.path

    def _headers(self, probe: Probe) -> tuple[dict[str, str], dict[str, str]]:
        """(headers to send, headers to show); the key is masked in the latter."""
        sent = {"Accept-Encoding": "identity", "User-Agent": "qwen-proxy-check"}
        if probe.body is not None:
            sent["Content-Type"] = "application/json"
        if probe.stream:
            sent["Accept"] = "text/event-stream"
        for name, value in probe.headers:
            sent[name] = value
        shown = dict(sent)
        if probe.auth == "key" and self.key:
            sent["Authorization"] = f"Bearer {self.key}"
            shown["Authorization"] = "Bearer <key> (masked)"
        elif probe.auth == "x-api-key" and self.key:
            sent["x-api-key"] = self.key
            shown["x-api-key"] = "<key> (masked)"
        elif probe.auth == "wrong":
            sent["Authorization"] = f"Bearer {WRONG_KEY}"
            shown["Authorization"] = f"Bearer {WRONG_KEY}"
        return sent, shown

    def answer(self, probe_id: str) -> Exchange | None:
        """The answer to the probe ``probe_id`` if it was sent in this run, else ``None``."""
        return self._done.get(probe_id)

    async def send(self, probe: Probe) -> Exchange:
        """Send ``probe`` (once per run; later calls return the first answer)."""
        lock = self._locks.setdefault(probe.id, asyncio.Lock())
        async with lock:
            if probe.id not in self._done:
                async with self._sem:
                    self._done[probe.id] = await self._send(probe)
            return self._done[probe.id]

    async def _send(self, probe: Probe) -> Exchange:
        sent, shown = self._headers(probe)
        body_text: str | None = None
        if probe.body is not None:
            body_text = probe.shown_body or probe.body.decode("utf-8", errors="replace")
        record = RequestRecord(
            method=probe.method,
            url=self.url(probe),
            headers=shown,
            body=body_text,
            body_bytes=len(probe.body) if probe.body is not None else None,
        )
        ex = Exchange(probe=probe, request=record, key=self.key)
        buf = bytearray()
        end: re.Match[bytes] | None = None
        t0 = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout_s) as deadline:
                data: bytes | io.BytesIO | None = probe.body
                if probe.body is not None and len(probe.body) > 1024 * 1024:
                    data = io.BytesIO(probe.body)  # aiohttp streams file-likes without blocking
                async with self.session.request(
                    probe.method, record.url, data=data, headers=sent, allow_redirects=False
                ) as resp:
                    ex.status = resp.status
                    ex.headers = {k.lower(): v for k, v in resp.headers.items()}
                    async for chunk in resp.content.iter_any():
                        buf += chunk
                        ex.arrivals.append((time.perf_counter() - t0, len(buf)))
                        if len(buf) > _RESPONSE_CAP:
                            ex.error = f"response larger than {_RESPONSE_CAP} bytes; cut"
                            break
                        if probe.stream and end is None:
                            # the last event is in: the body must close now, not at the timeout
                            end = _STREAM_END.search(buf, max(0, len(buf) - len(chunk) - 120))
                            if end is not None:
                                grace = asyncio.get_running_loop().time() + self.done_grace_s
                                when = deadline.when()
                                deadline.reschedule(grace if when is None else min(when, grace))
                    ex.body = bytes(buf)
        except TimeoutError:
            ex.body = bytes(buf)
            if end is not None:
                ex.open_after_end = end.group().strip().decode("utf-8", "replace")
                ex.error = (
                    f"`{ex.open_after_end}` arrived, but the response body was not closed "
                    f"within {self.done_grace_s:g} s after it"
                )
            else:
                ex.error = f"no complete answer within {self.timeout_s:g} s"
        except aiohttp.ClientError as exc:
            ex.error = f"{type(exc).__name__}: {ex.mask(str(exc))}"
        except OSError as exc:
            ex.error = f"{type(exc).__name__}: {exc}"
        ex.total_s = time.perf_counter() - t0
        return ex


# -- image downloads ---------------------------------------------------------------------------


@dataclass
class ImageFetch:
    """The download of an image URL: the ``url`` fetched (after any rewrite), HTTP ``status``,
    ``content_type``, ``size`` in bytes, the sniffed ``format`` (``None``: not an image) and
    ``error`` (refused, failed, too big)."""

    url: str
    status: int | None = None
    content_type: str = ""
    size: int = 0
    format: str | None = None
    error: str | None = None

    def describe(self) -> str:
        """One line for a report."""
        if self.error:
            return f"GET {self.url}: {self.error}"
        return (
            f"GET {self.url}: HTTP {self.status}, {self.content_type or 'no content-type'}, "
            f"{self.size} bytes, magic bytes: {self.format or 'not an image'}"
        )


def rewrite_url(url: str, rewrites: Mapping[str, str]) -> tuple[str, bool]:
    """Apply the first matching prefix rewrite; returns ``(url, rewritten)``."""
    for old, new in rewrites.items():
        if url.startswith(old):
            return new + url[len(old) :], True
    return url, False


async def _refusal(
    url: str, *, trusted_hosts: frozenset[str], allow_private: bool
) -> tuple[str | None, IPAddress | None]:
    """``(why url must not be fetched, None)``, or ``(None, address)`` when it may be: the
    address checked, which the request must go to (``None``: any, as the URL says)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        return f"refused: scheme {parts.scheme!r} is not http(s)", None
    host = parts.hostname
    if not host:
        return "refused: the URL has no host", None
    if allow_private or host in trusted_hosts:
        return None, None
    try:
        addrs = [ipaddress.ip_address(host)]
    except ValueError:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, parts.port or 443)
        except OSError as exc:
            return f"cannot resolve {host}: {exc}", None
        addrs = [ipaddress.ip_address(info[4][0]) for info in infos]
    if not addrs:
        return f"cannot resolve {host}", None
    for addr in addrs:
        if not is_public(addr):
            return (
                f"refused: {host} resolves to the non-public address {addr} "
                "(use --allow-private-urls or --rewrite-url to allow it)"
            ), None
    return None, addrs[0]


async def fetch_image(
    session: aiohttp.ClientSession,
    url: str,
    *,
    rewrites: Mapping[str, str] | None = None,
    trusted_hosts: frozenset[str] = frozenset(),
    allow_private: bool = False,
    timeout_s: float = 30.0,
    max_bytes: int = 20 * 1024 * 1024,
    max_redirects: int = 3,
) -> ImageFetch:
    """Download ``url`` and sniff its magic bytes (PNG, JPEG, GIF, WEBP).

    ``rewrites`` maps URL prefixes to replacements (e.g. a CDN to a local test server); a
    rewritten URL and hosts in ``trusted_hosts`` (the target's own host) may be private or
    loopback. Otherwise only http(s) URLs whose host resolves to public addresses
    (:func:`proxy.fetch.is_public`) are fetched, from the address checked; each redirect is
    checked the same way, the body is capped at ``max_bytes`` and the whole
    download at ``timeout_s`` seconds. Never raises: failures are in ``ImageFetch.error`` (a URL
    that cannot be parsed: ``malformed URL: …``).
    """
    target, rewritten = rewrite_url(url, rewrites or {})
    out = ImageFetch(url=target)
    try:
        async with asyncio.timeout(timeout_s):
            for _ in range(max_redirects + 1):
                reason, addr = await _refusal(
                    target, trusted_hosts=trusted_hosts, allow_private=allow_private or rewritten
                )
                if reason:
                    out.error = reason
                    return out
                # to the address that was checked (never a second, different DNS answer)
                url_at, options = (target, {}) if addr is None else pinned_request(target, addr)
                async with session.get(url_at, allow_redirects=False, **options) as resp:
                    if resp.status in (301, 302, 303, 307, 308) and "Location" in resp.headers:
                        target = urljoin(target, resp.headers["Location"])
                        rewritten = False
                        out.url = target
                        continue
                    out.status = resp.status
                    out.content_type = resp.headers.get("Content-Type", "")
                    buf = bytearray()
                    async for chunk in resp.content.iter_chunked(65536):
                        buf += chunk
                        if len(buf) > max_bytes:
                            out.error = f"larger than {max_bytes} bytes; download stopped"
                            return out
                    out.size = len(buf)
                    out.format = sniff_image(bytes(buf[:16]))
                    if resp.status != 200:
                        out.error = f"HTTP {resp.status}"
                    return out
            out.error = f"more than {max_redirects} redirects"
    except TimeoutError:
        out.error = f"no complete download within {timeout_s:g} s"
    except aiohttp.ClientError as exc:
        out.error = f"{type(exc).__name__}: {exc}"
    except ValueError as exc:  # urlsplit: "Invalid IPv6 URL", a port out of range, …
        out.error = f"malformed URL: {exc}"
    return out
