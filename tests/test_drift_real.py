"""Drift on real traffic: the published captures (docs/protocol.md §14 [S3], read from
../shared/protocol/samples or $QWEN_SHARED_DIR/protocol/samples), imported with the importer and
diffed against schemas/upstream/ under the gateway's contract, give no breaking finding; and
mutations of those captures, each standing for one kind of site change, get the right severity.

Skipped cleanly when they are absent (the ``samples_dir`` fixture). Also here: ``qwen-record
diff OLD NEW`` on two recordings without schemas.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from recorder.cassette import Cassette, Interaction
from recorder.cli import main
from recorder.importers import build_cassette, import_http_pair
from recorder.redact import Redactor
from recorder.schema import Contract, DriftReport, by_key, diff, infer, load_schemas

REPO = Path(__file__).resolve().parents[1]
CONTRACT_FILE = REPO / "schemas" / "gateway_contract.json"
T2T = "POST /api/v2/chat/completions [t2t]"
MODELS = "GET /api/models"
NEW = "POST /api/v2/chats/new"

PAIRS = (
    ("request_stream_t2t_logged_in_2025-10-26.http", "sse_t2t_answer_no_thinking_2025-10-26.txt"),
    (
        "request_nonstream_t2t_guest_2025-10-26.http",
        "completion_nonstream_response_2025-10-26.json",
    ),
    ("chats_new_request_guest_2025-10-26.http", "chats_new_response_2025-10-26.json"),
    ("models_request_guest_2025-10-26.http", "models_list_2025-10-26.json"),
)
"""Every request/response pair among the captures."""

Mutation = Callable[[str, str], str]
"""``(response file name, its text) -> new text``."""


def _import(samples: Path, tmp: Path, mutate: Mutation | None = None) -> Cassette:
    redactor = Redactor()
    inters: list[Interaction] = []
    for req, resp in PAIRS:
        path = samples / resp
        if mutate is not None:
            text = mutate(resp, path.read_text(encoding="utf-8"))
            path = tmp / resp
            path.write_text(text, encoding="utf-8")
        inters.append(import_http_pair(samples / req, path, redactor=redactor))
    return build_cassette(
        name="real", description="real captures", interactions=inters, sources=[samples]
    )


def _report(samples: Path, tmp: Path, mutate: Mutation | None = None) -> DriftReport:
    new = by_key(infer([_import(samples, tmp, mutate)]))
    return diff(load_schemas(REPO / "schemas" / "upstream"), new, Contract.load(CONTRACT_FILE))


def test_real_captures_have_no_breaking_drift(samples_dir: Path, tmp_path: Path) -> None:
    """Healthy real traffic is not an alarm: 0 breaking; request differences are info."""
    report = _report(samples_dir, tmp_path)
    assert report.breaking == [], report.text()
    assert all(i.severity == "info" for i in report.items if i.where == "request")
    assert {(i.endpoint, i.path) for i in report.info} >= {
        (MODELS, "$.data[].info.meta.max_generation_length"),
        (T2T, "$.version"),
    }


def test_import_cli_then_diff_cli_agree(samples_dir: Path, tmp_path: Path) -> None:
    """`qwen-record import` then `qwen-record diff` (from the repo root) exits 1: notable only."""
    out = tmp_path / "real.json"
    runner = CliRunner()
    files = [str(samples_dir / f) for pair in PAIRS for f in pair]
    res = runner.invoke(main, ["import", *files, "-o", str(out)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(
        main,
        [
            "diff",
            str(out),
            "--schemas",
            str(REPO / "schemas" / "upstream"),
            "--contract",
            str(CONTRACT_FILE),
        ],
    )
    assert res.exit_code == 1, res.output
    assert res.output.startswith("Drift: 0 breaking")


# -- mutations -----------------------------------------------------------------------------------


def _sse(fn: Callable[[dict[str, Any]], dict[str, Any] | str]) -> Mutation:
    """Apply ``fn`` to every JSON frame of the SSE capture (a str result replaces the data)."""

    def mutate(name: str, text: str) -> str:
        if not name.startswith("sse_"):
            return text
        out = []
        for event in text.split("\n\n"):
            if not event.startswith("data: "):
                out.append(event)
                continue
            new = fn(json.loads(event[len("data: ") :]))
            out.append("data: " + (new if isinstance(new, str) else json.dumps(new)))
        return "\n\n".join(out)

    return mutate


def _delta(fn: Callable[[dict[str, Any]], None]) -> Mutation:
    def frame(obj: dict[str, Any]) -> dict[str, Any]:
        if "choices" in obj:
            fn(obj["choices"][0]["delta"])
        return obj

    return _sse(frame)


def _models(fn: Callable[[dict[str, Any]], None]) -> Mutation:
    def mutate(name: str, text: str) -> str:
        if not name.startswith("models_list"):
            return text
        obj = json.loads(text)
        for model in obj["data"]:
            fn(model)
        return json.dumps(obj)

    return mutate


def _json_file(prefix: str, fn: Callable[[dict[str, Any]], None]) -> Mutation:
    def mutate(name: str, text: str) -> str:
        if not name.startswith(prefix):
            return text
        obj = json.loads(text)
        fn(obj)
        return json.dumps(obj)

    return mutate


def _usage_string(obj: dict[str, Any]) -> dict[str, Any]:
    if "usage" in obj:
        obj["usage"]["output_tokens"] = str(obj["usage"]["output_tokens"])
    return obj


def _first_not_json(obj: dict[str, Any]) -> dict[str, Any] | str:
    return "{not json" if "response.created" in obj else obj


MUTATIONS: dict[str, tuple[Mutation, set[tuple[str, str, str]], set[str]]] = {
    # name: (mutation, breaking (kind, endpoint, path) expected, notable kinds expected)
    "answer content gone": (
        _delta(lambda d: d.pop("content", None)),
        {("field_removed", T2T, "$.choices[].delta.content")},
        set(),
    ),
    "phase gone": (
        _delta(lambda d: d.pop("phase", None)),
        {("field_removed", T2T, "$.choices[].delta.phase")},
        {"frame_type_added"},
    ),
    "phase renamed": (
        _delta(lambda d: d.update(phase="text")),
        {("value_gone", T2T, "$.choices[].delta.phase")},
        {"frame_type_added", "enum_value_added"},
    ),
    "status renamed": (
        _delta(lambda d: d.update(status="done") if d["status"] == "finished" else None),
        {("value_gone", T2T, "$.choices[].delta.status")},
        {"enum_value_added"},
    ),
    "usage gone": (
        _sse(lambda o: {k: v for k, v in o.items() if k != "usage"}),
        {("field_removed", T2T, "$.usage")},
        set(),
    ),
    "choices renamed": (
        _sse(lambda o: {"choice": o.pop("choices"), **o} if "choices" in o else o),
        {("value_gone", T2T, "$.choices[].delta.phase")},
        set(),  # the frames are now of kind "json", which the non-stream capture already has
    ),
    "usage as string": (
        _sse(_usage_string),
        {("type_changed", T2T, "$.usage.output_tokens")},
        set(),
    ),
    "frame not JSON": (_sse(_first_not_json), {("unparseable", T2T, "")}, set()),
    "new delta field": (_delta(lambda d: d.update(extra={"x": 1})), set(), {"field_added"}),
    "unread model field gone": (
        _models(lambda m: m["info"]["meta"].pop("max_context_length")),
        set(),
        set(),
    ),
    "model chat_type gone": (
        _models(lambda m: m["info"]["meta"].pop("chat_type")),
        {("field_removed", MODELS, "$.data[].info.meta.chat_type")},
        set(),
    ),
    "model id a number": (
        _models(lambda m: m.update(id=7)),
        {("type_changed", MODELS, "$.data[].id")},
        set(),
    ),
    "chat id a number": (
        _json_file("chats_new_response", lambda o: o["data"].update(id=42)),
        {("type_changed", NEW, "$.data.id")},
        set(),
    ),
}


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_mutated_real_capture_gets_the_right_severity(
    samples_dir: Path, tmp_path: Path, name: str
) -> None:
    """Each mutation of the real captures is diagnosed at the right severity; breaking items
    name a feature and a failure."""
    mutate, breaking, notable = MUTATIONS[name]
    base = _report(samples_dir, tmp_path / "base")
    report = _report(samples_dir, tmp_path, mutate)
    assert {(i.kind, i.endpoint, i.path) for i in report.breaking} == breaking, report.text()
    assert all(i.feature and i.failure for i in report.breaking)
    before = {(i.kind, i.endpoint, i.where, i.path) for i in base.notable}
    fresh = {i.kind for i in report.notable if (i.kind, i.endpoint, i.where, i.path) not in before}
    assert fresh == notable, report.text()


# -- diff OLD NEW ----------------------------------------------------------------------------------


def test_diff_two_recordings_without_schemas(tmp_path: Path) -> None:
    """`qwen-record diff OLD NEW` compares two cassette folders/files; no schema directory."""
    drift = REPO / "tests" / "cassettes" / "drift"
    old = tmp_path / "old"
    old.mkdir()
    for p in drift.glob("baseline_*.json"):
        (old / p.name).write_text(p.read_text(encoding="utf-8"), encoding="utf-8")
    runner = CliRunner()
    args = ["--contract", str(CONTRACT_FILE)]
    res = runner.invoke(main, ["diff", str(old), str(drift / "drift_waf.json"), *args])
    assert res.exit_code == 2, res.output
    assert "content_type_changed" in res.output and "-> answer:" in res.output
    res = runner.invoke(main, ["diff", str(old), str(old), *args])
    assert (res.exit_code, res.output) == (0, "No drift.\n")
    res = runner.invoke(
        main, ["diff", str(old / "baseline_t2t.json"), str(drift / "drift_stream_false.json")]
    )
    assert res.exit_code == 2


def test_diff_old_may_be_a_schema_folder(tmp_path: Path) -> None:
    """With two paths, an OLD that is a schema folder is used as the baseline schemas."""
    runner = CliRunner()
    res = runner.invoke(
        main,
        [
            "diff",
            str(REPO / "schemas" / "upstream"),
            str(REPO / "cassettes"),
            "--contract",
            str(CONTRACT_FILE),
        ],
    )
    assert res.exit_code == 0, res.output
    assert res.output.startswith("No drift.")


def test_missing_contract_warns_and_falls_back(tmp_path: Path) -> None:
    """Without the contract file the diff still runs, with structural severities and a warning."""
    drift = REPO / "tests" / "cassettes" / "drift"
    res = CliRunner().invoke(
        main,
        [
            "diff",
            str(drift / "baseline_t2t.json"),
            str(drift / "baseline_t2t.json"),
            "--contract",
            str(tmp_path / "missing.json"),
        ],
    )
    assert res.exit_code == 0
    assert "not found" in res.output
