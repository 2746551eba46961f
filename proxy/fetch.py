"""Guarded fetching of media the client hands in: ``data:`` URIs and http(s) URLs.

A chat message may carry ``image_url``/``file`` parts pointing anywhere. Fetching them for the
client is a server-side request forgery risk, so :func:`check_url` and :func:`check_address`
(pure) refuse everything but http(s) to public addresses. The address check is an allow-list:
only globally routable unicast addresses pass (``ipaddress``'s ``is_global`` minus the special
ranges it misses), and an IPv6 address that embeds an IPv4 one (IPv4-mapped or -compatible,
NAT64, 6to4, Teredo) is judged by that IPv4 address; everything else is refused (400
``media_url_refused``) unless ``allow_private_fetch`` is set. Each redirect (at most 3) is
checked again. The body is capped at the kind's limit (413 ``media_too_large``, announced
``Content-Length`` refused before reading), the whole download at ``media_fetch_timeout_s`` (504
``media_fetch_timeout``), and the content type must be of the expected kind (400
``media_fetch_failed``); image bytes are also checked by their magic numbers. An unreachable
host or a non-200 answer is a 400 ``media_fetch_failed``: the client gave a URL that does not
work.

The host is resolved once, for the check, and the connection goes to the address that was
checked (the URL's host replaced by it; the ``Host`` header, and for https the TLS server name
and certificate check, keep the name): a DNS answer that changes after the check (rebinding)
is never used. Such a connection is not kept for reuse.

Limits per kind (docs/protocol.md §7.2): ``max_image_bytes``, ``max_video_bytes``,
``max_audio_bytes``, ``max_document_bytes``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Any
from urllib.parse import SplitResult, unquote, urljoin, urlsplit, urlunsplit

import aiohttp

from proxy.config import Settings
from proxy.errors import (
    ClientRequestError,
    MediaFetchError,
    MediaFetchTimeoutError,
    MediaTooLargeError,
    MediaURLRefusedError,
    clip,
    quote,
)
from proxy.qwen.client import MAX_MEDIA_REDIRECTS, REDIRECT_STATUSES, network_failure
from proxy.qwen.files import (
    Blob,
    Kind,
    content_type_kind,
    decode_data_uri,
    is_data_uri,
    make_blob,
)
from proxy.qwen.request import MediaPart

__all__ = [
    "check_address",
    "check_url",
    "embedded_ipv4",
    "fetch_url",
    "ingest",
    "is_public",
    "pinned_request",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def check_url(url: str, *, param: str | None = None) -> tuple[str, int]:
    """``(host, port)`` of an http(s) URL (the scheme in any case: RFC 3986 §3.1); raises
    :class:`MediaURLRefusedError` naming ``param`` (where the URL is in the request) otherwise.
    A ``data:`` URI never gets here from a part (:func:`ingest` decodes it); from a redirect it
    is refused."""
    try:
        parts = urlsplit(url)  # (the scheme comes back lower-case)
        port = parts.port
    except ValueError:
        raise MediaURLRefusedError("the media URL is malformed", param=param) from None
    if parts.scheme == "data":
        raise MediaURLRefusedError(
            "the media URL redirected to a data: URI; only http(s) redirects are followed",
            param=param,
        )
    if parts.scheme not in ("http", "https"):
        what = f"the scheme {quote(parts.scheme)}" if parts.scheme else "a relative URL"
        raise MediaURLRefusedError(
            f"media URLs must be http(s) URLs or data: URIs, not {what}", param=param
        )
    if not parts.hostname:
        raise MediaURLRefusedError("the media URL has no host", param=param)
    if parts.username or parts.password:
        raise MediaURLRefusedError("media URLs with credentials are refused", param=param)
    return parts.hostname, port or (443 if parts.scheme == "https" else 80)


_NAT64 = (
    ipaddress.IPv6Network("64:ff9b::/96"),  # RFC 6052 well-known prefix
    ipaddress.IPv6Network("64:ff9b:1::/48"),  # RFC 8215 local-use prefix
)
_6TO4 = ipaddress.IPv6Network("2002::/16")  # RFC 3056
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")  # RFC 4291 §2.5.5.1 (deprecated)
# not covered by ipaddress's is_global on every Python version: RFC 6598 shared space,
# benchmarking, documentation, the 6bone, ORCHIDv2, discard-only (RFC 6666)
_NOT_GLOBAL = tuple(
    ipaddress.ip_network(n)
    for n in (
        "100.64.0.0/10",
        "198.18.0.0/15",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "240.0.0.0/4",
        "2001:db8::/32",
        "3fff::/20",
        "2001:20::/28",
        "100::/64",
        "5f00::/16",
    )
)


def embedded_ipv4(addr: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for, if any: IPv4-mapped (``::ffff:a.b.c.d``),
    IPv4-compatible (``::a.b.c.d``), NAT64 (``64:ff9b::a.b.c.d``, ``64:ff9b:1::/48``), 6to4
    (``2002:AABB:CCDD::``) and Teredo (the client address, RFC 4380)."""
    if not isinstance(addr, ipaddress.IPv6Address):
        return None
    if addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    if addr.teredo is not None:
        return addr.teredo[1]
    if addr.sixtofour is not None:
        return addr.sixtofour
    low32 = ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    if addr in _IPV4_COMPATIBLE and int(addr) > 1:  # not :: or ::1 (those stay IPv6)
        return low32
    if any(addr in net for net in _NAT64):
        return low32
    return None


def is_public(addr: IPAddress) -> bool:
    """True only for a globally routable unicast address (an allow-list: ``is_global`` minus
    the special ranges), judging an IPv6 address that embeds an IPv4 one by the IPv4 one."""
    inner = embedded_ipv4(addr)
    if inner is not None:
        return is_public(inner)
    if not addr.is_global or addr.is_multicast:
        return False
    return not any(addr.version == n.version and addr in n for n in _NOT_GLOBAL)


def check_address(
    host: str, addr: IPAddress, *, allow_private: bool, param: str | None = None
) -> None:
    """Refuse anything but a public unicast address (see :func:`is_public`): loopback,
    private, link-local, shared, reserved, documentation, multicast, and IPv6 forms of those
    (IPv4-mapped or -compatible, NAT64, 6to4, Teredo).

    Raises :class:`MediaURLRefusedError` naming the host and address (and ``param``, where the
    URL is in the request); ``allow_private`` lets every address through (tests, trusted
    internal networks).
    """
    if allow_private:
        return
    if not is_public(addr):
        raise MediaURLRefusedError(
            f"the media URL's host {clip(host)} resolves to the non-public address {addr}; the "
            "proxy does not fetch loopback, private or link-local addresses (setting "
            "allow_private_fetch)",
            param=param,
        )


def pinned_request(url: str, addr: IPAddress) -> tuple[str, dict[str, Any]]:
    """The URL to request and the request options that reach ``url`` at ``addr``, its
    checked address: the host replaced by the address; ``Host`` (and, for https, the TLS
    server name the certificate is checked against) still the URL's; ``Connection: close``
    (a connection made for one name is not pooled under its address for another)."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    literal = f"[{addr}]" if addr.version == 6 else str(addr)
    pinned = urlunsplit(
        SplitResult(parts.scheme, f"{literal}:{port}", parts.path or "/", parts.query, "")
    )
    options: dict[str, Any] = {"headers": {"Host": parts.netloc, "Connection": "close"}}
    if parts.scheme == "https" and parts.hostname is not None:
        options["server_hostname"] = parts.hostname
    return pinned, options


async def _resolve(host: str, port: int, param: str | None = None) -> list[IPAddress]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        infos = []
    except UnicodeError:  # the IDNA encoding refused it: a label over 63 characters, or empty
        raise MediaURLRefusedError(
            f"the media URL's host {clip(host)} is not a valid host name", param=param
        ) from None
    if not infos:
        raise MediaFetchError(
            f"the media URL's host {clip(host)} does not resolve", param=param
        ) from None
    return [ipaddress.ip_address(info[4][0]) for info in infos]


async def fetch_url(
    session: aiohttp.ClientSession,
    url: str,
    *,
    expect: Kind | None,
    settings: Settings,
    param: str | None = None,
) -> Blob:
    """Download a client-given URL as a :class:`Blob` of kind ``expect`` (``None``: any).

    Raises :class:`MediaURLRefusedError`, :class:`MediaFetchError` (400),
    :class:`MediaTooLargeError` (413) or :class:`MediaFetchTimeoutError` (504), each naming
    ``param`` (where the URL is in the request).
    """
    timeout_s = settings.media_fetch_timeout_s
    try:
        async with asyncio.timeout(timeout_s):
            target = url
            for _ in range(MAX_MEDIA_REDIRECTS + 1):
                host, port = check_url(target, param=param)
                addrs = await _resolve(host, port, param=param)
                for addr in addrs:
                    check_address(
                        host, addr, allow_private=settings.allow_private_fetch, param=param
                    )
                pinned, options = pinned_request(target, addrs[0])
                async with session.get(pinned, allow_redirects=False, **options) as resp:
                    if resp.status in REDIRECT_STATUSES and "Location" in resp.headers:
                        target = urljoin(target, resp.headers["Location"])
                        continue
                    if resp.status != 200:
                        raise MediaFetchError(
                            f"the media URL answered HTTP {resp.status}", param=param
                        )
                    declared = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
                    kind = expect or content_type_kind(declared)
                    if expect is not None and declared and content_type_kind(declared) != expect:
                        if declared != "application/octet-stream":
                            raise MediaFetchError(
                                f"the media URL answered {clip(declared)}, not {expect} data",
                                param=param,
                            )
                    limit = settings.media_limit(kind)
                    if resp.content_length is not None and resp.content_length > limit:
                        raise MediaTooLargeError(
                            f"the media URL's {kind} is {resp.content_length} bytes; the limit "
                            f"is {limit}",
                            param=param,
                        )
                    buf = bytearray()
                    async for chunk in resp.content.iter_chunked(65536):
                        buf += chunk
                        if len(buf) > limit:
                            raise MediaTooLargeError(
                                f"the media URL's {kind} is larger than the limit of {limit} bytes",
                                param=param,
                            )
                    name = unquote(urlsplit(target).path.rsplit("/", 1)[-1]) or None
                    try:
                        return make_blob(bytes(buf), declared, name, expect=expect)
                    except ClientRequestError as exc:
                        raise MediaFetchError(
                            f"the media URL's content is unusable: {exc.message}", param=param
                        ) from None
            raise MediaFetchError(
                f"the media URL redirected more than {MAX_MEDIA_REDIRECTS} times", param=param
            )
    except TimeoutError:
        raise MediaFetchTimeoutError(
            f"the media URL did not download within {timeout_s:g} s", param=param
        ) from None
    except aiohttp.ClientError as exc:
        raise MediaFetchError(
            f"the media URL could not be fetched: {network_failure(exc)}", param=param
        ) from None


async def ingest(session: aiohttp.ClientSession, part: MediaPart, settings: Settings) -> Blob:
    """The bytes of one media part: a decoded ``data:`` URI or a guarded download.

    Same errors as :func:`fetch_url`, naming the part's ``param``; ``data:`` URIs obey the same
    per-kind limits.
    """
    param = part.param
    if is_data_uri(part.source):
        header = part.source[5:].split(",", 1)[0]
        kind = part.expect or content_type_kind(header.split(";")[0] or "text/plain")
        limit = settings.media_limit(kind)
        blob = decode_data_uri(part.source, limit=limit, expect=part.expect, param=param)
        if len(blob.data) > settings.media_limit(blob.kind):
            raise MediaTooLargeError(
                f"the {blob.kind} is larger than the limit of {settings.media_limit(blob.kind)} "
                "bytes",
                param=param,
            )
    else:
        blob = await fetch_url(
            session, part.source, expect=part.expect, settings=settings, param=param
        )
    if part.filename:
        blob = Blob(blob.data, blob.content_type, part.filename, blob.kind)
    return blob
