"""Turn captured traffic (``.http`` request + response files, HAR 1.2) into interactions.

Every imported value goes through a ``recorder.redact.Redactor``. Imported SSE bodies become
streamed interactions with one chunk per SSE event (docs/protocol.md section 5.1: events are
``data: <json>`` lines ended by a blank line); captures carry no per-chunk timing, so every chunk
is at 0.0 seconds. Response bodies are kept byte-for-byte (after redaction, which leaves bodies
without secrets untouched).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
from collections.abc import Iterable, Sequence
from datetime import date
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from recorder.cassette import Cassette, Interaction, Provenance
from recorder.redact import Redactor

__all__ = [
    "IMPORT_TOOL",
    "CaptureFormatError",
    "build_cassette",
    "import_har",
    "import_http_pair",
    "is_sse",
    "split_sse_events",
]

log = logging.getLogger("recorder.importers")

IMPORT_TOOL = "qwen-record import"
SSE_CONTENT_TYPE = "text/event-stream; charset=utf-8"

_DROP_RESPONSE_HEADERS = frozenset({"content-length", "content-encoding", "transfer-encoding"})
_SSE_FIELD = re.compile(r"^(data|event|id|retry)?:")
_EVENT_END = re.compile(r"(?<=\n\n)|(?<=\r\n\r\n)|(?<=\r\r)")


class CaptureFormatError(ValueError):
    """A capture file cannot be parsed; the message names the file and the problem."""


def is_sse(text: str) -> bool:
    """True when every non-blank line is an SSE field line and at least one is ``data:``."""
    lines = [line for line in text.splitlines() if line.strip()]
    return (
        bool(lines)
        and all(_SSE_FIELD.match(line) for line in lines)
        and any(line.startswith("data:") for line in lines)
    )


def split_sse_events(text: str) -> list[str]:
    """Split an SSE body into events, each up to and including its blank line.

    A trailing partial event (no blank line) is kept as the last item. Joining the result
    gives ``text`` back exactly.
    """
    return [part for part in _EVENT_END.split(text) if part]


def _tool_version() -> str:
    try:
        return metadata.version("qwen-gateway")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def _add(headers: dict[str, list[str]], name: str, value: str) -> None:
    headers.setdefault(name, []).append(value)


def _streamed_or_plain(
    *,
    method: str,
    uri: str,
    request_headers: dict[str, list[str]],
    request_body: str | None,
    status: int,
    reason: str,
    response_headers: dict[str, list[str]],
    body: str,
    streamed: bool,
    redactor: Redactor,
    t_headers_s: float = 0.0,
) -> Interaction:
    if streamed:
        events = [redactor.text(e) for e in split_sse_events(body)]
        return Interaction.streamed(
            method=method,
            uri=uri,
            request_headers=request_headers,
            request_body=request_body,
            pieces=[(0.0, e.encode("utf-8")) for e in events],
            status=status,
            reason=reason,
            response_headers=response_headers,
            t_headers_s=t_headers_s,
        )
    return Interaction(
        method=method,
        uri=uri,
        request_headers=request_headers,
        request_body=request_body,
        status=status,
        reason=reason,
        response_headers=response_headers,
        response_body=redactor.text(body),
    )


def _read_text(path: Path) -> str:
    try:
        with path.open(encoding="utf-8", newline="") as fh:
            return fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise CaptureFormatError(f"{path}: cannot read as UTF-8 text: {exc}") from exc


def _parse_http_request(path: Path) -> tuple[str, str, dict[str, list[str]], str | None]:
    text = _read_text(path)
    lines = text.splitlines(keepends=True)
    pos = 0
    i = 0
    while i < len(lines) and (lines[i].startswith("#") or not lines[i].strip()):
        pos += len(lines[i])
        i += 1
    if i == len(lines):
        raise CaptureFormatError(f"{path}: no request line (METHOD URL) found")
    parts = lines[i].split()
    if len(parts) < 2:
        raise CaptureFormatError(f"{path}: line {i + 1}: expected 'METHOD URL', got {lines[i]!r}")
    method, url = parts[0].upper(), parts[1]
    pos += len(lines[i])
    i += 1
    headers: dict[str, list[str]] = {}
    while i < len(lines) and lines[i].strip():
        name, sep, value = lines[i].rstrip("\r\n").partition(":")
        if not sep or not name.strip():
            raise CaptureFormatError(
                f"{path}: line {i + 1}: expected 'Name: value', got {lines[i]!r}"
            )
        _add(headers, name.strip(), value.strip())
        pos += len(lines[i])
        i += 1
    if i < len(lines):
        pos += len(lines[i])  # the blank line
    body = text[pos:]
    if body.endswith("\r\n"):
        body = body[:-2]
    elif body.endswith("\n"):
        body = body[:-1]
    return method, url, headers, (body if body else None)


def import_http_pair(request_path: Path, response_path: Path, *, redactor: Redactor) -> Interaction:
    """One interaction from a ``.http`` request file and a raw response body file.

    The request file holds optional leading ``#`` comment lines, ``METHOD URL``, ``Name: value``
    header lines, a blank line and the body (kept as given, minus one trailing newline). The
    response file is the body: SSE text gives a streamed ``text/event-stream`` interaction with
    one chunk per event at 0.0 s; anything else a plain one (``application/json`` when it parses
    as JSON, else ``text/plain; charset=utf-8``). Status is 200 (captures have none).
    Raises ``CaptureFormatError`` for unreadable or malformed files.
    """
    method, url, headers, body = _parse_http_request(Path(request_path))
    response_text = _read_text(Path(response_path))
    streamed = is_sse(response_text)
    if streamed:
        content_type = SSE_CONTENT_TYPE
    else:
        try:
            json.loads(response_text)
            content_type = "application/json"
        except ValueError:
            content_type = "text/plain; charset=utf-8"
    return _streamed_or_plain(
        method=method,
        uri=redactor.uri(url),
        request_headers=redactor.headers(headers),
        request_body=None if body is None else redactor.text(body),
        status=200,
        reason="OK",
        response_headers={"Content-Type": [content_type]},
        body=response_text,
        streamed=streamed,
        redactor=redactor,
    )


def _har_headers(items: Iterable[Any], *, drop: frozenset[str]) -> dict[str, list[str]]:
    headers: dict[str, list[str]] = {}
    for item in items:
        if not isinstance(item, dict):
            continue
        name, value = str(item.get("name", "")), str(item.get("value", ""))
        if not name or name.startswith(":") or name.lower() in drop:
            continue
        _add(headers, name, value)
    return headers


def _host_matches(url: str, host: str | None) -> bool:
    if host is None:
        return True
    hostname = (urlsplit(url).hostname or "").lower()
    h = host.lower()
    return hostname == h or hostname.endswith("." + h)


def import_har(
    path: Path, *, redactor: Redactor, host: str | None = "chat.qwen.ai"
) -> list[Interaction]:
    """Interactions from a HAR 1.2 file, in entry order.

    Keeps entries whose URL host is ``host`` or a subdomain of it (all entries when ``host`` is
    ``None``). Uses request method/url/headers/``postData.text`` and response
    status/statusText/headers/``content.text`` (base64-decoded when ``content.encoding`` is
    ``"base64"``); HTTP/2 pseudo-headers and Content-Length/-Encoding/Transfer-Encoding are
    dropped. ``text/event-stream`` responses become streamed interactions, one chunk per SSE
    event at 0.0 s, with ``t_headers_s = timings.wait / 1000`` (seconds) when present. Entries
    without a response (status 0) or with a body that is not UTF-8 are skipped with a warning.
    Raises ``CaptureFormatError`` when the file is not a HAR.
    """
    p = Path(path)
    try:
        data = json.loads(_read_text(p))
        entries = data["log"]["entries"]
        if not isinstance(entries, list):
            raise TypeError("log.entries is not a list")
    except (ValueError, KeyError, TypeError) as exc:
        raise CaptureFormatError(f"{p}: not a HAR 1.2 file: {exc}") from exc
    result: list[Interaction] = []
    for n, entry in enumerate(entries):
        req = entry.get("request") or {}
        resp = entry.get("response") or {}
        url = str(req.get("url", ""))
        if not url or not _host_matches(url, host):
            continue
        status = int(resp.get("status") or 0)
        if status < 100:
            log.warning("%s: entry %d (%s) has no response; skipped", p, n, url)
            continue
        content = resp.get("content") or {}
        text = content.get("text") or ""
        if content.get("encoding") == "base64":
            try:
                text = base64.b64decode(text, validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                log.warning("%s: entry %d (%s) has a binary body; skipped", p, n, url)
                continue
        response_headers = _har_headers(resp.get("headers") or [], drop=_DROP_RESPONSE_HEADERS)
        mime = str(content.get("mimeType") or "")
        for name, values in response_headers.items():
            if name.lower() == "content-type" and values:
                mime = values[0]
        streamed = mime.lower().startswith("text/event-stream")
        timings = entry.get("timings") or {}
        wait = timings.get("wait")
        t_headers = float(wait) / 1000 if isinstance(wait, int | float) and wait > 0 else 0.0
        post = req.get("postData") or {}
        body = post.get("text")
        result.append(
            _streamed_or_plain(
                method=str(req.get("method", "GET")).upper(),
                uri=redactor.uri(url),
                request_headers=redactor.headers(
                    _har_headers(req.get("headers") or [], drop=frozenset())
                ),
                request_body=None if body is None else redactor.text(str(body)),
                status=status,
                reason=str(resp.get("statusText") or ""),
                response_headers=redactor.headers(response_headers),
                body=text,
                streamed=streamed,
                redactor=redactor,
                t_headers_s=t_headers,
            )
        )
    return result


def build_cassette(
    *,
    name: str,
    description: str,
    interactions: Sequence[Interaction],
    sources: Sequence[Path | str],
) -> Cassette:
    """A captured cassette for imported interactions (tool ``qwen-record import``, today's date).

    ``sources`` are the input files; their names (not full paths) form ``provenance.source``.
    """
    return Cassette(
        name=name,
        description=description,
        provenance=Provenance(
            kind="captured",
            date=date.today().isoformat(),
            tool=IMPORT_TOOL,
            tool_version=_tool_version(),
            source=", ".join(Path(s).name for s in sources),
        ),
        interactions=list(interactions),
    )
