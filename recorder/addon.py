"""mitmproxy addon: record chat.qwen.ai traffic into cassettes (format v1), streams chunk by chunk.

Run it with ``mitmdump -s recorder/addon.py`` (regular proxy for a browser, or
``--mode reverse:https://chat.qwen.ai`` in front of any base URL for scripted clients), or through
``qwen-record capture``, which starts mitmdump with this file. This is the only module of the
project that imports mitmproxy.

How a flow is recorded (docs/recording.md §1.1-§1.6):

* ``request``: for a recorded host, ``flow.request.anticomp()`` asks for an uncompressed body, so
  streamed chunks are plain text; if the server compresses anyway, the chunks are decoded here
  (gzip, deflate, br, zstd) and ``x_stream.wire_encoding`` names the coding.
* ``responseheaders``: a ``text/event-stream`` answer gets ``flow.response.stream = Tee()``. The
  tee appends ``(time.time(), bytes)`` and returns the bytes unchanged, so the client receives
  every chunk as it arrives; it never returns ``b""`` for non-final data (that would end an
  HTTP/1.1 chunked body early, docs/recording.md §1.2).
* ``response`` (complete) and ``error`` (client went away, upstream dropped the connection):
  the interaction is built, redacted (``recorder.redact``; chunk lengths follow the redacted
  bytes) and its cassette file is rewritten atomically (temporary file, fsync, ``os.replace``),
  off the event loop. A cut stream is kept with ``end: "error"`` and mitmproxy's error text.
* ``done`` (Ctrl-C, shutdown): streams still open are written as cut (``end: "error"``) and
  every pending file is flushed. A ``kill -9`` during a write leaves a ``.<name>.<random>.tmp``
  file beside the intact cassette; the next run removes those when it starts writing to the
  directory (and logs how many).

Cassettes: ``qwen_cassette_mode=chat`` writes ``<dir>/<run>-chat-<n>.json`` per chat (the id
comes from the ``chats/new`` answer's ``data.id``, the ``chat_id`` query parameter or a
``/chats/<id>`` path, docs/protocol.md sections 2-4), plus ``<dir>/<run>-other.json`` for calls that
belong to no chat (model list, getstsToken, sign-in); ``run`` writes one ``<dir>/<run>.json``.
Placeholders are stable within one cassette file.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import re
import sys
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from http.client import responses as _REASONS
from importlib import metadata
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

from mitmproxy import ctx, exceptions, http

try:  # mitmdump loads this file by path; make the package importable from a plain checkout
    import recorder  # noqa: F401
except ModuleNotFoundError:  # pragma: no cover - only without an installed project
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recorder.cassette import (
    Cassette,
    CassetteError,
    Interaction,
    Provenance,
    remove_stale_temporaries,
    write_atomic,
)
from recorder.redact import Redactor

__all__ = [
    "CAPTURE_TOOL",
    "CassetteSink",
    "Recorder",
    "Tee",
    "build_interaction",
    "chat_id_of",
]

log = logging.getLogger("recorder.addon")

CAPTURE_TOOL = "qwen-record capture"
"""``provenance.tool`` of every cassette this addon writes."""

_HOP_HEADERS = frozenset({"content-length", "content-encoding", "transfer-encoding"})
_RUN_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_CHAT_PATH = re.compile(r"/api/v\d+/chats/(?P<id>[A-Za-z0-9_-]{8,})/?$")
_NOTE_HEADER = "x-qwen-recorder-note"

Piece = tuple[float, bytes]


def _tool_version() -> str:
    try:
        return metadata.version("qwen-gateway")
    except metadata.PackageNotFoundError:  # pragma: no cover
        return "0.0.0"


def _mitmproxy_version() -> str:
    try:
        return metadata.version("mitmproxy")
    except metadata.PackageNotFoundError:  # pragma: no cover
        return "unknown"


class Tee:
    """The stream callable: records ``(time.time(), bytes)`` per chunk, passes bytes through.

    mitmproxy calls it once per received chunk and once with ``b""`` at the end of the body
    (docs/recording.md §1.1). It returns its argument unchanged, so it returns ``b""`` only for
    that final call, never for data. Keep it trivial: it runs on the proxy's event loop.
    """

    __slots__ = ("pieces",)

    def __init__(self) -> None:
        self.pieces: list[Piece] = []

    def __call__(self, data: bytes) -> bytes:
        """Record ``data`` (when non-empty) with the current time and return it unchanged."""
        if data:
            self.pieces.append((time.time(), data))
        return data


# ------------------------------------------------------------------------------------------------
# Pure conversion helpers (no mitmproxy state beyond the flow object)


def _headers_dict(headers: http.Headers) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    canonical: dict[str, str] = {}
    for name, value in headers.items(multi=True):
        key = canonical.setdefault(name.lower(), name)
        out.setdefault(key, []).append(value)
    return out


def _content_type(headers: http.Headers) -> str:
    return headers.get("content-type", "").split(";")[0].strip().lower()


def _decoder(encoding: str) -> Callable[[bytes], bytes] | None:
    """An incremental decoder for one content coding, or ``None`` when unknown."""
    enc = encoding.strip().lower()
    if enc in ("", "identity"):
        return lambda b: b
    if enc in ("gzip", "x-gzip"):
        z = zlib.decompressobj(16 + zlib.MAX_WBITS)
        return z.decompress
    if enc == "deflate":
        z = zlib.decompressobj()
        return z.decompress
    if enc == "br":
        import brotli  # a mitmproxy dependency

        d = brotli.Decompressor()
        return lambda b: bytes(d.process(b))
    if enc == "zstd":
        import zstandard  # a mitmproxy dependency

        zd = zstandard.ZstdDecompressor().decompressobj()
        return lambda b: bytes(zd.decompress(b))
    return None


def _decode_pieces(pieces: Sequence[Piece], encoding: str) -> list[Piece] | None:
    """Decode compressed stream chunks chunk by chunk; ``None`` when the coding is unknown or
    the data is corrupt. Chunks that decode to nothing are dropped."""
    decode = _decoder(encoding)
    if decode is None:
        return None
    out: list[Piece] = []
    try:
        for t, p in pieces:
            plain = decode(p)
            if plain:
                out.append((t, plain))
    except Exception:  # zlib.error, brotli.error, zstd errors: keep the raw bytes instead
        return None
    return out


def _trim_incomplete_utf8(raw: bytes) -> tuple[bytes, int]:
    """Drop a trailing incomplete UTF-8 sequence (a stream cut inside a character)."""
    for cut in range(1, min(4, len(raw)) + 1):
        lead = raw[-cut]
        if lead & 0xC0 == 0x80:  # continuation byte: keep looking for the lead byte
            continue
        need = 2 if lead >= 0xC0 else 1
        need = 3 if lead >= 0xE0 else need
        need = 4 if lead >= 0xF0 else need
        if lead >= 0xC0 and need > cut:
            return raw[:-cut], cut
        return raw, 0
    return raw, 0


def _body_text(content: bytes | None, what: str) -> tuple[str | None, str | None]:
    """``(text, note)``: the body as UTF-8 text, or ``None`` plus a note for binary bodies."""
    if content is None:
        return None, f"{what} not available to the recorder"
    try:
        return content.decode("utf-8"), None
    except UnicodeDecodeError:
        return None, f"{what} omitted: {len(content)} bytes, not UTF-8"


def chat_id_of(flow: http.HTTPFlow) -> str | None:
    """The chat a flow belongs to, or ``None``.

    Taken from, in order: the ``chat_id`` query parameter (``chat/completions``, docs/protocol.md
    section 4); a ``/api/v2/chats/<id>`` path (section 2); the ``data.id`` of a
    ``POST /api/v2/chats/new`` JSON answer (section 3). Chat ids are not secrets; they are
    never redacted.
    """
    url = urlsplit(flow.request.url)
    values = parse_qs(url.query).get("chat_id")
    if values and values[0]:
        return values[0]
    path = url.path
    if path.rstrip("/").endswith("/chats/new"):
        if flow.response is None:
            return None
        try:
            data = json.loads(flow.response.get_content(strict=False) or b"")
        except ValueError:
            return None
        inner = data.get("data") if isinstance(data, dict) else None
        cid = inner.get("id") if isinstance(inner, dict) else None
        return cid if isinstance(cid, str) and cid else None
    m = _CHAT_PATH.search(path)
    return m.group("id") if m else None


def build_interaction(
    flow: http.HTTPFlow,
    pieces: Sequence[Piece] | None,
    error: str | None,
    redactor: Redactor,
) -> Interaction | None:
    """Build the redacted ``Interaction`` of a finished or failed flow.

    ``pieces`` are the tee's ``(time.time(), bytes)`` chunks for a streamed answer, ``None``
    for a buffered one. ``error`` is mitmproxy's ``flow.error.msg`` for a cut exchange. Returns
    ``None`` when there is no response at all (the exchange failed before the headers).

    A streamed answer becomes ``x_stream`` with offsets in seconds since the response headers
    and ``t_headers_s`` from request start to headers; an aborted stream keeps its chunks with
    ``end: "error"`` (a trailing incomplete UTF-8 character is dropped and said so in the
    error text). A buffered answer cut by an error is stored the same way, as one chunk. Bodies
    that are not UTF-8 are omitted and an ``x-qwen-recorder-note`` response header says why.
    """
    req = flow.request
    resp = flow.response
    if resp is None:
        return None
    notes: list[str] = []
    req_headers = redactor.headers(_headers_dict(req.headers))
    raw_req = req.get_content(strict=False)
    req_text, note = _body_text(raw_req, "request body")
    if note and raw_req is not None:
        notes.append(note)
    if req_text == "":
        req_text = None
    if req_text is not None:
        req_text = redactor.text(req_text)
    uri = redactor.uri(req.url)

    encoding = resp.headers.get("content-encoding", "")
    resp_headers_raw = {
        k: v for k, v in _headers_dict(resp.headers).items() if k.lower() not in _HOP_HEADERS
    }
    t_headers = max(0.0, (resp.timestamp_start or 0.0) - (req.timestamp_start or 0.0))
    status = resp.status_code
    reason = resp.reason or _REASONS.get(status, "")

    if pieces is None and error is not None:
        # A buffered body cut short: keep what mitmproxy has (usually nothing) as one chunk.
        content = resp.get_content(strict=False) if resp.raw_content is not None else b""
        pieces = [(resp.timestamp_start or 0.0, content)] if content else []
        encoding = ""  # get_content already decoded it

    if pieces is None:
        content = resp.get_content(strict=False)
        text, note = _body_text(content, "response body")
        if note:
            notes.append(note)
        if notes:
            resp_headers_raw[_NOTE_HEADER] = ["; ".join(notes)]
        return Interaction(
            method=req.method,
            uri=uri,
            request_headers=req_headers,
            request_body=req_text,
            status=status,
            reason=reason,
            response_headers=redactor.headers(resp_headers_raw),
            response_body=redactor.text(text or ""),
        )

    wire_encoding: str | None = None
    if encoding and encoding.strip().lower() != "identity":
        decoded = _decode_pieces(pieces, encoding)
        if decoded is None:
            notes.append(f"stream left {encoding}-encoded: the recorder could not decode it")
            resp_headers_raw["Content-Encoding"] = [encoding]
        else:
            pieces = decoded
            wire_encoding = encoding.strip().lower()
    start = resp.timestamp_start or (pieces[0][0] if pieces else 0.0)
    timed: list[Piece] = []
    previous = 0.0
    for t, p in pieces:
        offset = max(previous, t - start, 0.0)
        timed.append((round(offset, 6), p))
        previous = offset
    raw = b"".join(p for _, p in timed)
    trimmed, dropped = _trim_incomplete_utf8(raw)
    if dropped:
        keep = len(trimmed)
        cut: list[Piece] = []
        seen = 0
        for t, p in timed:
            take = p[: max(0, keep - seen)]
            seen += len(p)
            if take:
                cut.append((t, take))
        timed = cut
        if error is not None:
            error += f" ({dropped} trailing bytes of an incomplete UTF-8 character dropped)"
    try:
        redacted = redactor.chunks(timed)
    except UnicodeDecodeError:
        notes.append("stream body is not UTF-8; invalid bytes replaced by U+FFFD")
        text = b"".join(p for _, p in timed).decode("utf-8", errors="replace")
        redacted = [(timed[-1][0] if timed else 0.0, redactor.text(text).encode("utf-8"))]
    if notes:
        resp_headers_raw[_NOTE_HEADER] = ["; ".join(notes)]
    end: Literal["eof", "error"] = "error" if error is not None else "eof"
    inter = Interaction.streamed(
        method=req.method,
        uri=uri,
        request_headers=req_headers,
        request_body=req_text,
        pieces=redacted,
        status=status,
        reason=reason,
        response_headers=redactor.headers(resp_headers_raw),
        end=end,
        error=(error or "connection error") if end == "error" else None,
        t_headers_s=round(t_headers, 6),
    )
    if wire_encoding is not None and inter.stream is not None:
        inter.stream = dataclasses.replace(inter.stream, wire_encoding=wire_encoding)
    return inter


# ------------------------------------------------------------------------------------------------
# Cassette files


class _Group:
    """One cassette file being built (a plain class: mitmproxy loads this file by path, and
    dataclasses need the module in ``sys.modules``)."""

    __slots__ = ("description", "interactions", "name", "redactor")

    def __init__(self, name: str, description: str, redactor: Redactor) -> None:
        self.name = name
        self.description = description
        self.redactor = redactor
        self.interactions: list[Interaction] = []


class CassetteSink:
    """Groups interactions into cassette files and rewrites each file atomically as it grows.

    ``mode`` is ``"chat"`` (one file per chat, ``<run>-chat-<n>.json``, plus
    ``<run>-other.json``) or ``"run"`` (one ``<run>.json``). Each file has its own
    ``Redactor``, so placeholders are stable within a file. ``add`` renders the new file text
    on the caller's thread; ``flush`` writes it (safe to call from worker threads: writes of one
    file are serialised and an older text never replaces a newer one).
    """

    def __init__(self, directory: Path, mode: Literal["chat", "run"], run_name: str) -> None:
        stale = remove_stale_temporaries(directory)
        if stale:
            log.info(
                "removed %d temporary file(s) left by an interrupted run in %s",
                len(stale),
                directory,
            )
        self.directory = directory
        self.mode = mode
        self.run_name = run_name
        self._groups: dict[str | None, _Group] = {}
        self._chat_count = 0
        self._latest: dict[Path, tuple[int, str]] = {}
        self._written: dict[Path, int] = {}
        self._locks: dict[Path, threading.Lock] = {}
        self._version = 0

    def _group(self, chat_id: str | None) -> _Group:
        key = chat_id if self.mode == "chat" else "__run__"
        group = self._groups.get(key)
        if group is None:
            if self.mode == "run":
                name = self.run_name
                description = f"Captured with {CAPTURE_TOOL}: every recorded exchange of one run."
            elif chat_id is None:
                name = f"{self.run_name}-other"
                description = f"Captured with {CAPTURE_TOOL}: exchanges outside any chat."
            else:
                self._chat_count += 1
                name = f"{self.run_name}-chat-{self._chat_count}"
                description = f"Captured with {CAPTURE_TOOL}: chat {chat_id}."
            group = _Group(name, description, Redactor())
            self._groups[key] = group
        return group

    def add(self, chat_id: str | None, build: Callable[[Redactor], Interaction | None]) -> Path:
        """Add the interaction ``build(redactor)`` to the file of ``chat_id``; return that path.

        The new file text is rendered and validated now; call ``flush(path)`` to write it.
        Raises ``CassetteError`` when the cassette would be invalid (nothing is queued then) and
        ``LookupError`` when ``build`` returns ``None``.
        """
        group = self._group(chat_id)
        inter = build(group.redactor)
        if inter is None:
            raise LookupError("nothing to record")
        group.interactions.append(inter)
        cassette = Cassette(
            name=group.name,
            description=group.description,
            provenance=Provenance(
                kind="captured",
                date=datetime.now(UTC).date().isoformat(),
                tool=CAPTURE_TOOL,
                tool_version=_tool_version(),
                protocol_sections=[],
                source=f"mitmproxy {_mitmproxy_version()}",
            ),
            interactions=list(group.interactions),
        )
        try:
            text = cassette.dumps()
        except CassetteError:
            group.interactions.pop()
            raise
        path = self.directory / f"{group.name}.json"
        self._version += 1
        self._latest[path] = (self._version, text)
        self._locks.setdefault(path, threading.Lock())
        return path

    def flush(self, path: Path) -> None:
        """Write the newest text of ``path`` if it was not written yet (atomic; ``OSError``)."""
        lock = self._locks.get(path)
        if lock is None:
            return
        with lock:
            version, text = self._latest[path]
            if self._written.get(path, 0) >= version:
                return
            write_atomic(path, text)
            self._written[path] = version

    def flush_all(self) -> None:
        """Write every file that has unwritten changes."""
        for path in list(self._latest):
            self.flush(path)

    @property
    def paths(self) -> list[Path]:
        """Every cassette file of this sink, in creation order."""
        return list(self._latest)


# ------------------------------------------------------------------------------------------------
# The addon


def _default_run_name() -> str:
    return "capture-" + datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


class Recorder:
    """The recording addon; options are registered in ``load`` and checked in ``configure``."""

    def __init__(self) -> None:
        self._open: dict[str, tuple[http.HTTPFlow, Tee]] = {}
        self._sink: CassetteSink | None = None
        self._hosts: tuple[str, ...] = ("chat.qwen.ai",)
        self._finished: set[str] = set()

    # -- options ---------------------------------------------------------------------------------

    def load(self, loader: Any) -> None:
        """Register the ``qwen_*`` options (``--set name=value`` on the mitmdump command line)."""
        loader.add_option(
            "qwen_cassette_dir",
            str,
            "cassettes/captured",
            "Directory the cassettes are written to (created when missing).",
        )
        loader.add_option(
            "qwen_hosts",
            str,
            "chat.qwen.ai",
            "Comma-separated hosts to record; a host also matches its subdomains; '*' records "
            "every host. In reverse mode use the upstream's host (e.g. 127.0.0.1).",
        )
        loader.add_option(
            "qwen_cassette_mode",
            str,
            "chat",
            "'chat': one cassette per chat (<run>-chat-<n>.json, plus <run>-other.json for calls "
            "outside a chat); 'run': one cassette for the whole run (<run>.json).",
            choices=["chat", "run"],
        )
        loader.add_option(
            "qwen_record_all",
            bool,
            False,
            "Record every request to the recorded hosts; by default only API calls (paths "
            "under /api/) are recorded, not pages, scripts or images.",
        )
        loader.add_option(
            "qwen_run_name",
            str,
            "",
            "Prefix of the cassette names (letters, digits, '_', '.', '-'); default "
            "capture-<UTC time of the first recorded exchange>.",
        )

    def configure(self, updated: set[str]) -> None:
        """Validate changed options; raises ``mitmproxy.exceptions.OptionsError``."""
        opts = ctx.options
        if "qwen_hosts" in updated:
            hosts = tuple(h.strip().lower() for h in opts.qwen_hosts.split(",") if h.strip())
            if not hosts:
                raise exceptions.OptionsError("qwen_hosts: give at least one host, or '*'")
            self._hosts = hosts
        if "qwen_cassette_mode" in updated and opts.qwen_cassette_mode not in ("chat", "run"):
            raise exceptions.OptionsError(
                f"qwen_cassette_mode: expected 'chat' or 'run', got {opts.qwen_cassette_mode!r}"
            )
        if "qwen_run_name" in updated and opts.qwen_run_name:
            if not _RUN_NAME.fullmatch(opts.qwen_run_name):
                raise exceptions.OptionsError(
                    f"qwen_run_name: only letters, digits, '_', '.', '-' allowed, "
                    f"got {opts.qwen_run_name!r}"
                )
        if "qwen_cassette_dir" in updated:
            d = Path(opts.qwen_cassette_dir).expanduser()
            if not opts.qwen_cassette_dir.strip():
                raise exceptions.OptionsError("qwen_cassette_dir: must not be empty")
            if d.exists() and not d.is_dir():
                raise exceptions.OptionsError(f"qwen_cassette_dir: {d} is not a directory")
        if updated & {"qwen_cassette_dir", "qwen_cassette_mode", "qwen_run_name"}:
            if self._sink is not None:
                self._sink.flush_all()
            self._sink = None

    # -- filters ---------------------------------------------------------------------------------

    def _recorded(self, flow: http.HTTPFlow) -> bool:
        host = flow.request.host.lower()
        if "*" not in self._hosts and not any(
            host == h or host.endswith("." + h) for h in self._hosts
        ):
            return False
        return bool(ctx.options.qwen_record_all) or flow.request.path.startswith("/api/")

    def _sink_now(self) -> CassetteSink:
        if self._sink is None:
            opts = ctx.options
            mode: Literal["chat", "run"] = "run" if opts.qwen_cassette_mode == "run" else "chat"
            self._sink = CassetteSink(
                Path(opts.qwen_cassette_dir).expanduser(),
                mode,
                opts.qwen_run_name or _default_run_name(),
            )
        return self._sink

    # -- hooks -----------------------------------------------------------------------------------

    def request(self, flow: http.HTTPFlow) -> None:
        """Ask recorded hosts for an uncompressed body (``Accept-Encoding: identity``)."""
        if self._recorded(flow):
            flow.request.anticomp()

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        """Stream ``text/event-stream`` answers of recorded hosts through a ``Tee``."""
        if flow.response is None or not self._recorded(flow):
            return
        if _content_type(flow.response.headers) == "text/event-stream":
            tee = Tee()
            flow.response.stream = tee
            self._open[flow.id] = (flow, tee)

    async def response(self, flow: http.HTTPFlow) -> None:
        """Record a complete exchange (streamed or buffered)."""
        await self._record(flow, None)

    async def error(self, flow: http.HTTPFlow) -> None:
        """Record an exchange cut by either side, keeping the chunks received so far."""
        msg = flow.error.msg if flow.error is not None else "unknown error"
        await self._record(flow, msg or "unknown error")

    def done(self) -> None:
        """On shutdown: write still-open streams as cut (``end: "error"``), flush every file."""
        for flow, tee in list(self._open.values()):
            path = self._add(flow, tee, "recording stopped: mitmproxy shut down mid-stream")
            if path is not None:
                log.info("recorded (cut by shutdown) %s %s", flow.request.method, flow.request.url)
        self._open.clear()
        if self._sink is not None:
            try:
                self._sink.flush_all()
            except OSError as exc:
                log.error("could not write cassettes: %s", exc)

    # -- recording -------------------------------------------------------------------------------

    def _add(self, flow: http.HTTPFlow, tee: Tee | None, error: str | None) -> Path | None:
        sink = self._sink_now()
        pieces = list(tee.pieces) if tee is not None else None
        try:
            return sink.add(chat_id_of(flow), lambda r: build_interaction(flow, pieces, error, r))
        except LookupError:
            log.info("not recorded (no response): %s %s", flow.request.method, flow.request.url)
        except CassetteError as exc:
            log.error("not recorded (invalid cassette): %s", exc)
        return None

    async def _record(self, flow: http.HTTPFlow, error: str | None) -> None:
        entry = self._open.pop(flow.id, None)
        if flow.id in self._finished or (entry is None and not self._recorded(flow)):
            return
        self._finished.add(flow.id)
        tee = entry[1] if entry is not None else None
        path = self._add(flow, tee, error)
        if path is None:
            return
        chunks = f", {len(tee.pieces)} chunks" if tee is not None else ""
        cut = f", cut: {error}" if error else ""
        log.info(
            "recorded %s %s -> %s%s%s",
            flow.request.method,
            flow.request.path,
            path.name,
            chunks,
            cut,
        )
        sink = self._sink_now()
        try:
            await asyncio.to_thread(sink.flush, path)
        except OSError as exc:
            log.error("could not write %s: %s", path, exc)


addons = [Recorder()]
