"""A fake chat.qwen.ai that replays cassettes chunk by chunk, with optional faults.

``make_replay_app`` builds an aiohttp application with one catch-all route. Each request is
matched with ``recorder.matching`` (docs/cassette-format.md). Streamed interactions are sent with
one HTTP chunk per recorded chunk, so a client's ``iter_chunks()`` sees the recorded boundaries,
including chunks that end inside a UTF-8 character (docs/protocol.md section 5.1). Faults change the
boundaries or the timing of a body, never its content (``drop_after`` truncates it).

Two stateful behaviours stand in for parts of the site that are not request/answer pairs:

- **Task polling** (docs/protocol.md §6.3): successive ``GET /api/v1/tasks/status/<id>``
  requests for the same path are answered by that path's recorded interactions in load order
  (pending, running, success…); once they are used up the last one repeats. State is per app.
- **A default model list** (§8): when the cassettes hold chat turns but no ``GET /api/models``
  (an imported capture of one chat, say), that path and ``/api/v2/models`` answer a built-in
  list naming the models the cassettes' requests use, so the gateway can replay the capture
  alone; the server logs that it does so. Likewise ``POST /api/v2/chats/new`` answers a fresh
  chat id (§3) when no cassette holds that step (captures often hold only the turn).
- **Object store** (§7.2): a ``PUT`` that matches no recorded interaction is an OSS PutObject.
  It needs ``Authorization: OSS <id>:<signature>`` and ``x-oss-security-token`` (else 403) and a
  ``Content-MD5`` that fits the body when given (else 400); the bytes are kept in
  :data:`UPLOADS_KEY` and the answer is 200 with an ``ETag``. A later ``GET`` of that path
  serves the stored bytes.
- **Chats** (§2, §3, §4.1 (a), §13.1): :class:`recorder.chats.ChatMemory` (:data:`CHATS_KEY`)
  remembers the chats created through the server (each with its own id), the responses each holds
  and which were deleted: a turn in a deleted chat or after an unknown ``parent_id`` gets the
  site's error envelope; ``GET /api/v2/chats/``, ``DELETE /api/v2/chats/<id>`` and
  ``POST /api/v2/chat/completions/stop`` are answered from it when no cassette records them.

A client that hangs up is noticed between chunks and during pauses (at most
:data:`HANGUP_POLL_S` late): the server stops sending, as the site does.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import json
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from time import time
from typing import Any, ClassVar

from aiohttp import web
from multidict import CIMultiDict

from recorder.cassette import Cassette, Interaction
from recorder.chats import ChatMemory, response_id_in
from recorder.matching import Hit, Index, fingerprint, normalise_path

__all__ = [
    "CHATS_KEY",
    "FAULT_KEY",
    "INDEX_KEY",
    "MODELS_KEY",
    "REQUESTS_KEY",
    "SPEED_KEY",
    "TASK_STATUS_PREFIX",
    "UPLOADS_KEY",
    "Bytewise",
    "Coalesce",
    "DropAfter",
    "Fault",
    "ReceivedRequest",
    "SplitUtf8",
    "StoredObject",
    "apply_fault",
    "default_models",
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


@dataclass(frozen=True)
class StoredObject:
    """An object PUT into the stand-in object store: ``path``, ``body``, ``content_type`` and
    the request ``headers`` (they hold the STS token; tests only, never logged)."""

    path: str
    body: bytes
    content_type: str
    headers: dict[str, str]


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
UPLOADS_KEY = web.AppKey("replay_uploads", list[StoredObject])
"""Every object PUT into the stand-in object store, in order."""
SEQUENCES_KEY = web.AppKey("replay_sequences", dict[str, list[Hit]])
"""Per task-status path: its recorded interactions, in load order."""
CURSORS_KEY = web.AppKey("replay_cursors", dict[str, int])
"""Per task-status path: how many GETs were answered so far."""
CHATS_KEY = web.AppKey("replay_chats", ChatMemory)
"""The chats created, answered, deleted and stopped through this server."""

CHATS_NEW_PATH = "/api/v2/chats/new"
COMPLETIONS_PATH = "/api/v2/chat/completions"
STOP_PATH = "/api/v2/chat/completions/stop"
CHATS_PREFIX = "/api/v2/chats/"

MODELS_KEY: web.AppKey[bytes | None] = web.AppKey("replay_default_models")
"""The built-in ``/api/models`` answer, or ``None`` when the cassettes hold a model list."""

NEW_CHAT_KEY = web.AppKey("replay_default_new_chat", bool)
"""Whether ``POST /api/v2/chats/new`` is answered by a stand-in (no cassette holds it)."""

MODEL_PATHS = ("/api/models", "/api/v2/models")
"""Paths of the model list (docs/protocol.md §2, §8)."""

TASK_STATUS_PREFIX = "/api/v1/tasks/status/"
"""Paths whose successive GETs advance through their recorded answers (docs/protocol.md §6.3)."""


def _response_headers(inter: Interaction) -> CIMultiDict[str]:
    headers: CIMultiDict[str] = CIMultiDict()
    for name, values in inter.response_headers.items():
        if name.lower() in _HOP_HEADERS:
            continue
        for value in values:
            headers.add(name, value)
    return headers


HANGUP_POLL_S = 0.1
"""Longest sleep between two checks that the client is still there."""


def _gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def _pause(seconds: float, speed: float, request: web.Request | None = None) -> bool:
    """Wait ``seconds / speed``; ``False`` when the client hung up meanwhile."""
    if speed <= 0 or seconds <= 0:
        return request is None or not _gone(request)
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds / speed
    while (left := end - loop.time()) > 0:
        await asyncio.sleep(min(left, HANGUP_POLL_S) if request is not None else left)
        if request is not None and _gone(request):
            return False
    return True


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
    if not await _pause(inter.stream.t_headers_s if inter.stream else 0.0, speed, request):
        return web.Response(status=499)  # nobody is listening any more
    headers = _response_headers(inter)
    if not streamed and not drop:
        return web.Response(
            status=inter.status, reason=inter.reason, body=inter.body_bytes(), headers=headers
        )
    resp = web.StreamResponse(status=inter.status, reason=inter.reason, headers=headers)
    if not streamed:
        # A truncated plain body: announce the full length so the client sees a short read.
        resp.content_length = len(inter.body_bytes())
    try:
        await resp.prepare(request)
        previous = 0.0
        for t, piece in chunks:
            if not await _pause(t - previous, speed, request):
                log.debug("client hung up during %s %s", request.method, request.path)
                return resp
            previous = max(previous, t)
            await resp.write(piece)
        if drop:
            _drop(request)
            return resp
        await resp.write_eof()
    except ConnectionResetError:  # the client hung up: normal for a client, not a server fault
        log.debug("client hung up during %s %s", request.method, request.path)
    return resp


def _sequences(cassettes: Sequence[Cassette]) -> dict[str, list[Hit]]:
    found: dict[str, list[Hit]] = {}
    for cassette in cassettes:
        for i, inter in enumerate(cassette.interactions):
            path = normalise_path(inter.uri)
            if inter.method.upper() == "GET" and TASK_STATUS_PREFIX in path + "/":
                found.setdefault(path, []).append(Hit(cassette, i, inter))
    return found


def _next_in_sequence(app: web.Application, method: str, path: str) -> Hit | None:
    if method != "GET":
        return None
    key = normalise_path(path)
    hits = app[SEQUENCES_KEY].get(key)
    if not hits:
        return None
    n = app[CURSORS_KEY].get(key, 0)
    app[CURSORS_KEY][key] = n + 1
    return hits[min(n, len(hits) - 1)]


def _holds_turns(cassettes: Sequence[Cassette]) -> bool:
    """Whether the cassettes hold chat.qwen.ai turns (``POST …/api/v2/chat/completions``)."""
    return any(
        normalise_path(i.uri).endswith(COMPLETIONS_PATH) and i.method.upper() == "POST"
        for c in cassettes
        for i in c.interactions
    )


def default_models(cassettes: Sequence[Cassette]) -> bytes | None:
    """The built-in model list for cassettes that hold none (else ``None``).

    One entry per model the cassettes' requests name (``model`` of completions, ``models`` of
    chats/new), with the chat types those requests use and ``abilities.thinking`` when one
    turned thinking on; ``qwen3-max`` (t2t) when no request names a model. Shape of §8.
    """
    chat_types: dict[str, set[str]] = {}
    thinking: set[str] = set()
    if not _holds_turns(cassettes):
        return None  # not chat.qwen.ai traffic (e.g. an OpenAI-side recording): no stand-in
    for cassette in cassettes:
        for inter in cassette.interactions:
            path = normalise_path(inter.uri)
            if inter.method.upper() == "GET" and path in MODEL_PATHS:
                return None
            fp = fingerprint(inter.method, inter.uri, inter.request_body)
            model = fp.get("model")
            if isinstance(model, str) and model:
                types = chat_types.setdefault(model, set())
                if isinstance(fp.get("chat_type"), str):
                    types.add(fp["chat_type"])
                if fp.get("thinking_enabled") is True:
                    thinking.add(model)
    if not chat_types:
        chat_types = {"qwen3-max": {"t2t"}}
    data = []
    for model, types in sorted(chat_types.items()):
        types = types | {"t2t"}
        data.append(
            {
                "id": model,
                "name": model,
                "object": "model",
                "owned_by": "qwen",
                "info": {
                    "id": model,
                    "name": model,
                    "is_active": True,
                    "meta": {
                        "abilities": {"thinking": 1 if model in thinking else 0},
                        "capabilities": {"thinking": model in thinking},
                        "chat_type": sorted(types),
                    },
                },
            }
        )
    return json.dumps({"data": data}, ensure_ascii=False).encode("utf-8")


def _store_object(request: web.Request, body: bytes) -> web.Response:
    """The stand-in OSS PutObject (see the module docstring)."""
    auth = request.headers.get("Authorization", "")
    if (
        not auth.startswith("OSS ")
        or ":" not in auth
        or not request.headers.get("x-oss-security-token")
    ):
        return web.Response(status=403, text="AccessDenied: not signed with an STS grant")
    md5 = base64.b64encode(hashlib.md5(body).digest()).decode("ascii")
    given = request.headers.get("Content-MD5")
    if given is not None and given != md5:
        return web.Response(status=400, text="InvalidDigest: Content-MD5 does not match")
    request.app[UPLOADS_KEY].append(
        StoredObject(
            path=request.path,
            body=body,
            content_type=request.headers.get("Content-Type", ""),
            headers=dict(request.headers),
        )
    )
    etag = '"' + hashlib.md5(body).hexdigest().upper() + '"'
    return web.Response(status=200, headers={"ETag": etag})


def _stored(app: web.Application, path: str) -> StoredObject | None:
    objects: list[StoredObject] = app[UPLOADS_KEY]
    return next((o for o in reversed(objects) if o.path == path), None)


def _envelope(success: bool, data: dict[str, Any]) -> web.Response:
    """The site's JSON envelope (§2), HTTP 200 also for failures (§4.3)."""
    body = {"success": success, "request_id": str(uuid.uuid4()), "data": data}
    return web.json_response(body, dumps=lambda o: json.dumps(o, ensure_ascii=False))


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body.decode("utf-8")) if body else None
    except (UnicodeDecodeError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _turn_refused(request: web.Request, body: bytes) -> web.Response | None:
    """A completion in a deleted chat or after an unknown ``parent_id`` (see ChatMemory)."""
    data = _json_object(body)
    chat_id = request.query.get("chat_id") or data.get("chat_id")
    refused = request.app[CHATS_KEY].check_turn(chat_id, data.get("parent_id"))
    if refused is None:
        return None
    code, details = refused
    log.info("%s %s -> %s", request.method, request.path, code)
    return _envelope(False, {"code": code, "details": details})


def _new_chat(request: web.Request, body: bytes, hit: Hit) -> Hit:
    """A recorded ``chats/new`` success, remembered; when its chat id is taken already, the id is
    replaced by a fresh one (the rest of the recorded bytes and headers unchanged)."""
    inter = hit.interaction
    data = _json_object(inter.body_bytes()).get("data")
    old = data.get("id") if isinstance(data, dict) else None
    if inter.status != 200 or not isinstance(old, str) or not old or inter.body_encoding:
        return hit
    sent = _json_object(body)
    record = request.app[CHATS_KEY].create(
        title=str(sent.get("title") or ""),
        chat_type=str(sent.get("chat_type") or ""),
        now=time(),
        recorded_id=old,
    )
    if record.id == old:
        return hit
    text = inter.response_body.replace(json.dumps(old), json.dumps(record.id), 1)
    return Hit(hit.cassette, hit.interaction_index, dataclasses.replace(inter, response_body=text))


def _chat_state(request: web.Request, body: bytes) -> web.Response | None:
    """Unrecorded stop, list and delete calls, answered from the chat memory."""
    chats = request.app[CHATS_KEY]
    path = normalise_path(request.path)
    if request.method == "POST" and path == STOP_PATH:
        data = _json_object(body)
        chat_id = request.query.get("chat_id") or str(data.get("chat_id") or "")
        rid = data.get("response_id")
        chats.stops.append((chat_id, rid if isinstance(rid, str) else None))
        log.info("POST %s -> stopped", request.path)
        return _envelope(True, {"status": True})
    if request.method == "GET" and path == CHATS_PREFIX.rstrip("/"):
        try:
            page = int(request.query.get("page", "1"))
        except ValueError:
            page = 1
        listing = {"success": True, "request_id": str(uuid.uuid4()), "data": chats.page(page)}
        return web.json_response(listing)
    if request.method == "DELETE" and path.startswith(CHATS_PREFIX):
        chat_id = path[len(CHATS_PREFIX) :]
        if chats.delete(chat_id):
            log.info("DELETE %s -> deleted", request.path)
            return _envelope(True, {"status": True})
        missing = {"code": "Not_Found", "details": f"The chat {chat_id} is not exist"}
        return _envelope(False, missing)
    return None


async def _handle(request: web.Request) -> web.StreamResponse:
    app = request.app
    body = await request.read()
    fp = fingerprint(request.method, request.path_qs, body)
    in_sequence = _next_in_sequence(app, request.method, request.path)
    result = in_sequence if in_sequence is not None else app[INDEX_KEY].find(fp)
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
    path = normalise_path(request.path)
    if request.method == "POST" and path.endswith(COMPLETIONS_PATH):
        refused = _turn_refused(request, body)
        if refused is not None:
            return refused
    if isinstance(result, Hit):
        log.info("%s %s -> %s[%d]", request.method, request.path, matched, result.interaction_index)
        if request.method == "POST" and path.endswith(CHATS_NEW_PATH):
            result = _new_chat(request, body, result)
        if request.method == "POST" and path.endswith(COMPLETIONS_PATH):
            chat_id = request.query.get("chat_id") or _json_object(body).get("chat_id")
            rid = response_id_in(result.interaction.response_body)
            app[CHATS_KEY].answered(chat_id, rid, time())
        return await _serve_hit(request, result)
    state = _chat_state(request, body)
    if state is not None:
        return state
    if request.method == "PUT":
        log.info("PUT %s -> object store", request.path)
        return _store_object(request, body)
    stored = _stored(app, request.path) if request.method == "GET" else None
    if stored is not None:
        return web.Response(body=stored.body, content_type=stored.content_type or None)
    models = app[MODELS_KEY]
    if (
        models is not None
        and request.method == "GET"
        and normalise_path(request.path) in MODEL_PATHS
    ):
        log.info("%s %s -> built-in default model list", request.method, request.path)
        return web.Response(body=models, content_type="application/json")
    if (
        app[NEW_CHAT_KEY]
        and request.method == "POST"
        and normalise_path(request.path) == CHATS_NEW_PATH
    ):
        log.info("POST /api/v2/chats/new -> built-in stand-in (a new chat id)")
        sent = _json_object(body)
        record = app[CHATS_KEY].create(
            title=str(sent.get("title") or ""),
            chat_type=str(sent.get("chat_type") or ""),
            now=time(),
        )
        return _envelope(True, {"id": record.id})
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
    ``replay_miss`` error, except an unmatched ``PUT`` (stored as an object-store upload), a
    ``GET`` of a stored object, and the model list when the cassettes hold none
    (:func:`default_models`). Raises ``ValueError`` for a negative speed.
    """
    if speed < 0:
        raise ValueError(f"speed must be >= 0, got {speed}")
    app = web.Application()
    app[REQUESTS_KEY] = []
    app[INDEX_KEY] = Index(cassettes)
    app[SPEED_KEY] = float(speed)
    app[FAULT_KEY] = fault
    app[UPLOADS_KEY] = []
    app[SEQUENCES_KEY] = _sequences(cassettes)
    app[CURSORS_KEY] = {}
    app[CHATS_KEY] = ChatMemory()
    app[MODELS_KEY] = default_models(cassettes)
    app[NEW_CHAT_KEY] = _holds_turns(cassettes) and not any(
        normalise_path(i.uri) == CHATS_NEW_PATH for c in cassettes for i in c.interactions
    )
    if app[NEW_CHAT_KEY]:
        log.warning("the cassettes hold no chats/new: it answers a built-in stand-in (a new id)")
    if app[MODELS_KEY] is not None:
        names = [m["id"] for m in json.loads(app[MODELS_KEY] or b"{}")["data"]]
        log.warning(
            "the cassettes hold no model list: GET /api/models answers a built-in default (%s)",
            ", ".join(names),
        )
    app.router.add_route("*", "/{tail:.*}", _handle)
    return app
