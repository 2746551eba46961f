"""Checking tool definitions and call arguments (pure; ``jsonschema``).

- :func:`check_tool_schema`: a client's ``parameters`` must be a JSON Schema object
  (request-time, 400 with ``param``).
- :class:`ToolBox`: the offered tools, their compiled validators, name canonicalisation
  (``functions.read_file`` / ``Read_File`` -> ``read_file``, docs/agents.md §6.7), and
  :meth:`ToolBox.check`, which turns a parsed call into JSON argument text or a
  :class:`Rejection` saying why it is not a call (string values the schema types otherwise,
  ``"20"`` for an integer, are typed before giving up).
- :func:`coerce_xml_params`: the XML form's raw-text parameter values, typed by the schema
  (docs/agents.md §1.5: integers/numbers parsed, booleans, JSON for objects/arrays, ``null``).
"""

from __future__ import annotations

import functools
import json
import math
import re
from dataclasses import dataclass
from typing import Any

import jsonschema
import orjson
from jsonschema.exceptions import SchemaError
from jsonschema.protocols import Validator

from proxy.api_models import MAX_JSON_DEPTH, nests_too_deep
from proxy.conversation import ToolSpec
from proxy.errors import ClientRequestError, clip, quote

__all__ = [
    "Rejection",
    "ToolBox",
    "check_tool_schema",
    "coerce_xml_params",
]

_NAME_NOISE = re.compile(r"^(?:functions|function|default_api|tools|tool)[.:]", re.IGNORECASE)


def check_tool_schema(schema: Any, *, param: str) -> dict[str, Any]:
    """``schema`` as a JSON Schema object. Raises :class:`ClientRequestError` (``param``) when it
    is not an object or not a valid schema of its draft. The message quotes the offending value
    and where it is, both cut to 80 characters (:func:`~proxy.errors.quote`)."""
    field = param.rsplit(".", 1)[-1]
    if not isinstance(schema, dict):
        raise ClientRequestError(f"a tool's `{field}` must be a JSON Schema object", param=param)
    key = _schema_key(schema)
    try:
        if key is not None:
            _check_schema_text(key)  # (remembered once valid)
        else:
            _check_schema(schema)
    except SchemaError as exc:
        raise ClientRequestError(
            f"a tool's `{field}` is not a valid JSON Schema: {_schema_problem(exc)}", param=param
        ) from None
    return schema


def _check_schema(schema: dict[str, Any]) -> None:
    """Raises ``SchemaError`` when ``schema`` is not a valid schema of its draft."""
    jsonschema.validators.validator_for(schema).check_schema(schema)


@functools.lru_cache(maxsize=512)
def _check_schema_text(text: bytes) -> None:
    """:func:`_check_schema` of a schema given as its canonical JSON, remembered once valid (an
    agent sends the same tools every turn, and a check takes about half a millisecond; an
    invalid schema raises, and is checked again each time)."""
    _check_schema(orjson.loads(text))


#: the largest canonical schema :func:`_check_schema_text` remembers, in bytes
_SCHEMA_KEY_LIMIT = 64 * 1024


def _schema_key(schema: dict[str, Any]) -> bytes | None:
    """``schema`` as canonical JSON when it is small enough to remember, else ``None``."""
    try:
        text = orjson.dumps(schema, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # orjson.JSONEncodeError: not JSON (a key that is no string)
        return None
    return text if len(text) <= _SCHEMA_KEY_LIMIT else None


def _schema_problem(exc: SchemaError) -> str:
    """``exc``'s message with the client's value in it quoted short, and where it is (jsonschema
    words its messages as ``<repr of the value> is not …``)."""
    text = exc.message.replace(repr(exc.instance), quote(exc.instance))
    return f"{clip(text, 200)} (at {clip(exc.json_path)})"


@dataclass(frozen=True, slots=True)
class Rejection:
    """A block that is not turned into a call. ``reason``: ``invalid_json``,
    ``unknown_tool``, ``invalid_arguments``, ``not_allowed`` (tool_choice none, another tool
    than the named one, or a second call when parallel calls are off); ``name``: the tool the
    model named, if any; ``detail``: short, secret-free text for the log and the client's note.
    """

    reason: str
    name: str | None
    detail: str


class ToolBox:
    """The tools of one request, ready to check calls against."""

    __slots__ = ("_by_lower", "_specs", "_validators")

    def __init__(self, tools: tuple[ToolSpec, ...]) -> None:
        self._specs = {t.name: t for t in tools}
        self._by_lower = {t.name.lower(): t.name for t in tools}
        self._validators: dict[str, Validator] = {}
        for t in tools:
            if t.parameters:
                cls = jsonschema.validators.validator_for(t.parameters)
                self._validators[t.name] = cls(t.parameters)

    def spec(self, name: str) -> ToolSpec | None:
        """The offered tool called ``name`` (exact), or ``None``."""
        return self._specs.get(name)

    def canonical(self, name: str) -> str | None:
        """The offered tool ``name`` means: exact, then without a namespace prefix and trimmed,
        then case-insensitive. ``None`` when no tool matches."""
        if name in self._specs:
            return name
        cleaned = _NAME_NOISE.sub("", name.strip()).strip()
        if cleaned in self._specs:
            return cleaned
        return self._by_lower.get(cleaned.lower())

    def check(self, name: Any, arguments: Any) -> tuple[str, str] | Rejection:
        """``(canonical name, arguments JSON text)`` for a valid call, else a :class:`Rejection`.

        ``arguments`` is the decoded arguments object (``None`` means ``{}``); a JSON string
        holding an object is decoded first (some models double-encode).
        """
        if not isinstance(name, str) or not name.strip():
            return Rejection("invalid_json", None, "the call names no tool")
        canon = self.canonical(name)
        if canon is None:
            return Rejection("unknown_tool", name[:64], f"no tool named {name[:64]!r} was offered")
        if arguments is None:
            arguments = {}
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments) if arguments.strip() else {}
            except (ValueError, RecursionError):  # (RecursionError: nested past the limit)
                return Rejection("invalid_json", canon, "the arguments are not JSON")
        if not isinstance(arguments, dict):
            return Rejection("invalid_arguments", canon, "the arguments are not a JSON object")
        if nests_too_deep(arguments):  # its answer could not be encoded again
            return Rejection(
                "invalid_arguments",
                canon,
                f"the arguments nest more than {MAX_JSON_DEPTH} levels of objects and arrays",
            )
        validator = self._validators.get(canon)
        if validator is not None:
            error = next(iter(validator.iter_errors(arguments)), None)
            if error is not None:
                # Models often quote numbers and booleans ("20"): type string values by the
                # schema, as for the XML form, and accept the call if that makes it valid.
                strings = {k: v for k, v in arguments.items() if isinstance(v, str)}
                typed = {**arguments, **coerce_xml_params(strings, self._specs[canon])}
                if typed != arguments and next(iter(validator.iter_errors(typed)), None) is None:
                    return _encoded(canon, typed)
                where = "/".join(str(p) for p in error.absolute_path) or "arguments"
                return Rejection("invalid_arguments", canon, f"{where}: {error.message[:200]}")
        return _encoded(canon, arguments)


def _encoded(name: str, arguments: dict[str, Any]) -> tuple[str, str] | Rejection:
    """``(name, arguments as JSON text)``, or a :class:`Rejection` when the arguments hold a
    value no JSON text carries, which a model can still write: ``NaN`` or ``Infinity`` (Python's
    JSON reader takes them, as it takes ``1e999``), a lone UTF-16 surrogate (``"\\ud800"``) or
    an integer too long to write out. ``arguments`` is always JSON a client can read
    (docs/agents.md §7.6)."""
    try:
        text = json.dumps(arguments, ensure_ascii=False, allow_nan=False)
        text.encode("utf-8")  # a lone surrogate cannot be written as UTF-8
    except (ValueError, UnicodeEncodeError):  # (int too long: ValueError)
        return Rejection(
            "invalid_arguments",
            name,
            "the arguments hold a value JSON cannot carry (NaN, Infinity, a lone surrogate or "
            "an integer too long to write)",
        )
    return name, text


#: the integers and numbers of a call's text values: JSON's grammar (ASCII digits only: no
#: "1_000", no other scripts' digits, no "nan"), a leading "+" allowed
_INTEGER = re.compile(r"[-+]?[0-9]+")
_NUMBER = re.compile(r"[-+]?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?")


def _coerce(value: str, schema: Any) -> Any:
    types = schema.get("type") if isinstance(schema, dict) else None
    if isinstance(types, str):
        types = [types]
    if not isinstance(types, list) or not types:
        return value
    text = value.strip()
    for t in types:
        if t == "null" and text in ("null", "None"):
            return None
        if t == "boolean" and text.lower() in ("true", "false"):
            return text.lower() == "true"
        if t == "integer" and _INTEGER.fullmatch(text):
            try:
                return int(text)
            except ValueError:  # more digits than Python converts: left a string
                pass
        if t == "number" and _NUMBER.fullmatch(text):
            try:
                number = int(text) if _INTEGER.fullmatch(text) else float(text)
            except ValueError:
                pass
            else:
                if not isinstance(number, float) or math.isfinite(number):
                    return number
        if t in ("object", "array"):
            try:
                decoded = json.loads(text)
            except (ValueError, RecursionError):
                continue
            if isinstance(decoded, dict if t == "object" else list):
                return decoded
        if t == "string":
            return value
    return value


def coerce_xml_params(params: dict[str, str], spec: ToolSpec | None) -> dict[str, Any]:
    """Type the raw-text values of an XML call (``<parameter=k>v</parameter>``) by the tool's
    schema; unknown parameters and values that do not parse stay strings (the schema check then
    decides)."""
    props: Any = (spec.parameters or {}).get("properties") if spec is not None else None
    if not isinstance(props, dict):
        props = {}
    return {k: _coerce(v, props.get(k)) for k, v in params.items()}
