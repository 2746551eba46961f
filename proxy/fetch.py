"""Guarded fetching of media the client hands in: ``data:`` URIs and http(s) URLs.

A chat message may carry ``image_url``/``file`` parts pointing anywhere. Fetching them for the
client is a server-side request forgery risk, so :func:`check_url` and :func:`check_address`
(pure) refuse everything but http(s) to public addresses: loopback, private, link-local,
multicast, reserved and unspecified addresses are refused (400 ``media_url_refused``) unless
``allow_private_fetch`` is set. Each redirect (at most 3) is checked again. The body is capped
at the kind's limit (413 ``media_too_large``, announced ``Content-Length`` refused before
reading), the whole download at ``media_fetch_timeout_s`` (504 ``media_fetch_timeout``), and the
content type must be of the expected kind (400 ``media_fetch_failed``); image bytes are also
checked by their magic numbers. An unreachable host or a non-200 answer is a 400
``media_fetch_failed``: the client gave a URL that does not work.

Known limit: the host is resolved for the check and again by the connection, so a DNS answer
that changes in between (rebinding) is not caught.

Limits per kind (PROTOCOL.md §7.2): ``max_image_bytes``, ``max_video_bytes``,
``max_audio_bytes``, ``max_document_bytes``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import unquote, urljoin, urlsplit

import aiohttp

from proxy.config import Settings
from proxy.errors import (
    ClientRequestError,
    MediaFetchError,
    MediaFetchTimeoutError,
    MediaTooLargeError,
    MediaURLRefusedError,
)
from proxy.qwen.client import network_failure
from proxy.qwen.files import Blob, Kind, content_type_kind, decode_data_uri, make_blob
from proxy.qwen.request import MediaPart

__all__ = ["check_address", "check_url", "fetch_url", "ingest"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_REDIRECTS = (301, 302, 303, 307, 308)
_MAX_REDIRECTS = 3


def check_url(url: str) -> tuple[str, int]:
    """``(host, port)`` of an http(s) URL; raises :class:`MediaURLRefusedError` otherwise."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise MediaURLRefusedError("the media URL is malformed", param="messages") from None
    if parts.scheme not in ("http", "https"):
        raise MediaURLRefusedError(
            f"media URLs must be http(s) or data: URIs, not {parts.scheme or 'relative'!r}",
            param="messages",
        )
    if not parts.hostname:
        raise MediaURLRefusedError("the media URL has no host", param="messages")
    if parts.username or parts.password:
        raise MediaURLRefusedError("media URLs with credentials are refused", param="messages")
    return parts.hostname, port or (443 if parts.scheme == "https" else 80)


def check_address(host: str, addr: IPAddress, *, allow_private: bool) -> None:
    """Refuse a non-public address (loopback, private, link-local, reserved, multicast…).

    Raises :class:`MediaURLRefusedError` naming the host and address; ``allow_private`` lets
    every address through (tests, trusted internal networks).
    """
    if allow_private:
        return
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if not addr.is_global or addr.is_multicast:
        raise MediaURLRefusedError(
            f"the media URL's host {host} resolves to the non-public address {addr}; the proxy "
            "does not fetch loopback, private or link-local addresses (setting "
            "allow_private_fetch)",
            param="messages",
        )


async def _resolve(host: str, port: int) -> list[IPAddress]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        raise MediaFetchError(f"the media URL's host {host} does not resolve") from None
    return [ipaddress.ip_address(info[4][0]) for info in infos]


async def fetch_url(
    session: aiohttp.ClientSession, url: str, *, expect: Kind | None, settings: Settings
) -> Blob:
    """Download a client-given URL as a :class:`Blob` of kind ``expect`` (``None``: any).

    Raises :class:`MediaURLRefusedError`, :class:`MediaFetchError` (400),
    :class:`MediaTooLargeError` (413) or :class:`MediaFetchTimeoutError` (504).
    """
    timeout_s = settings.media_fetch_timeout_s
    try:
        async with asyncio.timeout(timeout_s):
            target = url
            for _ in range(_MAX_REDIRECTS + 1):
                host, port = check_url(target)
                for addr in await _resolve(host, port):
                    check_address(host, addr, allow_private=settings.allow_private_fetch)
                async with session.get(target, allow_redirects=False) as resp:
                    if resp.status in _REDIRECTS and "Location" in resp.headers:
                        target = urljoin(target, resp.headers["Location"])
                        continue
                    if resp.status != 200:
                        raise MediaFetchError(
                            f"the media URL answered HTTP {resp.status}", param="messages"
                        )
                    declared = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
                    kind = expect or content_type_kind(declared)
                    if expect is not None and declared and content_type_kind(declared) != expect:
                        if declared != "application/octet-stream":
                            raise MediaFetchError(
                                f"the media URL answered {declared}, not {expect} data",
                                param="messages",
                            )
                    limit = settings.media_limit(kind)
                    if resp.content_length is not None and resp.content_length > limit:
                        raise MediaTooLargeError(
                            f"the media URL's {kind} is {resp.content_length} bytes; the limit "
                            f"is {limit}"
                        )
                    buf = bytearray()
                    async for chunk in resp.content.iter_chunked(65536):
                        buf += chunk
                        if len(buf) > limit:
                            raise MediaTooLargeError(
                                f"the media URL's {kind} is larger than the limit of {limit} bytes"
                            )
                    name = unquote(urlsplit(target).path.rsplit("/", 1)[-1]) or None
                    try:
                        return make_blob(bytes(buf), declared, name, expect=expect)
                    except ClientRequestError as exc:
                        raise MediaFetchError(
                            f"the media URL's content is unusable: {exc.message}", param="messages"
                        ) from None
            raise MediaFetchError(
                f"the media URL redirected more than {_MAX_REDIRECTS} times", param="messages"
            )
    except TimeoutError:
        raise MediaFetchTimeoutError(
            f"the media URL did not download within {timeout_s:g} s"
        ) from None
    except aiohttp.ClientError as exc:
        raise MediaFetchError(
            f"the media URL could not be fetched: {network_failure(exc)}", param="messages"
        ) from None


async def ingest(session: aiohttp.ClientSession, part: MediaPart, settings: Settings) -> Blob:
    """The bytes of one media part: a decoded ``data:`` URI or a guarded download.

    Same errors as :func:`fetch_url`; ``data:`` URIs obey the same per-kind limits.
    """
    if part.source.startswith("data:"):
        header = part.source[5:].split(",", 1)[0]
        kind = part.expect or content_type_kind(header.split(";")[0] or "text/plain")
        blob = decode_data_uri(part.source, limit=settings.media_limit(kind), expect=part.expect)
        if len(blob.data) > settings.media_limit(blob.kind):
            raise MediaTooLargeError(
                f"the {blob.kind} is larger than the limit of {settings.media_limit(blob.kind)} "
                "bytes"
            )
    else:
        blob = await fetch_url(session, part.source, expect=part.expect, settings=settings)
    if part.filename:
        blob = Blob(blob.data, blob.content_type, part.filename, blob.kind)
    return blob
