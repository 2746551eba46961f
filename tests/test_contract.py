"""The consumer contract (proxy/qwen/contract.py) matches the code that reads upstream answers.

How: each reading module is parsed (``ast``) and every string key it reads is collected: the
constant of a subscript in load context (``d["key"]``), the first argument of ``.get("key")``,
the left side of ``"key" in d``, and the strings of a module-level tuple iterated by a loop or
comprehension whose variable is used as a key (``for k in _URL_KEYS: body.get(k)``). The set must
lie within the field names of the contract's paths for that module plus its documented
non-fields (``NOT_FIELDS``), and the last name of every listed path (and every non-field) must be
among the keys read. Static scanning sees every branch, including ones no cassette exercises; its
limit is that it compares names, not whole paths, so a second test feeds every cassette through
the translator with instrumented JSON objects and checks each path actually read is listed.
"""

from __future__ import annotations

import ast
import importlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from proxy.qwen import contract
from proxy.qwen import translate as translate_mod
from recorder.cassette import load_all
from recorder.schema import path_is_ancestor, path_matches, sse_data

REPO = Path(__file__).resolve().parents[1]
CONTRACT_FILE = REPO / "schemas" / "gateway_contract.json"
_SEGMENT = re.compile(r'\.([A-Za-z_][A-Za-z0-9_]*)|\["((?:[^"\\]|\\.)*)"\]')


def path_names(path: str) -> set[str]:
    """The field names in a contract path (``$.a[].b["c.d"]`` -> a, b, c.d)."""
    return {m.group(1) or json.loads('"' + m.group(2) + '"') for m in _SEGMENT.finditer(path)}


def _module_tuples(tree: ast.Module) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for node in tree.body:
        targets: list[ast.expr] = []
        value: ast.expr | None = None
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        if isinstance(value, ast.Tuple | ast.List) and all(
            isinstance(e, ast.Constant) and isinstance(e.value, str) for e in value.elts
        ):
            for t in targets:
                if isinstance(t, ast.Name):
                    out[t.id] = [e.value for e in value.elts]  # type: ignore[union-attr]
    return out


def _loops(tree: ast.Module, tuples: dict[str, list[str]]) -> dict[str, list[str]]:
    """Loop variables bound to a module-level tuple of strings."""
    bound: dict[str, list[str]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.For | ast.comprehension):
            if (
                isinstance(node.target, ast.Name)
                and isinstance(node.iter, ast.Name)
                and node.iter.id in tuples
            ):
                bound[node.target.id] = tuples[node.iter.id]
    return bound


def read_keys(module: str) -> set[str]:
    """Every string key ``module`` reads (see the module docstring)."""
    source = Path(importlib.import_module(module).__file__ or "").read_text(encoding="utf-8")
    tree = ast.parse(source)
    loops = _loops(tree, _module_tuples(tree))
    keys: set[str] = set()

    def key_of(expr: ast.expr) -> list[str]:
        if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
            return [expr.value]
        if isinstance(expr, ast.Name) and expr.id in loops:
            return loops[expr.id]
        return []

    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load):
            keys.update(key_of(node.slice))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "get"
            and node.args
        ):
            keys.update(key_of(node.args[0]))
        elif isinstance(node, ast.Compare) and any(
            isinstance(op, ast.In | ast.NotIn) for op in node.ops
        ):
            if isinstance(node.left, ast.Constant) and isinstance(node.left.value, str):
                keys.add(node.left.value)
    return keys


def contract_names(module: str) -> set[str]:
    """Every field name on the paths the contract lists for ``module``."""
    return {n for f in contract.FIELDS if f.reader == module for n in path_names(f.path)}


def contract_leaves(module: str) -> set[str]:
    """The last field name of each path the contract lists for ``module`` (what it must read
    itself; the way there may be walked by another module, as the client hands the cleanup
    the chat list's items)."""
    out: set[str] = set()
    for f in contract.FIELDS:
        if f.reader == module:
            names = [
                m.group(1) or json.loads('"' + m.group(2) + '"') for m in _SEGMENT.finditer(f.path)
            ]
            out.add(names[-1])
    return out


@pytest.mark.parametrize("module", contract.READERS)
def test_code_reads_only_what_the_contract_lists(module: str) -> None:
    """Every key the module reads is a contract field (or a documented non-field)."""
    extra = read_keys(module) - contract_names(module) - set(contract.NOT_FIELDS.get(module, {}))
    assert not extra, f"{module} reads {sorted(extra)}: add them to proxy/qwen/contract.py FIELDS"


@pytest.mark.parametrize("module", contract.READERS)
def test_contract_lists_only_what_the_code_reads(module: str) -> None:
    """Every contract field name of the module, and every non-field, is read by it."""
    keys = read_keys(module)
    unread = (contract_leaves(module) | set(contract.NOT_FIELDS.get(module, {}))) - keys
    assert not unread, f"the contract lists {sorted(unread)} for {module}, which never reads them"


def test_scanner_sees_every_form_of_read() -> None:
    """The scanner finds subscripts, .get, `in` and tuple-driven loops (and not stores)."""
    tree_src = (
        "KEYS = ('k1', 'k2')\n"
        "def f(d):\n"
        "    d['stored'] = 1\n"
        "    a = d['sub'] + d.get('got')\n"
        "    b = 'member' in d\n"
        "    return [d.get(k) for k in KEYS]\n"
    )
    import sys
    import types

    mod = types.ModuleType("scan_probe")
    path = REPO / "tests" / ".scan_probe.py"
    path.write_text(tree_src, encoding="utf-8")
    try:
        mod.__file__ = str(path)
        sys.modules["scan_probe"] = mod
        assert read_keys("scan_probe") == {"sub", "got", "member", "k1", "k2"}
    finally:
        sys.modules.pop("scan_probe", None)
        path.unlink()


def test_contract_file_is_current() -> None:
    """schemas/gateway_contract.json is what proxy/qwen/contract.py renders."""
    assert CONTRACT_FILE.read_text(encoding="utf-8") == contract.render(), (
        "run: python -m proxy.qwen.contract schemas/gateway_contract.json"
    )


def test_contract_entries_are_well_formed() -> None:
    """Every field names a known feature and JSON types; paths start at $."""
    json_types = {"string", "integer", "number", "boolean", "array", "object", "null"}
    for f in contract.FIELDS:
        assert f.feature in contract.FEATURES, f
        assert set(f.types) <= json_types, f
        assert f.path.startswith("$"), f
        assert f.reader in contract.READERS, f
    for e in contract.ENDPOINTS:
        assert e.feature in contract.FEATURES, e


def test_contract_knows_every_phase_the_translator_handles() -> None:
    """Phases the translator names (constants and comparisons) are in contract.PHASES."""
    tree = ast.parse(Path(translate_mod.__file__).read_text(encoding="utf-8"))
    named: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and isinstance(node.left, ast.Name):
            if node.left.id == "phase":
                for c in node.comparators:
                    if isinstance(c, ast.Constant) and isinstance(c.value, str):
                        named.add(c.value)
    named |= set(translate_mod.IMAGE_PHASES)
    assert named <= set(contract.PHASES), sorted(named - set(contract.PHASES))


# -- instrumented reads on the cassettes ----------------------------------------------------------


class _Tracked(dict[str, Any]):
    """A dict that records the paths of the keys read from it."""

    def __init__(self, data: dict[str, Any], path: str, log: set[str]) -> None:
        super().__init__({k: _track(v, _child(path, k), log) for k, v in data.items()})
        self._path = path
        self._log = log

    def get(self, key: Any, default: Any = None) -> Any:
        self._log.add(_child(self._path, key))
        return super().get(key, default)

    def __getitem__(self, key: Any) -> Any:
        self._log.add(_child(self._path, key))
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        self._log.add(_child(self._path, str(key)))
        return super().__contains__(key)


def _child(path: str, key: str) -> str:
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
        return f"{path}.{key}"
    return f"{path}[{json.dumps(key)}]"


def _track(value: Any, path: str, log: set[str]) -> Any:
    if isinstance(value, dict):
        return _Tracked(value, path, log)
    if isinstance(value, list):
        return [_track(v, path + "[]", log) for v in value]
    return value


def _frames() -> Iterator[str]:
    for cassette in load_all([REPO / "cassettes"]):
        for inter in cassette.interactions:
            if inter.content_type.startswith("text/event-stream"):
                yield from sse_data(inter.response_body)


def test_every_path_the_translator_reads_on_the_cassettes_is_listed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Feed every recorded frame to translators (chat, image mode, native tools) with
    instrumented JSON:
    each path read is a contract path of the translator or of the envelope reader."""
    log: set[str] = set()
    real_loads = orjson.loads

    def loads(data: Any) -> Any:
        return _track(real_loads(data), "$", log)

    monkeypatch.setattr(translate_mod.orjson, "loads", loads)
    frames = list(_frames())
    assert len(frames) > 50
    for kwargs in ({}, {"expect_image": True}, {"native_tools": True}):
        tr = translate_mod.Translator(**kwargs)  # type: ignore[arg-type]
        for data in frames:
            tr.feed(data)
            if tr.done:
                tr = translate_mod.Translator(**kwargs)  # type: ignore[arg-type]
    readers = ("proxy.qwen.translate", "proxy.qwen.envelope")
    listed = {f.path for f in contract.FIELDS if f.reader in readers}
    assert log, "nothing was read"
    assert "$.choices[].delta.extra.local_mcp" in log, "no native tool call was replayed"
    unlisted = {p for p in log if not any(path_matches(q, p) for q in listed)}
    assert unlisted == set(), sorted(unlisted)


def test_wildcard_paths() -> None:
    """A `.*` segment of a contract path stands for any one key, plain or quoted."""
    pattern = "$.choices[].delta.extra.local_mcp.*[].tool_name"
    assert path_matches(pattern, '$.choices[].delta.extra.local_mcp["★"][].tool_name')
    assert path_matches(pattern, "$.choices[].delta.extra.local_mcp.LocalTools[].tool_name")
    assert not path_matches(pattern, "$.choices[].delta.extra.local_mcp[].tool_name")
    assert path_is_ancestor('$.choices[].delta.extra.local_mcp["★"]', pattern)
    assert path_is_ancestor("$.choices[].delta.extra", pattern)
    assert not path_is_ancestor(pattern.replace(".*", ".x"), pattern)


def test_every_path_the_other_readers_read_on_the_cassettes_is_listed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same for whole-body readers: every recorded model list, task status, upload grant,
    t2v answer and error body goes through its reader with instrumented JSON objects."""
    from proxy.errors import ProxyError
    from proxy.qwen import files, media, models
    from proxy.qwen.envelope import classify_response

    log: set[str] = set()
    real_loads = orjson.loads
    monkeypatch.setattr(orjson, "loads", lambda data: _track(real_loads(data), "$", log))
    seen: set[str] = set()
    for cassette in load_all([REPO / "cassettes"]):
        for inter in cassette.interactions:
            if inter.stream is not None or not inter.content_type.startswith("application/json"):
                if "html" in inter.content_type:
                    classify_response(inter.status, inter.content_type, inter.body_bytes())
                continue
            body = json.loads(inter.response_body)
            path = inter.uri.split("?", 1)[0]
            if path.endswith("/api/models"):
                seen.add("models")
                models.parse_models(_track(body, "$", log))
            elif "/tasks/status/" in path:
                seen.add("tasks")
                media.task_state(_track(body, "$", log))
            elif path.endswith("/getstsToken"):
                seen.add("sts")
                files.parse_sts(_track(body, "$", log))
            elif path.endswith("/chat/completions"):
                if isinstance(body, dict) and (body.get("success") is False or "ret" in body):
                    seen.add("errors")
                    classify_response(inter.status, inter.content_type, inter.body_bytes())
                else:
                    seen.add("t2v")
                    try:
                        media.find_task_id(_track(body, "$", log))
                    except ProxyError:
                        pass
    assert seen >= {"models", "tasks", "sts", "errors", "t2v"}, seen
    readers = {"proxy.qwen.envelope", "proxy.qwen.models", "proxy.qwen.media", "proxy.qwen.files"}
    listed = {f.path for f in contract.FIELDS if f.reader in readers}
    assert log, "nothing was read"
    assert log - listed == set(), sorted(log - listed)
