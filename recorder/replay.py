"""A fake chat.qwen.ai that replays cassettes chunk by chunk, with optional faults.

``make_replay_app`` builds an aiohttp application with one catch-all route. Each request is
matched with ``recorder.matching`` (docs/cassette-format.md). Streamed interactions are sent with
one HTTP chunk per recorded chunk, so a client's ``iter_chunks()`` sees the recorded boundaries,
including chunks that end inside a UTF-8 character (PROTOCOL.md section 5.1). Faults change the
boundaries or the timing of a body, never its content (``drop_after`` truncates it).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from aiohttp import web
from multidict import CIMultiDict

from recorder.cassette import Cassette, Interaction
from recorder.matching import Hit, Index, fingerprint

__all__ = [
    "FAULT_KEY",
    "INDEX_KEY",
    "REQUESTS_KEY",
    "SPEED_KEY",
    "Bytewise",
    "Coalesce",
    "DropAfter",
    "Fault",
    "ReceivedRequest",
    "SplitUtf8",
    "apply_fault",
    "make_replay_app",
]

log = logging.getLogger("recorder.replay")

Chunks = list[tuple[float, bytes]]

_HOP_HEADERS = frozenset({"content-length", "content-encoding", "transfer-encoding"})


@dataclass(frozen=True)
class ReceivedRequest:
    """What a client sent: method, path with query, headers (last value wins), raw body bytes.

    ``matched`` is the name of the cassette that answered, or ``None`` for a miss.
    """

    method: str
    path_qs: str
    headers: dict[str, str]
    body: bytes
    matched: str | None


class Fault:
    """A transformation of a response body's chunks; see ``Fault.parse`` for the specs."""

    spec: ClassVar[str] = ""

    @staticmethod
    def parse(text: str) -> Fault:
        """Parse ``split_utf8``, ``bytewise``, ``coalesce`` or ``drop_after:N`` (N bytes >= 0).

        Raises ``ValueError`` for anything else.
        """
        name, _, arg = text.strip().partition(":")
        simple: dict[str, type[Fault]] = {
            "split_utf8": SplitUtf8,
            "bytewise": Bytewise,
            "coalesce": Coalesce,
        }
        if name in simple and not arg:
            return simple[name]()
        if name == "drop_after":
            try:
                n = int(arg)
            except ValueError:
                n = -1
            if n >= 0:
                return DropAfter(n)
            raise ValueError(f"drop_after needs a byte count >= 0, e.g. drop_after:100: {text!r}")
        raise ValueError(
            f"unknown fault {text!r}; expected split_utf8, bytewise, coalesce or drop_after:N"
        )

    def __str__(self) -> str:
        return self.spec


@dataclass(frozen=True)
class SplitUtf8(Fault):
    """Cut each chunk right after the first byte of its first multi-byte UTF-8 character."""

    spec: ClassVar[str] = "split_utf8"


@dataclass(frozen=True)
class Bytewise(Fault):
    """Send one byte per write."""

    spec: ClassVar[str] = "bytewise"


@dataclass(frozen=True)
class Coalesce(Fault):
    """Send the whole body in one write, at the time of the last recorded chunk."""

    spec: ClassVar[str] = "coalesce"


@dataclass(frozen=True)
class DropAfter(Fault):
    """Send the first ``n`` bytes of the body, then drop the connection without a clean end."""

    n: int

    def __str__(self) -> str:
        return f"drop_after:{self.n}"


def apply_fault(fault: Fault | None, chunks: Sequence[tuple[float, bytes]]) -> tuple[Chunks, bool]:
    """Apply ``fault`` to ``(seconds since headers, bytes)`` chunks.

    Returns the new chunks (no empty ones) and whether the connection must be dropped after
    them. Only ``DropAfter`` changes the content (it truncates) and sets the drop flag.
    """
    pieces: Chunks = [(t, b) for t, b in chunks if b]
    if fault is None:
        return pieces, False
    if isinstance(fault, SplitUtf8):
        out: Chunks = []
        for t, b in pieces:
            lead = next((i for i, byte in enumerate(b) if byte >= 0xC0), None)
            if lead is None or lead + 1 >= len(b):
                out.append((t, b))
            else:
                out.extend([(t, b[: lead + 1]), (t, b[lead + 1 :])])
        return out, False
    if isinstance(fault, Bytewise):
        return [(t, b[i : i + 1]) for t, b in pieces for i in range(len(b))], False
    if isinstance(fault, Coalesce):
        if not pieces:
            return [], False
        return [(pieces[-1][0], b"".join(b for _, b in pieces))], False
    if isinstance(fault, DropAfter):
        kept: Chunks = []
        left = fault.n
        for t, b in pieces:
            if left <= 0:
                break
            kept.append((t, b[:left]))
            left -= len(b[:left])
        return kept, True
    raise TypeError(f"unsupported fault {fault!r}")


REQUESTS_KEY = web.AppKey("replay_requests", list[ReceivedRequest])
"""Every request the app received, in order (tests assert on it)."""
INDEX_KEY = web.AppKey("replay_index", Index)
"""The ``recorder.matching.Index`` over the loaded cassettes."""
SPEED_KEY = web.AppKey("replay_speed", float)
"""Timing factor: 1.0 real time, 2.0 twice as fast, 0 no delay."""
FAULT_KEY: web.AppKey[Fault | None] = web.AppKey("replay_fault")
"""The fault applied to every answered body, or ``None``."""


def _response_headers(inter: Interaction) -> CIMultiDict[str]:
    headers: CIMultiDict[str] = CIMultiDict()
    for name, values in inter.response_headers.items():
        if name.lower() in _HOP_HEADERS:
            continue
        for value in values:
            headers.add(name, value)
    return headers


async def _pause(seconds: float, speed: float) -> None:
    if speed > 0 and seconds > 0:
        await asyncio.sleep(seconds / speed)


def _drop(request: web.Request) -> None:
    transport = request.transport
    if transport is not None:
        transport.close()


async def _serve_hit(request: web.Request, hit: Hit) -> web.StreamResponse:
    app = request.app
    speed = app[SPEED_KEY]
    fault = app[FAULT_KEY]
    inter = hit.interaction
    streamed = inter.stream is not None
    chunks: Chunks = list(inter.iter_chunks())
    drop = streamed and inter.stream is not None and inter.stream.end == "error"
    if fault is not None and (streamed or isinstance(fault, DropAfter)):
        chunks, dropped = apply_fault(fault, chunks)
        drop = drop or dropped
    else:
        chunks = [(t, b) for t, b in chunks if b]
    await _pause(inter.stream.t_headers_s if inter.stream else 0.0, speed)
    headers = _response_headers(inter)
    if not streamed and not drop:
        return web.Response(
            status=inter.status, reason=inter.reason, body=inter.body_bytes(), headers=headers
        )
    resp = web.StreamResponse(status=inter.status, reason=inter.reason, headers=headers)
    if not streamed:
        # A truncated plain body: announce the full length so the client sees a short read.
        resp.content_length = len(inter.body_bytes())
    await resp.prepare(request)
    previous = 0.0
    for t, piece in chunks:
        await _pause(t - previous, speed)
        previous = max(previous, t)
        await resp.write(piece)
    if drop:
        _drop(request)
        return resp
    await resp.write_eof()
    return resp


async def _handle(request: web.Request) -> web.StreamResponse:
    app = request.app
    body = await request.read()
    fp = fingerprint(request.method, request.path_qs, body)
    result = app[INDEX_KEY].find(fp)
    matched = result.cassette.name if isinstance(result, Hit) else None
    app[REQUESTS_KEY].append(
        ReceivedRequest(
            method=request.method,
            path_qs=request.path_qs,
            headers={k: v for k, v in request.headers.items()},
            body=body,
            matched=matched,
        )
    )
    if isinstance(result, Hit):
        log.info("%s %s -> %s[%d]", request.method, request.path, matched, result.interaction_index)
        return await _serve_hit(request, result)
    log.warning("%s %s -> miss", request.method, request.path)
    payload: dict[str, Any] = {
        "type": "replay_miss",
        "message": result.message(),
        "request": result.request,
        **result.to_json(),
    }
    return web.json_response(
        {"error": payload}, status=404, dumps=lambda o: json.dumps(o, ensure_ascii=False)
    )


def make_replay_app(
    cassettes: Sequence[Cassette], *, speed: float = 0.0, fault: Fault | None = None
) -> web.Application:
    """An aiohttp app that answers every method and path from ``cassettes``.

    ``speed`` scales recorded timings (seconds): 1.0 real time, 2.0 twice as fast, 0 no delay;
    delays apply before the headers (``t_headers_s``) and between chunks. ``fault`` applies to
    streamed bodies (``DropAfter`` also to plain ones). A miss answers HTTP 404 with a JSON
    ``replay_miss`` error. Raises ``ValueError`` for a negative speed.
    """
    if speed < 0:
        raise ValueError(f"speed must be >= 0, got {speed}")
    app = web.Application()
    app[REQUESTS_KEY] = []
    app[INDEX_KEY] = Index(cassettes)
    app[SPEED_KEY] = float(speed)
    app[FAULT_KEY] = fault
    app.router.add_route("*", "/{tail:.*}", _handle)
    return app
