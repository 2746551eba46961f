"""Cassette format v1: load, validate and write recorded chat.qwen.ai interactions.

A cassette is one JSON file in vcrpy's JSON layout (so ``vcr.use_cassette(path,
serializer="json", record_mode="none")`` replays it) plus a top-level ``metadata`` block and an
optional ``response.x_stream`` chunk list for streamed bodies. The layout is described in
``docs/cassette-format.md``; the machine-checkable part is ``schemas/cassette.schema.json``.

Units: every time is in seconds (float), every length in bytes of the UTF-8 encoded body.
Streamed bodies are SSE (docs/protocol.md section 5.1), which is UTF-8 by definition, so a body is
stored as text; individual chunks may end inside a multi-byte character. A binary body (an
image from the CDN) is stored as base64 text with ``response.x_body_encoding: "base64"``; then
lengths count the decoded bytes.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, cast

from jsonschema import Draft202012Validator

__all__ = [
    "FORMAT_VERSION",
    "Cassette",
    "CassetteError",
    "Interaction",
    "Provenance",
    "StreamInfo",
    "load_all",
    "schema_path",
    "validate",
]

FORMAT_VERSION = 1
"""The version of this cassette format (``metadata.cassette_format``)."""

VCR_VERSION = 1
"""vcrpy's own cassette version (top-level ``version``)."""

DEFAULT_STREAM_HEADERS: tuple[tuple[str, str], ...] = (
    ("Content-Type", "text/event-stream; charset=utf-8"),
)


class CassetteError(ValueError):
    """A cassette is malformed; the message lists every problem found, each with its JSON path.

    ``problems`` holds the individual problem strings (``"$.interactions[0].x: message"``).
    """

    def __init__(self, problems: Sequence[str] | str, *, source: str | None = None) -> None:
        items = [problems] if isinstance(problems, str) else list(problems)
        self.problems: list[str] = items
        self.source = source
        head = f"{source}: " if source else ""
        if len(items) == 1:
            message = f"{head}{items[0]}"
        else:
            message = f"{head}{len(items)} problems:\n" + "\n".join(f"  - {p}" for p in items)
        super().__init__(message)


@dataclass(frozen=True)
class StreamInfo:
    """How a streamed response body arrived (``response.x_stream``).

    ``t_headers_s``: seconds from request start to the response headers.
    ``chunks``: ``(seconds since headers, byte length)`` per received chunk; the lengths sum to
    the UTF-8 byte length of the body. ``end`` is ``"eof"`` for a complete stream or ``"error"``
    when the connection broke after the last chunk (then ``error`` holds the error text).
    ``wire_encoding`` names a content coding (e.g. ``"gzip"``) the recorder decoded.
    """

    t_headers_s: float
    chunks: tuple[tuple[float, int], ...]
    end: Literal["eof", "error"] = "eof"
    error: str | None = None
    wire_encoding: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The ``x_stream`` JSON object."""
        return {
            "t_headers_s": self.t_headers_s,
            "chunks": [[t, n] for t, n in self.chunks],
            "end": self.end,
            "error": self.error,
            "wire_encoding": self.wire_encoding,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StreamInfo:
        """Build from an ``x_stream`` JSON object (assumed schema-valid)."""
        return cls(
            t_headers_s=float(d.get("t_headers_s", 0.0)),
            chunks=tuple((float(t), int(n)) for t, n in d["chunks"]),
            end=cast(Literal["eof", "error"], d.get("end", "eof")),
            error=d.get("error"),
            wire_encoding=d.get("wire_encoding"),
        )


def _copy_headers(headers: dict[str, list[str]]) -> dict[str, list[str]]:
    return {str(k): [str(v) for v in vs] for k, vs in headers.items()}


@dataclass
class Interaction:
    """One recorded request/response pair.

    Headers map a name to the list of its values (vcrpy's layout). ``request_body`` is the exact
    text the client sent (UTF-8) or ``None``; ``response_body`` is the whole decoded body text.
    ``stream`` is set for streamed (chunk-recorded) bodies. ``body_encoding`` is ``"base64"``
    when ``response_body`` is the base64 text of a binary body (``response.x_body_encoding``).
    """

    method: str
    uri: str
    request_headers: dict[str, list[str]]
    request_body: str | None
    status: int
    reason: str
    response_headers: dict[str, list[str]]
    response_body: str
    stream: StreamInfo | None = None
    body_encoding: Literal["base64"] | None = None

    def body_bytes(self) -> bytes:
        """The response body bytes: UTF-8 text, or the decoded base64 of a binary body."""
        if self.body_encoding == "base64":
            return base64.b64decode(self.response_body)
        return self.response_body.encode("utf-8")

    def request_body_bytes(self) -> bytes | None:
        """The request body as UTF-8 bytes, or ``None`` when there was none."""
        return None if self.request_body is None else self.request_body.encode("utf-8")

    def iter_chunks(self) -> Iterator[tuple[float, bytes]]:
        """Yield ``(seconds since headers, chunk bytes)`` in recorded order.

        A non-streamed interaction yields one ``(0.0, whole body)``. Raises ``CassetteError``
        when the chunk lengths do not add up to the body length.
        """
        body = self.body_bytes()
        if self.stream is None:
            yield 0.0, body
            return
        total = sum(n for _, n in self.stream.chunks)
        if total != len(body):
            raise CassetteError(
                f"chunk lengths sum to {total} bytes but the body has {len(body)} bytes"
            )
        offset = 0
        for t, n in self.stream.chunks:
            yield t, body[offset : offset + n]
            offset += n

    @property
    def content_type(self) -> str:
        """The response Content-Type (first value), lower-cased; ``""`` when absent."""
        for name, values in self.response_headers.items():
            if name.lower() == "content-type" and values:
                return values[0].lower()
        return ""

    @classmethod
    def streamed(
        cls,
        *,
        method: str,
        uri: str,
        request_headers: dict[str, list[str]],
        request_body: str | None,
        pieces: Sequence[tuple[float, bytes]],
        status: int = 200,
        reason: str = "OK",
        response_headers: dict[str, list[str]] | None = None,
        end: Literal["eof", "error"] = "eof",
        error: str | None = None,
        t_headers_s: float = 0.0,
    ) -> Interaction:
        """Build a streamed interaction from ``(seconds since headers, bytes)`` pieces.

        Pieces may split multi-byte UTF-8 characters, but their concatenation must be valid
        UTF-8. ``response_headers`` defaults to ``Content-Type: text/event-stream;
        charset=utf-8``. Raises ``CassetteError`` for invalid UTF-8, negative or decreasing
        offsets, or ``end == "error"`` without an error text.
        """
        raw = b"".join(p for _, p in pieces)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CassetteError(f"streamed body is not valid UTF-8: {exc}") from exc
        chunks = tuple((float(t), len(p)) for t, p in pieces)
        problems = _stream_problems(
            "$.x_stream", chunks, len(raw), end, error, t_headers_s=float(t_headers_s)
        )
        if problems:
            raise CassetteError(problems)
        headers = (
            _copy_headers(response_headers)
            if response_headers is not None
            else {k: [v] for k, v in DEFAULT_STREAM_HEADERS}
        )
        return cls(
            method=method,
            uri=uri,
            request_headers=_copy_headers(request_headers),
            request_body=request_body,
            status=status,
            reason=reason,
            response_headers=headers,
            response_body=text,
            stream=StreamInfo(t_headers_s=float(t_headers_s), chunks=chunks, end=end, error=error),
        )

    def to_dict(self) -> dict[str, Any]:
        """The interaction as its vcrpy JSON object (``{"request": …, "response": …}``)."""
        response: dict[str, Any] = {
            "status": {"code": self.status, "message": self.reason},
            "headers": _copy_headers(self.response_headers),
            "body": {"string": self.response_body},
        }
        if self.body_encoding is not None:
            response["x_body_encoding"] = self.body_encoding
        if self.stream is not None:
            response["x_stream"] = self.stream.to_dict()
        return {
            "request": {
                "method": self.method,
                "uri": self.uri,
                "body": self.request_body,
                "headers": _copy_headers(self.request_headers),
            },
            "response": response,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Interaction:
        """Build from a vcrpy interaction object; raises ``CassetteError`` on a missing key."""
        try:
            req = d["request"]
            resp = d["response"]
            x_stream = resp.get("x_stream")
            return cls(
                method=str(req["method"]),
                uri=str(req["uri"]),
                request_headers=_copy_headers(req.get("headers") or {}),
                request_body=req.get("body"),
                status=int(resp["status"]["code"]),
                reason=str(resp["status"].get("message", "")),
                response_headers=_copy_headers(resp.get("headers") or {}),
                response_body=str(resp["body"]["string"]),
                stream=None if x_stream is None else StreamInfo.from_dict(x_stream),
                body_encoding="base64" if resp.get("x_body_encoding") == "base64" else None,
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CassetteError(f"malformed interaction: {exc!r}") from exc


@dataclass
class Provenance:
    """Where a cassette came from (``metadata.provenance``).

    ``kind`` is ``"captured"`` (real traffic) or ``"synthetic"`` (built from docs/protocol.md; then
    ``protocol_sections`` must name the sections followed). ``date`` is an ISO date.
    """

    kind: Literal["captured", "synthetic"]
    date: str
    tool: str
    tool_version: str
    protocol_sections: list[str] = field(default_factory=list)
    source: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The ``provenance`` JSON object."""
        return {
            "kind": self.kind,
            "date": self.date,
            "tool": self.tool,
            "tool_version": self.tool_version,
            "protocol_sections": list(self.protocol_sections),
            "source": self.source,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Provenance:
        """Build from a (schema-valid) ``provenance`` object."""
        return cls(
            kind=cast(Literal["captured", "synthetic"], d["kind"]),
            date=str(d["date"]),
            tool=str(d["tool"]),
            tool_version=str(d["tool_version"]),
            protocol_sections=[str(s) for s in d.get("protocol_sections") or []],
            source=d.get("source"),
        )


@dataclass
class Cassette:
    """A named list of interactions with provenance; ``path`` is set when loaded or saved."""

    name: str
    description: str
    provenance: Provenance
    interactions: list[Interaction]
    path: Path | None = None

    @classmethod
    def load(cls, path: Path | str) -> Cassette:
        """Read and validate a cassette file.

        Raises ``CassetteError`` (its message starts with the file path) when the file cannot
        be read, is not JSON, or breaks the schema or an invariant.
        """
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CassetteError(f"cannot read: {exc}", source=str(p)) from exc
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CassetteError(f"not JSON: {exc}", source=str(p)) from exc
        try:
            return cls.from_dict(data, path=p)
        except CassetteError as exc:
            raise CassetteError(exc.problems, source=str(p)) from exc

    @classmethod
    def from_dict(cls, data: dict[str, Any], path: Path | None = None) -> Cassette:
        """Validate ``data`` (see ``validate``) and build the cassette; raises ``CassetteError``."""
        validate(data)
        meta = data["metadata"]
        return cls(
            name=str(meta["name"]),
            description=str(meta["description"]),
            provenance=Provenance.from_dict(meta["provenance"]),
            interactions=[Interaction.from_dict(i) for i in data["interactions"]],
            path=path,
        )

    def to_dict(self) -> dict[str, Any]:
        """The whole cassette as its JSON object (vcrpy layout plus ``metadata``)."""
        return {
            "version": VCR_VERSION,
            "metadata": {
                "cassette_format": FORMAT_VERSION,
                "name": self.name,
                "description": self.description,
                "provenance": self.provenance.to_dict(),
            },
            "interactions": [i.to_dict() for i in self.interactions],
        }

    def dumps(self) -> str:
        """Deterministic JSON text (2-space indent, non-ASCII kept, key order as built) + newline.

        Raises ``CassetteError`` when the cassette is invalid, so nothing invalid is written.
        """
        data = self.to_dict()
        validate(data)
        return json.dumps(data, indent=2, ensure_ascii=False, sort_keys=False) + "\n"

    def save(self, path: Path | str) -> Path:
        """Write the cassette atomically and return its path; sets ``self.path``.

        The text goes to a temporary file in the target directory, is fsynced, then replaces
        the target with ``os.replace``, so readers never see a half-written file. Raises
        ``CassetteError`` for an invalid cassette (nothing written) and ``OSError`` on I/O errors.
        """
        p = Path(path)
        write_atomic(p, self.dumps())
        self.path = p
        return p


def write_atomic(path: Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically and return ``path``.

    A temporary file in the same directory is written, fsynced and moved over the target with
    ``os.replace``: readers see the old file or the new one, never a partial one; a failure
    leaves the old file untouched and removes the temporary file. Raises ``OSError``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


def remove_stale_temporaries(directory: Path) -> list[Path]:
    """Delete the temporary files :func:`write_atomic` leaves when the process is killed
    mid-write (``.<name>.<random>.tmp`` in ``directory``); returns the paths removed.

    Call it when a writer starts, before it writes anything: a temporary file of a running
    writer lives for milliseconds, so only a killed run leaves one. Raises nothing for a
    missing directory or a file that vanished meanwhile.
    """
    removed: list[Path] = []
    if not directory.is_dir():
        return removed
    for tmp in directory.glob(".*.tmp"):
        try:
            tmp.unlink()
        except FileNotFoundError:
            continue
        removed.append(tmp)
    return removed


def schema_path() -> Path:
    """Path of the repository's ``schemas/cassette.schema.json``."""
    return Path(__file__).resolve().parents[1] / "schemas" / "cassette.schema.json"


@lru_cache(maxsize=1)
def _validator() -> Draft202012Validator:
    schema = json.loads(schema_path().read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def _stream_problems(
    where: str,
    chunks: Sequence[tuple[float, int]] | Sequence[Sequence[Any]],
    body_len: int,
    end: Any,
    error: Any,
    *,
    t_headers_s: Any = 0.0,
) -> list[str]:
    problems: list[str] = []
    if isinstance(t_headers_s, int | float) and t_headers_s < 0:
        problems.append(f"{where}.t_headers_s: must be >= 0, got {t_headers_s}")
    previous = 0.0
    total = 0
    for k, chunk in enumerate(chunks):
        t, n = chunk[0], chunk[1]
        if t < 0:
            problems.append(f"{where}.chunks[{k}][0]: offset {t} is negative")
        elif t < previous:
            problems.append(
                f"{where}.chunks[{k}][0]: offset {t} is smaller than the previous {previous}"
            )
        previous = max(previous, t)
        if n < 0:
            problems.append(f"{where}.chunks[{k}][1]: length {n} is negative")
        total += n
    if total != body_len:
        problems.append(
            f"{where}.chunks: lengths sum to {total} bytes, "
            f"but the body is {body_len} bytes of UTF-8"
        )
    if end == "error" and not error:
        problems.append(f"{where}.error: end is 'error' but no error text is given")
    return problems


def _invariant_problems(data: dict[str, Any]) -> list[str]:
    """Check the invariants of docs/cassette-format.md on schema-valid parts of ``data``."""
    problems: list[str] = []
    meta = data.get("metadata")
    if isinstance(meta, dict):
        prov = meta.get("provenance")
        if isinstance(prov, dict):
            if prov.get("kind") == "synthetic" and not prov.get("protocol_sections"):
                problems.append(
                    "$.metadata.provenance.protocol_sections: a synthetic cassette must name "
                    "the docs/protocol.md sections it follows"
                )
            d = prov.get("date")
            if isinstance(d, str):
                try:
                    date.fromisoformat(d)
                except ValueError:
                    problems.append(f"$.metadata.provenance.date: {d!r} is not an ISO date")
    interactions = data.get("interactions")
    if not isinstance(interactions, list):
        return problems
    for i, inter in enumerate(interactions):
        where = f"$.interactions[{i}]"
        if not isinstance(inter, dict):
            continue
        req = inter.get("request")
        if isinstance(req, dict) and isinstance(req.get("body"), str):
            try:
                req["body"].encode("utf-8")
            except UnicodeEncodeError as exc:
                problems.append(f"{where}.request.body: not valid UTF-8 text ({exc.reason})")
        resp = inter.get("response")
        if not isinstance(resp, dict):
            continue
        body = resp.get("body")
        text = body.get("string") if isinstance(body, dict) else None
        if not isinstance(text, str):
            continue
        if resp.get("x_body_encoding") == "base64":
            try:
                body_len = len(base64.b64decode(text, validate=True))
            except (binascii.Error, ValueError):
                problems.append(
                    f"{where}.response.body.string: x_body_encoding is base64 but the "
                    "text is not valid base64"
                )
                continue
        else:
            try:
                body_len = len(text.encode("utf-8"))
            except UnicodeEncodeError as exc:
                problems.append(
                    f"{where}.response.body.string: not valid UTF-8 text ({exc.reason})"
                )
                continue
        xs = resp.get("x_stream")
        if not isinstance(xs, dict):
            continue
        chunks = xs.get("chunks")
        if not (
            isinstance(chunks, list)
            and all(
                isinstance(c, list)
                and len(c) == 2
                and isinstance(c[0], int | float)
                and not isinstance(c[0], bool)
                and isinstance(c[1], int)
                and not isinstance(c[1], bool)
                for c in chunks
            )
        ):
            continue  # the schema reports the shape problem
        problems.extend(
            _stream_problems(
                f"{where}.response.x_stream",
                chunks,
                body_len,
                xs.get("end", "eof"),
                xs.get("error"),
                t_headers_s=xs.get("t_headers_s", 0.0),
            )
        )
    return problems


def validate(data: dict[str, Any]) -> None:
    """Check ``data`` against the JSON Schema (Draft 2020-12) and the format's invariants.

    Invariants (docs/cassette-format.md): chunk lengths sum to the body's UTF-8 byte length;
    offsets are non-negative and non-decreasing; ``end == "error"`` needs an error text; a
    synthetic cassette lists ``protocol_sections``; ``metadata.cassette_format == 1``.
    Raises ``CassetteError`` listing every problem with its JSON path.
    """
    if not isinstance(data, dict):
        raise CassetteError(f"$: expected a JSON object, got {type(data).__name__}")
    problems: list[str] = []
    errors = sorted(_validator().iter_errors(data), key=lambda e: list(map(str, e.path)))
    for err in errors:
        problems.append(f"{err.json_path}: {err.message}")
    problems.extend(_invariant_problems(data))
    if problems:
        raise CassetteError(problems)


def load_all(paths: Iterable[Path | str]) -> list[Cassette]:
    """Load cassettes from files and directories (a directory gives its ``*.json``, sorted).

    Returns the cassettes in the order given. Raises ``CassetteError`` listing the problems of
    every bad file, each prefixed with its path, or naming a path that does not exist.
    """
    files: list[Path] = []
    problems: list[str] = []
    for entry in paths:
        p = Path(entry)
        if p.is_dir():
            files.extend(sorted(p.glob("*.json")))
        elif p.exists():
            files.append(p)
        else:
            problems.append(f"{p}: no such file or directory")
    cassettes: list[Cassette] = []
    for f in files:
        try:
            cassettes.append(Cassette.load(f))
        except CassetteError as exc:
            problems.extend(f"{f}: {msg}" for msg in exc.problems)
    if problems:
        raise CassetteError(problems)
    return cassettes
