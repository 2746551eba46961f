"""Infer JSON Schemas of chat.qwen.ai traffic from cassettes, and diff them to detect drift.

Inference (``infer``): every interaction is filed under an *endpoint key*, ``"<METHOD> <path>"``
with the query dropped and id-like path segments replaced by ``{id}``; ``chat/completions`` is
split by the request's ``messages[0].chat_type`` (``"POST /api/v2/chat/completions [t2t]"``), since
t2t, search and t2i turns answer differently (docs/protocol.md sections 4.1, 5, 6). Per endpoint,
genson builds one schema for the JSON request body (``request``) and one per
*answer kind*: every SSE frame and every whole JSON body is classified by ``frame_kind``:

=========================  ====================================================================
``response.created`` …     a frame whose only key is ``response.<x>`` (docs/protocol.md 5.2)
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
``required``, ``items``, ``anyOf``; docs/recording.md §3.2) finds field_removed, required_missing,
type_changed, field_added, enum_value_added, frame_type_added/unseen, content_type_changed,
status_added, endpoint_added(_error) and error_answer items. A frame kind new to an endpoint is
also compared with the union of the known kinds of its family (``delta:*``, ``envelope:*``), so
frames that lost ``phase`` (docs/protocol.md §11.7) show as ``$.choices[].delta.phase`` removed.

Severity (``judge``) is then decided by what the gateway depends on, its consumer contract
(:class:`Contract`, ``schemas/gateway_contract.json``, generated from ``proxy/qwen/contract.py``):
``breaking`` when a field the gateway reads is gone, not always present or of a type it cannot
use, when a content type or HTTP error never seen reaches an endpoint it calls, when an error
code is unknown, SSE data is not JSON, or a value it needs (``status: finished``, ``phase:
answer``) vanished, each naming the feature that fails and how; ``notable`` for new fields,
frames, phases, enum values and endpoints; ``info`` for everything on the request side (it
describes the recording client), fields it does not read, error answers seen, frame kinds a
sample lacks.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from genson import SchemaBuilder

from recorder.cassette import Cassette, Interaction, write_atomic
from recorder.matching import normalise_path

__all__ = [
    "ENUM_FIELDS",
    "ERROR_ANSWERS",
    "SCHEMA_URI",
    "Contract",
    "DriftItem",
    "DriftReport",
    "answer_kind",
    "default_contract",
    "diff",
    "endpoint_key",
    "ends_at_wildcard",
    "frame_kind",
    "infer",
    "judge",
    "load_schemas",
    "path_is_ancestor",
    "path_matches",
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
"""Answer kinds (or prefixes) that mean the site refused or failed (docs/protocol.md 4.3, 10)."""

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
    ``…/chat/completions`` when the JSON body names ``messages[0].chat_type`` (docs/protocol.md
    §4.1).
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
    feature: str = ""
    failure: str = ""

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
            "feature": self.feature,
            "failure": self.failure,
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
            "breaking": "BREAKING (something the gateway depends on changed)",
            "notable": "NOTABLE (new shapes or values; the gateway ignores them today)",
            "info": "INFO (the recording client's side, unread fields, error answers seen)",
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
                if item.failure:
                    lines.append(f"      -> {item.feature}: {item.failure}")
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


DEFAULT_CONTRACT_FILE = Path(__file__).resolve().parents[1] / "schemas" / "gateway_contract.json"
"""The gateway's contract in a source checkout (``python -m proxy.qwen.contract`` writes it)."""


def default_contract() -> Contract | None:
    """The contract of :data:`DEFAULT_CONTRACT_FILE`, or ``None`` when the file is absent."""
    return Contract.load(DEFAULT_CONTRACT_FILE) if DEFAULT_CONTRACT_FILE.is_file() else None


def diff(
    baseline: Mapping[str, Mapping[str, Any]],
    new: Mapping[str, Mapping[str, Any]],
    contract: Contract | Literal["default"] | None = "default",
) -> DriftReport:
    """Compare new endpoint documents with baseline ones (both ``{endpoint key: document}``,
    as from ``load_schemas`` or ``by_key(infer(...))``) and classify every difference.

    Endpoints of the baseline absent from the new traffic are not reported (the new traffic is
    a sample). A new endpoint is ``notable`` (``endpoint_added``), or ``endpoint_added_error``
    when every answer it got is an error (envelope, WAF, HTML page, cut stream, or HTTP >= 400).

    Severities are then judged by ``contract`` (what the gateway reads, :class:`Contract`; by
    default :func:`default_contract`): see :func:`judge`. With ``contract=None`` every
    response-side difference keeps its structural severity; request-side differences are
    ``info`` either way.
    """
    if contract == "default":
        contract = default_contract()
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
    judged = judge(items, baseline, new, contract if isinstance(contract, Contract) else None)
    judged.sort(key=DriftItem.sort_key)
    return DriftReport(judged)


# ------------------------------------------------------------------------------------------------
# The consumer contract: judging drift by what the gateway reads


@dataclass(frozen=True)
class ContractField:
    """One field the gateway reads (``proxy/qwen/contract.py``, ``Field``)."""

    endpoint: str
    where: str
    path: str
    types: frozenset[str]
    feature: str
    use: str
    failure: str


@dataclass(frozen=True)
class ContractEndpoint:
    """An endpoint the gateway calls and the content types it reads there."""

    key: str
    answers: tuple[str, ...]
    feature: str
    failure: str


@dataclass(frozen=True)
class ContractValue:
    """An enum value the gateway depends on at ``path`` in ``where`` frames of ``endpoint``."""

    endpoint: str
    where: str
    path: str
    value: str
    feature: str
    failure: str
    unless: str = ""


def _endpoint_matches(pattern: str, key: str) -> bool:
    return pattern == "*" or key == pattern or key.startswith(pattern + " [")


def _where_matches(pattern: str, where: str) -> bool:
    from fnmatch import fnmatchcase

    kind = where.split(" vs ", 1)[0]
    return fnmatchcase(kind, pattern)


@dataclass(frozen=True)
class Contract:
    """What the gateway depends on, as ``schemas/gateway_contract.json`` states it.

    ``fields``: the fields read, with the feature each serves and how it fails; ``endpoints``:
    the endpoints called and the content types read there; ``error_codes``: the error codes
    the gateway knows; ``phases``/``statuses``: the ``delta`` values it knows; ``values``: enum
    values whose disappearance breaks a feature (``finished`` ends an answer).
    """

    fields: tuple[ContractField, ...]
    endpoints: tuple[ContractEndpoint, ...]
    error_codes: frozenset[str]
    phases: frozenset[str]
    statuses: frozenset[str]
    values: tuple[ContractValue, ...] = ()

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Contract:
        """Build from the JSON object (raises ``ValueError`` naming what is malformed)."""
        try:
            fields = tuple(
                ContractField(
                    str(f["endpoint"]),
                    str(f["where"]),
                    str(f["path"]),
                    frozenset(str(t) for t in f["types"]),
                    str(f["feature"]),
                    str(f.get("use", "")),
                    str(f.get("failure", "")),
                )
                for f in obj["fields"]
            )
            endpoints = tuple(
                ContractEndpoint(
                    str(e["key"]), tuple(map(str, e["answers"])), str(e["feature"]), e["failure"]
                )
                for e in obj["endpoints"]
            )
            values = tuple(
                ContractValue(
                    str(v["endpoint"]),
                    str(v["where"]),
                    str(v["path"]),
                    str(v["value"]),
                    str(v["feature"]),
                    str(v["failure"]),
                    str(v.get("unless") or ""),
                )
                for v in obj.get("values", [])
            )
            return cls(
                fields,
                endpoints,
                frozenset(map(str, obj["error_codes"])),
                frozenset(map(str, obj["phases"])),
                frozenset(map(str, obj["statuses"])),
                values,
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a gateway contract: {exc!r}") from exc

    @classmethod
    def load(cls, path: Path) -> Contract:
        """Read a contract file. Raises ``OSError`` or ``ValueError`` naming the file."""
        try:
            return cls.from_json(json.loads(path.read_text(encoding="utf-8")))
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from exc

    def endpoint(self, key: str) -> ContractEndpoint | None:
        """The most specific contract endpoint covering ``key`` (a variant wins), or ``None``."""
        found = [e for e in self.endpoints if _endpoint_matches(e.key, key)]
        return max(found, key=lambda e: len(e.key)) if found else None

    def dependencies(self, endpoint: str, where: str, path: str) -> list[ContractField]:
        """Fields read at ``path`` or below it, in ``where`` frames of ``endpoint``; exact
        matches first."""
        out: list[tuple[int, ContractField]] = []
        for f in self.fields:
            if not (_endpoint_matches(f.endpoint, endpoint) and _where_matches(f.where, where)):
                continue
            if path_matches(f.path, path):
                out.append((0, f))
            elif path_is_ancestor(path, f.path):
                out.append((1, f))
        return [f for _, f in sorted(out, key=lambda p: p[0])]


_SEGMENTS = re.compile(r'\[\]|\["(?:[^"\\]|\\.)*"\]|\.[^.\[]+')
_ANY_KEY = r'(?:\.[A-Za-z_][A-Za-z0-9_]*|\["(?:[^"\\]|\\.)*"\])'


def _segments(path: str) -> list[str]:
    return _SEGMENTS.findall(path[1:] if path.startswith("$") else path)


def _pattern(segments: Sequence[str]) -> re.Pattern[str]:
    body = "".join(_ANY_KEY if seg == ".*" else re.escape(seg) for seg in segments)
    return re.compile(r"\$" + body)


def path_matches(pattern: str, path: str) -> bool:
    """Whether the JSON path ``path`` (``$.a[].b["c.d"]``) is ``pattern``, in which a ``.*``
    segment stands for any one key (``local_mcp.*[]``: any tool namespace)."""
    if ".*" not in pattern:
        return pattern == path
    return _pattern(_segments(pattern)).fullmatch(path) is not None


def ends_at_wildcard(path: str, pattern: str) -> bool:
    """Whether ``path`` is one of the keys a ``.*`` segment of ``pattern`` stands for (a key the
    gateway accepts under any name, so losing one such key is not losing a dependency)."""
    segs = _segments(pattern)
    return any(
        segs[k - 1] == ".*" and _pattern(segs[:k]).fullmatch(path) for k in range(1, len(segs))
    )


def path_is_ancestor(path: str, pattern: str) -> bool:
    """Whether ``path`` lies strictly above some path ``pattern`` stands for."""
    if ".*" not in pattern:
        return pattern.startswith((path + ".", path + "["))
    segs = _segments(pattern)
    return any(_pattern(segs[:k]).fullmatch(path) for k in range(len(segs)))


def _accepted(new_types: Sequence[str], accepted: frozenset[str]) -> bool:
    wanted = set(accepted) | ({"integer"} if "number" in accepted else set())
    return set(new_types) <= wanted


def _request_side(item: DriftItem) -> bool:
    return item.where == "request" or item.where.startswith("request ")


def _codes(doc: Mapping[str, Any]) -> set[str]:
    """Error codes a document records: ``envelope:<code>`` kinds and ``code`` enum values."""
    found: set[str] = set()
    for name, schema in (doc.get("$defs") or {}).items():
        if name.startswith("envelope:") and name != "envelope:<none>":
            found.add(name.removeprefix("envelope:"))
        if name.startswith("envelope:") or name in ("error", "json"):
            for path, values in (schema.get("x-enum-values") or {}).items():
                if path in ("$.data.code", "$.error.code", "$.code", "$.data.error.code"):
                    found.update(v for v in values if isinstance(v, str))
    return found


def _code_sites(doc: Mapping[str, Any]) -> Iterator[tuple[str, str, str]]:
    """``(code, where, path)`` of every error code in a document."""
    for name, schema in sorted((doc.get("$defs") or {}).items()):
        if name.startswith("envelope:") and name != "envelope:<none>":
            yield name.removeprefix("envelope:"), name, "$.data.code"
        if name == "error":
            for path, values in sorted((schema.get("x-enum-values") or {}).items()):
                if path in ("$.error.code", "$.code"):
                    for v in values:
                        if isinstance(v, str):
                            yield v, name, path


def judge(
    items: Sequence[DriftItem],
    baseline: Mapping[str, Mapping[str, Any]],
    new: Mapping[str, Mapping[str, Any]],
    contract: Contract | None,
) -> list[DriftItem]:
    """Re-judge structural drift items by what the gateway depends on.

    - The request side (what the recording client sent) is ``info``: it describes the client.
    - A field gone, no longer always present or of a new type is ``breaking`` when the gateway
      reads it (or something below it) and a feature fails without it: the item names the
      feature and the failure. The same for a field the gateway does not read is ``info``.
    - A content type never seen, or a new HTTP status >= 400, on an endpoint the gateway calls
      is ``breaking``; on others ``notable``. So is a new endpoint answering only errors.
    - An error code neither the baseline nor the contract knows adds ``breaking``
      ``error_code_unknown``; SSE data that is not JSON adds ``breaking`` ``unparseable``; an enum
      value the gateway depends on that vanished (``status: finished`` of answers, the ``answer``
      phase) adds ``breaking`` ``value_gone``.
    - New fields, frames, phases and enum values stay ``notable``.
    """
    out: list[DriftItem] = []
    for item in items:
        if _request_side(item):
            out.append(
                replace(
                    item,
                    severity="info",
                    message=item.message + " (request side: describes the recording client)",
                )
            )
            continue
        if contract is None:
            out.append(item)
            continue
        out.append(_judge_one(item, contract))
    if contract is not None:
        seen = {(i.endpoint, i.where.split(" vs ", 1)[0], i.path) for i in out}
        out.extend(
            i
            for i in _extra_findings(baseline, new, contract)
            if i.kind != "field_removed" or (i.endpoint, i.where, i.path) not in seen
        )
    return out


def _judge_one(item: DriftItem, contract: Contract) -> DriftItem:
    if item.kind in ("field_removed", "required_missing", "type_changed"):
        deps = [
            d
            for d in contract.dependencies(item.endpoint, item.where, item.path)
            if d.failure and not ends_at_wildcard(item.path, d.path)
        ]
        if item.kind == "type_changed":
            deps = [d for d in deps if d.path == item.path and not _accepted(item.after, d.types)]
        if deps:
            d = deps[0]
            return replace(
                item,
                severity="breaking",
                message=f"{item.message}; the gateway reads it: {d.use}",
                feature=d.feature,
                failure=d.failure,
            )
        return replace(
            item,
            severity="info",
            message=item.message + "; the gateway does not depend on it",
        )
    if item.kind in ("content_type_changed", "status_added", "endpoint_added_error"):
        ep = contract.endpoint(item.endpoint)
        serious = item.kind != "status_added" or int(item.after[0]) >= 400
        if ep is not None and serious:
            failure = ep.failure
            if item.kind == "status_added":
                failure = f"chat.qwen.ai answers HTTP {item.after[0]} here: {ep.failure}"
            return replace(item, severity="breaking", feature=ep.feature, failure=failure)
        return replace(item, severity="notable" if item.severity != "info" else "info")
    if item.kind == "enum_value_added" and item.path == "$.choices[].delta.phase":
        unknown = [v for v in item.after if json.loads(v) not in contract.phases]
        if unknown:
            return replace(
                item,
                message=item.message + f"; unknown to the gateway: {', '.join(unknown)} "
                "(ignored, never answer text)",
            )
    if item.kind == "enum_value_added" and item.path == "$.choices[].delta.status":
        unknown = [v for v in item.after if json.loads(v) not in contract.statuses]
        if unknown:
            return replace(item, message=item.message + f"; unknown to the gateway: {unknown}")
    return item


def _extra_findings(
    baseline: Mapping[str, Mapping[str, Any]],
    new: Mapping[str, Mapping[str, Any]],
    contract: Contract,
) -> list[DriftItem]:
    out: list[DriftItem] = []
    known = set(contract.error_codes)
    for doc in baseline.values():
        known |= _codes(doc)
    for key, ndoc in sorted(new.items()):
        if contract.endpoint(key) is None:
            continue
        reported: set[str] = set()
        for code, where, path in _code_sites(ndoc):
            if code in known or code in reported:
                continue
            reported.add(code)
            out.append(
                DriftItem(
                    "breaking",
                    "error_code_unknown",
                    key,
                    where,
                    path,
                    f"error code {code!r} is unknown to the gateway and to the baseline",
                    tuple(sorted(known)),
                    (code,),
                    feature="errors",
                    failure=(
                        f"users get a generic HTTP 502 upstream_error for {code!r} instead of "
                        "the right status and advice"
                    ),
                )
            )
        meta = ndoc[ENDPOINT_MARK]
        if "non-json" in meta["sse_frames"]:
            bmeta = baseline.get(key, {}).get(ENDPOINT_MARK, {})
            if "non-json" not in bmeta.get("sse_frames", []):
                out.append(
                    DriftItem(
                        "breaking",
                        "unparseable",
                        key,
                        "non-json",
                        "",
                        "SSE data that is not JSON",
                        feature="answer",
                        failure=(
                            "streams fail with HTTP 502 upstream_protocol_error ('a stream frame "
                            "that is not JSON')"
                        ),
                    )
                )
        if key in baseline and "sse" in meta["answers"]:
            out.extend(_values_gone(key, baseline[key], ndoc, contract))
        if key in baseline:
            out.extend(_optional_gone(key, baseline[key], ndoc, contract))
    return out


def _optional_gone(
    key: str, bdoc: Mapping[str, Any], ndoc: Mapping[str, Any], contract: Contract
) -> list[DriftItem]:
    """Fields the gateway depends on that the baseline had (even if not in every sample) and no
    new sample of the same frame kind has, while their parent is still there."""
    out: list[DriftItem] = []
    bdefs: Mapping[str, Any] = bdoc.get("$defs") or {}
    ndefs: Mapping[str, Any] = ndoc.get("$defs") or {}
    for name in sorted(set(bdefs) & set(ndefs)):
        if name == "request":
            continue
        bidx, nidx = _index(bdefs[name]), _index(ndefs[name])
        bpaths = {_render_path(p): p for p in bidx}
        npaths = {_render_path(p) for p in nidx}
        for dep in contract.fields:
            if not dep.failure:
                continue
            if not (_endpoint_matches(dep.endpoint, key) and _where_matches(dep.where, name)):
                continue
            for rendered in sorted(p for p in bpaths if path_matches(dep.path, p)):
                if rendered in npaths:
                    continue
                parent = bpaths[rendered][:-1]
                while parent and parent[-1] == "[]":
                    parent = parent[:-1]
                if _render_path(parent) not in npaths:
                    continue  # its parent is gone too: reported there, or not read at all
                out.append(
                    DriftItem(
                        "breaking",
                        "field_removed",
                        key,
                        name,
                        rendered,
                        "in known samples, absent from every new one; the gateway reads it: "
                        + dep.use,
                        feature=dep.feature,
                        failure=dep.failure,
                    )
                )
    return out


def _enum_values(doc: Mapping[str, Any], where: str, path: str) -> set[str] | None:
    """The values of ``path`` over the frame kinds matching ``where``; ``None`` if no frame
    kind matches."""
    found: set[str] | None = None
    for name, schema in (doc.get("$defs") or {}).items():
        if not _where_matches(where, name):
            continue
        found = found if found is not None else set()
        for v in (schema.get("x-enum-values") or {}).get(path, []):
            found.add(_enc(v))
    return found


def _values_gone(
    key: str, bdoc: Mapping[str, Any], ndoc: Mapping[str, Any], contract: Contract
) -> list[DriftItem]:
    out: list[DriftItem] = []
    for v in contract.values:
        if not _endpoint_matches(v.endpoint, key):
            continue
        if v.unless and v.unless in ndoc[ENDPOINT_MARK]["sse_frames"]:
            continue
        before = _enum_values(bdoc, v.where, v.path)
        after = _enum_values(ndoc, v.where, v.path)
        if after is None and v.where.endswith("*"):
            after = set()  # no frame of the family at all: the value is gone with them
        want = _enc(v.value)
        if before is None or want not in before or after is None or want in after:
            continue
        out.append(
            DriftItem(
                "breaking",
                "value_gone",
                key,
                v.where,
                v.path,
                f"{want} no longer appears (seen: {', '.join(sorted(after)) or 'nothing'})",
                (want,),
                tuple(sorted(after)),
                feature=v.feature,
                failure=v.failure,
            )
        )
    return out
