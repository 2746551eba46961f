"""Infer JSON Schemas of chat.qwen.ai traffic from cassettes, and diff them to detect drift.

Inference (``infer``): every interaction is filed under an *endpoint key*, ``"<METHOD> <path>"``
with the query dropped and id-like path segments replaced by ``{id}``; ``chat/completions`` is
split by the request's ``messages[0].chat_type`` (``"POST /api/v2/chat/completions [t2t]"``), since
t2t, search and t2i turns answer differently (PROTOCOL.md sections 4.1, 5, 6). Per endpoint, genson
(TOOLING.md section 4.1) builds one schema for the JSON request body (``request``) and one per
*answer kind*: every SSE frame and every whole JSON body is classified by ``frame_kind``:

=========================  ====================================================================
``response.created`` …     a frame whose only key is ``response.<x>`` (PROTOCOL.md 5.2 (1), (2))
``delta:<phase>``          a ``choices`` frame; ``delta:<none>`` when ``phase`` is absent/null (5.3)
``error``                  a frame with a top-level ``error`` object (5.7)
``envelope:<code>``        ``{"success": false, "data": {"code": …}}`` (2, 5.7, 10)
``waf``                    the baxia ``{"ret": [...], "data": {"url": …}}`` body (10)
``json``                   any other JSON body (a successful answer)
``done`` / ``non-json``    SSE data ``[DONE]`` / other data that is not JSON
=========================  ====================================================================

Beside each schema, ``x-enum-values`` maps JSON paths (``$.choices[].delta.phase``) of enum-like
fields (``ENUM_FIELDS``: phase, status, chat_type, sub_chat_type, code, role, …) to the sorted
values seen. ``x-qwen-endpoint`` lists the endpoint's content types, HTTP statuses, answer kinds
(``sse``, ``sse-cut``, ``json``, ``envelope:<code>``, ``waf``, ``html``, ``text``, ``empty``) and
the SSE frame kinds. One file per endpoint plus ``index.json``; output is deterministic (sorted
keys, sorted lists, cassettes read in path order) so ``schemas/upstream/`` is reproducible.

Diff (``diff``): a small structural comparison over the genson subset (``type``, ``properties``,
``required``, ``items``, ``anyOf``; TOOLING.md section 4.2). Items are ``breaking`` (a required
field gone or no longer always present, a type changed, a content type never seen, a new status
>= 400, a new endpoint that only answers errors), ``notable`` (a field added, a new enum value, a
new frame or answer kind, a new endpoint, a new status < 400) or ``info`` (error answers seen,
known SSE frame kinds not seen in the new sample). A frame kind new to an endpoint is also compared
with the union of the known kinds of its family (``delta:*``, ``envelope:*``), so frames that lost
``phase`` (PROTOCOL.md section 11.7) show as ``$.choices[].delta.phase`` removed.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from genson import SchemaBuilder

from recorder.cassette import Cassette, Interaction, write_atomic
from recorder.matching import normalise_path

__all__ = [
    "ENUM_FIELDS",
    "ERROR_ANSWERS",
    "SCHEMA_URI",
    "DriftItem",
    "DriftReport",
    "answer_kind",
    "diff",
    "endpoint_key",
    "frame_kind",
    "infer",
    "load_schemas",
    "render",
    "sse_data",
    "write_schemas",
]

SCHEMA_URI = "https://json-schema.org/draft/2020-12/schema"

ENUM_FIELDS = frozenset(
    {
        "phase",
        "status",
        "chat_type",
        "sub_chat_type",
        "subChatType",
        "chat_mode",
        "code",
        "role",
        "action",
        "output_schema",
        "thinking_format",
        "thinking_mode",
        "user_action",
        "filetype",
        "task_status",
        "stream",
        "display_position",
        "object",
    }
)
"""Field names whose values are recorded (``x-enum-values``) and compared as enums."""

ERROR_ANSWERS = ("envelope:", "waf", "html", "sse-cut")
"""Answer kinds (or prefixes) that mean the site refused or failed (PROTOCOL.md 4.3, 10)."""

INDEX_FILE = "index.json"
ENDPOINT_MARK = "x-qwen-endpoint"

_ID_SEGMENT = re.compile(
    r"^(?:[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
    r"|[0-9a-fA-F]{16,}|\d{4,}|(?=[A-Za-z0-9_-]*\d)[A-Za-z0-9_-]{20,})$"
)
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_LINE = re.compile(r"\r\n|\r|\n")

Severity = Literal["breaking", "notable", "info"]
_SEVERITY_ORDER = {"breaking": 0, "notable": 1, "info": 2}

# ------------------------------------------------------------------------------------------------
# Classification


def endpoint_key(method: str, uri: str, request_body: str | None) -> str:
    """``"<METHOD> <path>"`` (query dropped, ids → ``{id}``), plus ``" [<chat_type>]"`` for
    ``…/chat/completions`` when the JSON body names ``messages[0].chat_type`` (PROTOCOL.md 4.1).
    """
    path = normalise_path(uri)
    segments = ["{id}" if _ID_SEGMENT.match(s) else s for s in path.split("/")]
    key = f"{method.upper()} {'/'.join(segments) or '/'}"
    if path.endswith("/chat/completions") and request_body:
        try:
            body = json.loads(request_body)
        except ValueError:
            body = None
        if isinstance(body, dict):
            messages = body.get("messages")
            first = messages[0] if isinstance(messages, list) and messages else None
            chat_type = first.get("chat_type") if isinstance(first, dict) else None
            chat_type = chat_type if isinstance(chat_type, str) else body.get("chat_type")
            if isinstance(chat_type, str) and chat_type:
                key += f" [{chat_type}]"
    return key


def frame_kind(obj: Any) -> str:
    """The kind of one SSE frame or whole JSON body (table in the module docstring)."""
    if not isinstance(obj, dict):
        return "json"
    if isinstance(obj.get("ret"), list):
        return "waf"
    if obj.get("success") is False:
        data = obj.get("data")
        code = data.get("code") if isinstance(data, dict) else None
        code = code if code is not None else obj.get("code")
        return f"envelope:{code if isinstance(code, str) and code else '<none>'}"
    if len(obj) == 1:
        (only,) = obj
        if only.startswith("response."):
            return only
    if "error" in obj and isinstance(obj["error"], dict | str):
        return "error"
    choices = obj.get("choices")
    if isinstance(choices, list):
        first = choices[0] if choices else None
        delta = first.get("delta") if isinstance(first, dict) else None
        phase = delta.get("phase") if isinstance(delta, dict) else None
        return f"delta:{phase if isinstance(phase, str) and phase else '<none>'}"
    return "json"


def sse_data(text: str) -> Iterator[str]:
    """The ``data`` of each SSE event in ``text`` (WHATWG rules: ``\\r\\n``/``\\r``/``\\n``
    lines, ``data:`` lines joined with ``\\n``, one leading space stripped, ``:`` comments and
    other fields ignored, a blank line dispatches). A trailing event without its blank line is
    yielded too (a cut stream); events without data are skipped."""
    data: list[str] = []
    for line in _LINE.split(text):
        if not line:
            if data:
                yield "\n".join(data)
            data = []
            continue
        if line.startswith(":"):
            continue
        name, sep, value = line.partition(":")
        if not sep:
            name, value = line, ""
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            data.append(value)
    if data:
        yield "\n".join(data)


def _is_sse(inter: Interaction) -> bool:
    return inter.content_type.startswith("text/event-stream")


def _media_type(inter: Interaction) -> str:
    return inter.content_type.split(";")[0].strip() or "(none)"


def answer_kind(inter: Interaction) -> str:
    """``sse`` / ``sse-cut`` for event streams, else the ``frame_kind`` of a JSON body, or
    ``html`` / ``text`` / ``empty`` for other bodies."""
    if _is_sse(inter):
        return "sse-cut" if inter.stream is not None and inter.stream.end == "error" else "sse"
    body = inter.response_body
    if not body.strip():
        return "empty"
    try:
        obj = json.loads(body)
    except ValueError:
        return "html" if "html" in _media_type(inter) else "text"
    return frame_kind(obj)


def _is_error_answer(kind: str) -> bool:
    return any(kind == e or (e.endswith(":") and kind.startswith(e)) for e in ERROR_ANSWERS)


# ------------------------------------------------------------------------------------------------
# Inference


def _render_path(path: Sequence[str]) -> str:
    out = "$"
    for part in path:
        if part == "[]":
            out += "[]"
        elif _IDENT.match(part):
            out += "." + part
        else:
            out += "[" + json.dumps(part, ensure_ascii=False) + "]"
    return out


def _collect_enums(obj: Any, path: tuple[str, ...], out: dict[str, set[str]]) -> None:
    if isinstance(obj, dict):
        for k, v in obj.items():
            child = (*path, k)
            if k in ENUM_FIELDS:
                if isinstance(v, list):
                    for item in v:
                        if not isinstance(item, dict | list):
                            out[_render_path((*child, "[]"))].add(_enc(item))
                elif not isinstance(v, dict):
                    out[_render_path(child)].add(_enc(v))
            _collect_enums(v, child, out)
    elif isinstance(obj, list):
        for item in obj:
            _collect_enums(item, (*path, "[]"), out)


def _enc(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


class _Samples:
    def __init__(self) -> None:
        self.builder = SchemaBuilder(schema_uri=None)
        self.enums: dict[str, set[str]] = defaultdict(set)

    def add(self, obj: Any) -> None:
        self.builder.add_object(obj)
        _collect_enums(obj, (), self.enums)

    def schema(self) -> dict[str, Any]:
        out = dict(self.builder.to_schema())
        out.pop("$schema", None)
        if self.enums:
            out["x-enum-values"] = {
                path: [json.loads(v) for v in sorted(values)]
                for path, values in sorted(self.enums.items())
            }
        return out


class _Endpoint:
    def __init__(self, key: str, method: str, path: str) -> None:
        self.key = key
        self.method = method
        self.path = path
        self.defs: dict[str, _Samples] = {}
        self.content_types: set[str] = set()
        self.statuses: set[int] = set()
        self.answers: set[str] = set()
        self.sse_frames: set[str] = set()

    def sample(self, kind: str, obj: Any) -> None:
        self.defs.setdefault(kind, _Samples()).add(obj)

    def doc(self) -> dict[str, Any]:
        variant = self.key.partition(" [")[2].rstrip("]") or None
        return {
            "$schema": SCHEMA_URI,
            "title": self.key,
            ENDPOINT_MARK: {
                "key": self.key,
                "method": self.method,
                "path": self.path,
                "variant": variant,
                "content_types": sorted(self.content_types),
                "statuses": sorted(self.statuses),
                "answers": sorted(self.answers),
                "sse_frames": sorted(self.sse_frames),
            },
            "$defs": {name: s.schema() for name, s in sorted(self.defs.items())},
        }


def _slug(key: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", key.lower().replace("{id}", "id")).strip("_") or "root"


def infer(cassettes: Iterable[Cassette]) -> dict[str, dict[str, Any]]:
    """Infer the endpoint schema documents of ``cassettes``: ``{file name: document}``.

    The documents are one per endpoint key (``<slug>.json``) plus ``index.json``
    (``{"endpoints": {key: file}, "cassettes": [names]}``). Each document is a Draft 2020-12
    schema whose ``$defs`` hold ``request`` and one schema per answer kind, and whose
    ``x-qwen-endpoint`` object describes the endpoint (module docstring). Never raises for
    odd bodies: non-JSON requests get no ``request`` schema, non-JSON answers only an answer kind.
    """
    endpoints: dict[str, _Endpoint] = {}
    names: list[str] = []
    for cassette in cassettes:
        names.append(cassette.name)
        for inter in cassette.interactions:
            key = endpoint_key(inter.method, inter.uri, inter.request_body)
            ep = endpoints.get(key)
            if ep is None:
                ep = _Endpoint(key, inter.method.upper(), key.split(" ")[1])
                endpoints[key] = ep
            _add_interaction(ep, inter)
    docs: dict[str, dict[str, Any]] = {}
    files: dict[str, str] = {}
    for key in sorted(endpoints):
        name = _slug(key) + ".json"
        while name in docs or name == INDEX_FILE:
            name = name[:-5] + "_.json"
        docs[name] = endpoints[key].doc()
        files[key] = name
    docs[INDEX_FILE] = {
        "description": (
            "JSON Schemas of chat.qwen.ai traffic inferred from cassettes by "
            "`qwen-record schema` (recorder/schema.py); one file per endpoint."
        ),
        "endpoints": files,
        "cassettes": sorted(names),
    }
    return docs


def _add_interaction(ep: _Endpoint, inter: Interaction) -> None:
    if inter.request_body:
        try:
            ep.sample("request", json.loads(inter.request_body))
        except ValueError:
            pass
    ep.content_types.add(_media_type(inter))
    ep.statuses.add(inter.status)
    kind = answer_kind(inter)
    ep.answers.add(kind)
    if kind in ("sse", "sse-cut"):
        for data in sse_data(inter.response_body):
            if data == "[DONE]":
                ep.sse_frames.add("done")
                continue
            try:
                obj = json.loads(data)
            except ValueError:
                if kind == "sse":  # a cut stream's last event may be partial JSON
                    ep.sse_frames.add("non-json")
                continue
            frame = frame_kind(obj)
            ep.sse_frames.add(frame)
            ep.sample(frame, obj)
    elif kind not in ("html", "text", "empty"):
        ep.sample(kind, json.loads(inter.response_body))


def render(doc: Mapping[str, Any]) -> str:
    """Deterministic JSON text of a document: sorted keys, 2-space indent, UTF-8, newline."""
    return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_schemas(docs: Mapping[str, Mapping[str, Any]], out_dir: Path) -> list[Path]:
    """Write ``docs`` into ``out_dir`` atomically, remove stale endpoint files; return paths.

    Stale files are ``*.json`` files in ``out_dir`` that are not in ``docs`` and carry the
    ``x-qwen-endpoint`` mark (other files are left alone). Raises ``OSError``.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for name, doc in sorted(docs.items()):
        path = write_atomic(out_dir / name, render(doc))
        written.append(path)
    for old in sorted(out_dir.glob("*.json")):
        if old.name in docs:
            continue
        try:
            data = json.loads(old.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and ENDPOINT_MARK in data:
            old.unlink()
    return written


def load_schemas(directory: Path) -> dict[str, dict[str, Any]]:
    """Read a schema directory written by ``write_schemas``: ``{endpoint key: document}``.

    Raises ``FileNotFoundError`` when the directory does not exist and ``ValueError`` naming the
    file when a document is not JSON or has no ``x-qwen-endpoint`` object.
    """
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: no such schema directory")
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(directory.glob("*.json")):
        if path.name == INDEX_FILE:
            continue
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ValueError(f"{path}: not JSON: {exc}") from exc
        meta = doc.get(ENDPOINT_MARK) if isinstance(doc, dict) else None
        if not isinstance(meta, dict) or "key" not in meta:
            raise ValueError(f"{path}: not an endpoint schema (no {ENDPOINT_MARK}.key)")
        out[str(meta["key"])] = doc
    return out


def by_key(docs: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """``infer``'s ``{file: document}`` re-keyed by endpoint key (``index.json`` dropped)."""
    return {str(d[ENDPOINT_MARK]["key"]): dict(d) for name, d in docs.items() if ENDPOINT_MARK in d}


# ------------------------------------------------------------------------------------------------
# Structural diff over the genson subset


@dataclass
class _Node:
    types: set[str] = field(default_factory=set)
    props: set[str] = field(default_factory=set)
    required: set[str] | None = None  # None: never seen as an object


_Index = dict[tuple[str, ...], _Node]


def _index(schema: Mapping[str, Any]) -> _Index:
    out: _Index = {}
    _walk(schema, (), out)
    return out


def _walk(schema: Mapping[str, Any], path: tuple[str, ...], out: _Index) -> None:
    node = out.setdefault(path, _Node())
    for sub in schema.get("anyOf") or []:
        if isinstance(sub, Mapping):
            _walk(sub, path, out)
    t = schema.get("type")
    if isinstance(t, str):
        node.types.add(t)
    elif isinstance(t, list):
        node.types.update(str(x) for x in t)
    props = schema.get("properties")
    if isinstance(props, Mapping) or t == "object":
        req = set(schema.get("required") or [])
        node.required = req if node.required is None else node.required & req
    if isinstance(props, Mapping):
        node.props.update(props)
        for name, sub in props.items():
            if isinstance(sub, Mapping):
                _walk(sub, (*path, name), out)
    items = schema.get("items")
    if isinstance(items, Mapping):
        _walk(items, (*path, "[]"), out)
    elif isinstance(items, list):
        for sub in items:
            if isinstance(sub, Mapping):
                _walk(sub, (*path, "[]"), out)


def _merge_indexes(indexes: Sequence[_Index]) -> _Index:
    """The index of the union of several schemas: types and properties united; a property is
    required only when every schema that has its parent object requires it."""
    out: _Index = {}
    for idx in indexes:
        for path, node in idx.items():
            merged = out.setdefault(path, _Node())
            merged.types |= node.types
            merged.props |= node.props
            if node.required is not None:
                merged.required = (
                    set(node.required)
                    if merged.required is None
                    else merged.required & node.required
                )
    return out


@dataclass(frozen=True)
class DriftItem:
    """One difference between the baseline schemas and new traffic.

    ``severity``: ``breaking`` | ``notable`` | ``info``. ``kind``: field_removed,
    required_missing, type_changed, field_added, enum_value_added, frame_type_added,
    frame_type_unseen, content_type_changed, status_added, endpoint_added,
    endpoint_added_error, error_answer. ``endpoint`` is the endpoint key, ``where`` the schema
    (``request``, a frame kind such as ``delta:answer``, or ``""``), ``path`` a JSON path
    (``$.choices[].delta.phase``) or ``""``; ``before``/``after`` the compared values (type
    names, enum values as JSON text, content types); ``message`` one readable sentence.
    """

    severity: Severity
    kind: str
    endpoint: str
    where: str
    path: str
    message: str
    before: tuple[str, ...] = ()
    after: tuple[str, ...] = ()

    def sort_key(self) -> tuple[int, str, str, str, str]:
        """Order: severity, endpoint, where, path, kind."""
        return (_SEVERITY_ORDER[self.severity], self.endpoint, self.where, self.path, self.kind)

    def to_json(self) -> dict[str, Any]:
        """The item as a JSON object (lists for ``before``/``after``)."""
        return {
            "severity": self.severity,
            "kind": self.kind,
            "endpoint": self.endpoint,
            "where": self.where,
            "path": self.path,
            "message": self.message,
            "before": list(self.before),
            "after": list(self.after),
        }


@dataclass
class DriftReport:
    """All drift items, sorted; ``exit_code`` 0 (none or info only), 1 (notable), 2 (breaking)."""

    items: list[DriftItem]

    @property
    def breaking(self) -> list[DriftItem]:
        """The breaking items."""
        return [i for i in self.items if i.severity == "breaking"]

    @property
    def notable(self) -> list[DriftItem]:
        """The notable items."""
        return [i for i in self.items if i.severity == "notable"]

    @property
    def info(self) -> list[DriftItem]:
        """The info items (no drift: error answers, frame kinds absent from the sample)."""
        return [i for i in self.items if i.severity == "info"]

    @property
    def exit_code(self) -> int:
        """2 if anything breaks, else 1 if anything is notable, else 0."""
        if self.breaking:
            return 2
        return 1 if self.notable else 0

    def to_json(self) -> dict[str, Any]:
        """``{"exit_code", "summary": {"breaking", "notable", "info"}, "items": [...]}``."""
        return {
            "exit_code": self.exit_code,
            "summary": {
                "breaking": len(self.breaking),
                "notable": len(self.notable),
                "info": len(self.info),
            },
            "items": [i.to_json() for i in self.items],
        }

    def text(self) -> str:
        """A readable report: a summary line, then items grouped by severity and endpoint."""
        if not self.breaking and not self.notable:
            head = "No drift."
        else:
            head = f"Drift: {len(self.breaking)} breaking, {len(self.notable)} notable."
        lines = [head + (f" ({len(self.info)} info)" if self.info else "")]
        titles = {
            "breaking": "BREAKING (the proxy may fail on this traffic)",
            "notable": "NOTABLE (new shapes or values; check the proxy handles them)",
            "info": "INFO (not drift)",
        }
        for severity in ("breaking", "notable", "info"):
            group = [i for i in self.items if i.severity == severity]
            if not group:
                continue
            lines.append("")
            lines.append(titles[severity])
            endpoint = None
            for item in group:
                if item.endpoint != endpoint:
                    endpoint = item.endpoint
                    lines.append(f"  {endpoint}")
                where = f"[{item.where}] " if item.where else ""
                path = f"{item.path} " if item.path else ""
                lines.append(f"    {item.kind}: {where}{path}- {item.message}")
        return "\n".join(lines) + "\n"


def _types(types: set[str]) -> tuple[str, ...]:
    return tuple(sorted(types))


def _compare(
    endpoint: str,
    where: str,
    base: _Index,
    base_enums: Mapping[str, Sequence[Any]],
    new: _Index,
    new_enums: Mapping[str, Sequence[Any]],
    out: list[DriftItem],
) -> None:
    """Compare one new schema index with its baseline index; append the items found."""
    for path in sorted(set(new) - set(base)):
        if not path or path[:-1] not in base:
            continue  # the root, or under a field that is itself new (reported once, there)
        types = _types(new[path].types)
        what = "array items where the array was always empty" if path[-1] == "[]" else "field"
        out.append(
            DriftItem(
                "notable",
                "field_added",
                endpoint,
                where,
                _render_path(path),
                f"new {what} ({'/'.join(types) or 'any type'})",
                (),
                types,
            )
        )
    for path in sorted(set(new) & set(base)):
        b, n = base[path], new[path]
        added = set(n.types) - b.types
        if "integer" in added and "number" in b.types:
            added.discard("integer")
        if added and b.types:
            out.append(
                DriftItem(
                    "breaking",
                    "type_changed",
                    endpoint,
                    where,
                    _render_path(path),
                    f"type was {'/'.join(_types(b.types))}, now also {'/'.join(sorted(added))}",
                    _types(b.types),
                    _types(n.types),
                )
            )
        if b.required and n.required is not None and "object" in n.types:
            for key in sorted(b.required):
                child = (*path, key)
                if child not in new:
                    out.append(
                        DriftItem(
                            "breaking",
                            "field_removed",
                            endpoint,
                            where,
                            _render_path(child),
                            "required in every known sample, absent from every new one",
                        )
                    )
                elif key not in n.required:
                    out.append(
                        DriftItem(
                            "breaking",
                            "required_missing",
                            endpoint,
                            where,
                            _render_path(child),
                            "required in every known sample, missing from some new ones",
                        )
                    )
    for path_text in sorted(new_enums):
        if path_text not in base_enums:
            continue
        known = {_enc(v) for v in base_enums[path_text]}
        fresh = sorted({_enc(v) for v in new_enums[path_text]} - known)
        if fresh:
            out.append(
                DriftItem(
                    "notable",
                    "enum_value_added",
                    endpoint,
                    where,
                    path_text,
                    f"new value {', '.join(fresh)} (known: {', '.join(sorted(known))})",
                    tuple(sorted(known)),
                    tuple(fresh),
                )
            )


def _family(kind: str) -> str | None:
    head, sep, _ = kind.partition(":")
    return head if sep else None


def _diff_endpoint(key: str, base: Mapping[str, Any], new: Mapping[str, Any]) -> list[DriftItem]:
    out: list[DriftItem] = []
    bmeta, nmeta = base[ENDPOINT_MARK], new[ENDPOINT_MARK]
    bdefs: Mapping[str, Any] = base.get("$defs") or {}
    ndefs: Mapping[str, Any] = new.get("$defs") or {}
    fresh_ct = sorted(set(nmeta["content_types"]) - set(bmeta["content_types"]))
    if fresh_ct:
        out.append(
            DriftItem(
                "breaking",
                "content_type_changed",
                key,
                "",
                "",
                f"answers {', '.join(fresh_ct)}; known: {', '.join(bmeta['content_types'])}",
                tuple(bmeta["content_types"]),
                tuple(nmeta["content_types"]),
            )
        )
    for status in sorted(set(nmeta["statuses"]) - set(bmeta["statuses"])):
        out.append(
            DriftItem(
                "breaking" if status >= 400 else "notable",
                "status_added",
                key,
                "",
                "",
                f"HTTP {status}; known: {', '.join(map(str, bmeta['statuses']))}",
                tuple(str(s) for s in bmeta["statuses"]),
                (str(status),),
            )
        )
    for kind in sorted(nmeta["answers"]):
        if _is_error_answer(kind):
            out.append(DriftItem("info", "error_answer", key, kind, "", f"answered {kind}"))
    if any(a in ("sse", "sse-cut") for a in nmeta["answers"]):
        for frame in sorted(set(bmeta["sse_frames"]) - set(nmeta["sse_frames"])):
            out.append(
                DriftItem(
                    "info",
                    "frame_type_unseen",
                    key,
                    frame,
                    "",
                    "known SSE frame kind not seen in the new traffic",
                )
            )
    for name in sorted(ndefs):
        nschema = ndefs[name]
        nidx, nenums = _index(nschema), nschema.get("x-enum-values") or {}
        if name in bdefs:
            bschema = bdefs[name]
            _compare(
                key,
                name,
                _index(bschema),
                bschema.get("x-enum-values") or {},
                nidx,
                nenums,
                out,
            )
            continue
        if name not in set(nmeta["answers"]) | set(nmeta["sse_frames"]) and name != "request":
            continue
        out.append(
            DriftItem(
                "notable",
                "frame_type_added",
                key,
                name,
                "",
                (
                    "a JSON request body where none was known"
                    if name == "request"
                    else "new answer or SSE frame kind"
                ),
                tuple(sorted(bdefs)),
                (name,),
            )
        )
        family = _family(name)
        members = [d for d in sorted(bdefs) if family is not None and _family(d) == family]
        if members:
            merged = _merge_indexes([_index(bdefs[m]) for m in members])
            enums: dict[str, list[Any]] = defaultdict(list)
            for m in members:
                for p, values in (bdefs[m].get("x-enum-values") or {}).items():
                    enums[p].extend(values)
            where = f"{name} vs known {family}:*"
            _compare(key, where, merged, enums, nidx, nenums, out)
    for kind in sorted(set(nmeta["answers"]) - set(bmeta["answers"])):
        if kind in ndefs:
            continue  # reported as frame_type_added
        out.append(
            DriftItem(
                "notable",
                "frame_type_added",
                key,
                kind,
                "",
                "new answer kind",
                tuple(bmeta["answers"]),
                (kind,),
            )
        )
    return out


def diff(
    baseline: Mapping[str, Mapping[str, Any]], new: Mapping[str, Mapping[str, Any]]
) -> DriftReport:
    """Compare new endpoint documents with baseline ones (both ``{endpoint key: document}``,
    as from ``load_schemas`` or ``by_key(infer(...))``) and classify every difference.

    Endpoints of the baseline absent from the new traffic are not reported (the new traffic is
    a sample). A new endpoint is ``notable`` (``endpoint_added``), or ``breaking``
    (``endpoint_added_error``) when every answer it got is an error (envelope, WAF, HTML page,
    cut stream, or HTTP >= 400).
    """
    items: list[DriftItem] = []
    for key in sorted(new):
        ndoc = new[key]
        if key in baseline:
            items.extend(_diff_endpoint(key, baseline[key], ndoc))
            continue
        meta = ndoc[ENDPOINT_MARK]
        answers = list(meta["answers"])
        all_errors = bool(answers) and (
            all(_is_error_answer(a) for a in answers) or min(meta["statuses"]) >= 400
        )
        items.append(
            DriftItem(
                "breaking" if all_errors else "notable",
                "endpoint_added_error" if all_errors else "endpoint_added",
                key,
                "",
                "",
                (
                    f"unknown endpoint answering only errors: {', '.join(answers)}"
                    if all_errors
                    else f"unknown endpoint (answers: {', '.join(answers)})"
                ),
                (),
                tuple(answers),
            )
        )
        for kind in answers:
            if _is_error_answer(kind):
                items.append(DriftItem("info", "error_answer", key, kind, "", f"answered {kind}"))
    items.sort(key=DriftItem.sort_key)
    return DriftReport(items)
