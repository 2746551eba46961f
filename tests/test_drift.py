"""Drift diagnosis on the real breakages of docs/protocol.md section 11 (recorder.synthetic_drift).

Each drift cassette is diffed against the schemas inferred from the healthy ``baseline_*``
cassettes, judged by the gateway's consumer contract (``schemas/gateway_contract.json``), and
the test states the exact items the diff must produce as ``(severity, kind, endpoint, where,
path)``; breaking items also name the feature that fails.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from recorder import synthetic_drift
from recorder.cassette import Cassette, load_all
from recorder.cli import main
from recorder.schema import Contract, DriftReport, by_key, diff, infer, load_schemas

REPO = Path(__file__).resolve().parents[1]
CONTRACT = Contract.load(REPO / "schemas" / "gateway_contract.json")
DRIFT_DIR = REPO / "tests" / "cassettes" / "drift"
UPSTREAM = REPO / "schemas" / "upstream"
T2T = "POST /api/v2/chat/completions [t2t]"
T2I = "POST /api/v2/chat/completions [t2i]"
NEW = "POST /api/v2/chats/new"

Item = tuple[str, str, str, str, str]


def _cassettes() -> dict[str, Cassette]:
    return {c.name: c for c in synthetic_drift.build_all()}


def _baseline() -> dict[str, dict]:
    cs = _cassettes()
    return by_key(infer([cs[n] for n in sorted(cs) if n.startswith("baseline_")]))


def _report(name: str, baseline: dict[str, dict] | None = None) -> DriftReport:
    new = by_key(infer([_cassettes()[name]]))
    return diff(_baseline() if baseline is None else baseline, new, CONTRACT)


def _items(report: DriftReport) -> set[Item]:
    return {(i.severity, i.kind, i.endpoint, i.where, i.path) for i in report.items}


EXPECTED: dict[str, set[Item]] = {
    # §11.7: output_schema dropped -> no frame has phase; every frame is delta:<none>.
    "drift_phase_missing": {
        ("info", "field_removed", T2T, "request", "$.messages[].feature_config.output_schema"),
        (
            "breaking",
            "field_removed",
            T2T,
            "delta:<none> vs known delta:*",
            "$.choices[].delta.phase",
        ),
        ("notable", "frame_type_added", T2T, "delta:<none>", ""),
        ("info", "frame_type_unseen", T2T, "delta:answer", ""),
        ("info", "frame_type_unseen", T2T, "delta:think", ""),
    },
    # §11.6: thinking_summary snapshots appear (new phase value, new extra object).
    "drift_thinking_summary": {
        ("info", "field_added", T2T, "request", "$.messages[].feature_config.thinking_format"),
        ("notable", "frame_type_added", T2T, "delta:thinking_summary", ""),
        (
            "notable",
            "field_added",
            T2T,
            "delta:thinking_summary vs known delta:*",
            "$.choices[].delta.extra",
        ),
        (
            "notable",
            "enum_value_added",
            T2T,
            "delta:thinking_summary vs known delta:*",
            "$.choices[].delta.phase",
        ),
        ("info", "frame_type_unseen", T2T, "delta:think", ""),
    },
    # §11.4 / §6.4 (1): a t2i turn answered with an error envelope instead of SSE.
    "drift_t2i_envelope": {
        ("breaking", "content_type_changed", T2I, "", ""),
        ("notable", "frame_type_added", T2I, "envelope:RateLimited", ""),
        ("info", "error_answer", T2I, "envelope:RateLimited", ""),
    },
    # §11.8: the baxia JSON body and the slider page instead of SSE.
    "drift_waf": {
        ("breaking", "content_type_changed", T2T, "", ""),
        ("notable", "frame_type_added", T2T, "waf", ""),
        ("notable", "frame_type_added", T2T, "html", ""),
        ("info", "error_answer", T2T, "waf", ""),
        ("info", "error_answer", T2T, "html", ""),
    },
    # §11.3: stream:false answered with Bad_Request.
    "drift_stream_false": {
        ("breaking", "content_type_changed", T2T, "", ""),
        ("info", "enum_value_added", T2T, "request", "$.stream"),
        ("notable", "frame_type_added", T2T, "envelope:Bad_Request", ""),
        ("info", "error_answer", T2T, "envelope:Bad_Request", ""),
    },
    # §11.11: the token expired; chats/new answers HTTP 401.
    "drift_token_expired": {
        ("breaking", "status_added", NEW, "", ""),
        ("notable", "frame_type_added", NEW, "envelope:Unauthorized", ""),
        ("info", "error_answer", NEW, "envelope:Unauthorized", ""),
    },
    # An error code nobody knows: breaking, since users would get a generic 502.
    "drift_unknown_code": {
        ("breaking", "content_type_changed", T2T, "", ""),
        ("breaking", "error_code_unknown", T2T, "envelope:Account_Frozen", "$.data.code"),
        ("notable", "frame_type_added", T2T, "envelope:Account_Frozen", ""),
        ("info", "error_answer", T2T, "envelope:Account_Frozen", ""),
    },
}

FEATURES: dict[str, set[str]] = {
    "drift_phase_missing": {"answer"},
    "drift_thinking_summary": set(),
    "drift_t2i_envelope": {"answer"},
    "drift_waf": {"answer"},
    "drift_stream_false": {"answer"},
    "drift_token_expired": {"chat"},
    "drift_unknown_code": {"answer", "errors"},
}
"""The features each breakage's breaking items name."""


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_breakage_produces_exact_diff(name: str) -> None:
    """Each §11 breakage, diffed against the healthy baseline, yields exactly the listed items."""
    assert _items(_report(name)) == EXPECTED[name]


@pytest.mark.parametrize(
    ("name", "exit_code"),
    [
        ("drift_phase_missing", 2),
        ("drift_thinking_summary", 1),
        ("drift_t2i_envelope", 2),
        ("drift_waf", 2),
        ("drift_stream_false", 2),
        ("drift_token_expired", 2),
        ("drift_unknown_code", 2),
    ],
)
def test_breakage_exit_code(name: str, exit_code: int) -> None:
    """Exit codes: 2 when anything breaks, 1 for notable drift only."""
    assert _report(name).exit_code == exit_code


@pytest.mark.parametrize("name", sorted(FEATURES))
def test_breaking_items_name_feature_and_failure(name: str) -> None:
    """Every breaking item says which feature fails and how; nothing else does."""
    report = _report(name)
    assert {i.feature for i in report.breaking} == FEATURES[name]
    assert all(i.failure for i in report.breaking)
    assert not [i for i in report.items if i.severity != "breaking" and i.failure]


def test_summary_thought_gone_breaks_reasoning() -> None:
    """thinking_summary frames without extra.summary_thought: reasoning_content will be empty."""
    cs = _cassettes()
    names = [n for n in sorted(cs) if n.startswith("baseline_")] + ["drift_thinking_summary"]
    baseline = by_key(infer([cs[n] for n in names]))
    report = _report("drift_summary_thought", baseline)
    assert _items(report) == {
        (
            "breaking",
            "field_removed",
            T2T,
            "delta:thinking_summary",
            "$.choices[].delta.extra.summary_thought",
        ),
        ("info", "frame_type_unseen", T2T, "delta:think", ""),
    }
    (item,) = report.breaking
    assert item.feature == "reasoning"
    assert item.failure == "reasoning_content will be empty"


def test_without_contract_request_side_is_still_info() -> None:
    """With no contract the severities are structural, but the request side stays info."""
    new = by_key(infer([_cassettes()["drift_stream_false"]]))
    report = diff(_baseline(), new, None)
    request = [i for i in report.items if i.where == "request"]
    assert request and all(i.severity == "info" for i in request)


def test_the_default_contract_is_the_checkout_file() -> None:
    """Without a contract argument the checkout's schemas/gateway_contract.json judges."""
    new = by_key(infer([_cassettes()["drift_unknown_code"]]))
    assert _items(diff(_baseline(), new)) == _items(diff(_baseline(), new, CONTRACT))
    assert _items(diff(_baseline(), new)) != _items(diff(_baseline(), new, None))


def test_content_type_item_names_the_types() -> None:
    """The t2i content-type item says what was known and what came instead."""
    (item,) = [i for i in _report("drift_t2i_envelope").items if i.kind == "content_type_changed"]
    assert item.before == ("text/event-stream",)
    assert item.after == ("application/json",)


def test_enum_item_names_the_new_value() -> None:
    """The thinking_summary phase item names the new value and the known ones."""
    (item,) = [i for i in _report("drift_thinking_summary").items if i.kind == "enum_value_added"]
    assert item.after == ('"thinking_summary"',)
    assert item.before == ('"answer"', '"think"')


def test_baseline_against_itself_has_no_drift() -> None:
    """The healthy baseline cassettes show no drift against their own schemas."""
    cs = _cassettes()
    report = diff(
        _baseline(), by_key(infer([c for n, c in cs.items() if "baseline" in n])), CONTRACT
    )
    assert report.items == []
    assert report.exit_code == 0


def test_phase_missing_breaks_against_committed_schemas() -> None:
    """Against schemas/upstream, frames without phase are still a breaking drift."""
    report = _report("drift_phase_missing", load_schemas(UPSTREAM))
    assert ("breaking", "field_removed") in {(i.severity, i.kind) for i in report.items}
    assert any(i.path == "$.choices[].delta.phase" for i in report.breaking)
    assert report.exit_code == 2


def test_t2i_envelope_breaks_against_committed_schemas() -> None:
    """Against schemas/upstream, a t2i turn answered by an envelope is breaking when t2i is known
    there only as a stream (content type changed) or not at all (a new endpoint answering an
    error); once the baseline itself records t2i envelopes (cassettes/media_t2i_ratelimited), it
    is still reported, as a known error answer."""
    schemas = load_schemas(UPSTREAM)
    report = _report("drift_t2i_envelope", schemas)
    known = schemas.get(T2I, {}).get("x-qwen-endpoint", {}).get("content_types", [])
    if any("json" in ct for ct in known):
        assert ("info", "error_answer") in {(i.severity, i.kind) for i in report.items}
        return
    kinds = {i.kind for i in report.breaking if i.endpoint == T2I}
    assert kinds & {"content_type_changed", "endpoint_added_error"}


def test_cassettes_dir_has_no_drift_against_committed_schemas() -> None:
    """Diffing cassettes/ against the committed schemas/upstream/ reports no drift (exit 0)."""
    report = diff(load_schemas(UPSTREAM), by_key(infer(load_all([REPO / "cassettes"]))), CONTRACT)
    assert report.breaking == [] and report.notable == [], (
        report.text() + "\nIf cassettes/ changed on purpose, run: "
        "qwen-record schema cassettes/ -o schemas/upstream/"
    )
    assert report.exit_code == 0


def test_drift_fixtures_match_their_builder() -> None:
    """tests/cassettes/drift/ holds exactly what recorder.synthetic_drift builds, byte for byte."""
    built = {f"{c.name}.json": c.dumps() for c in synthetic_drift.build_all()}
    on_disk = {p.name: p.read_text(encoding="utf-8") for p in DRIFT_DIR.glob("*.json")}
    assert on_disk == built, "run: python -m recorder.synthetic_drift tests/cassettes/drift"


def test_drift_fixtures_are_synthetic_with_sections() -> None:
    """Every drift fixture says it is synthetic and cites docs/protocol.md sections (11 for
    drift)."""
    assert len([c for c in synthetic_drift.build_all() if c.name.startswith("drift_")]) >= 6
    for c in synthetic_drift.build_all():
        assert c.provenance.kind == "synthetic"
        assert c.provenance.protocol_sections
        if c.name.startswith("drift_"):
            assert "11" in c.provenance.protocol_sections


def test_diff_cli_text_json_and_exit_codes(tmp_path: Path) -> None:
    """`qwen-record diff` prints a readable report or JSON and exits 0/1/2 by severity."""
    runner = CliRunner()
    schemas = tmp_path / "schemas"
    baseline = sorted(str(p) for p in DRIFT_DIR.glob("baseline_*.json"))
    res = runner.invoke(main, ["schema", *baseline, "-o", str(schemas)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(
        main,
        [
            "diff",
            str(DRIFT_DIR / "drift_phase_missing.json"),
            "--schemas",
            str(schemas),
            "--contract",
            str(REPO / "schemas" / "gateway_contract.json"),
        ],
    )
    assert res.exit_code == 2
    assert res.output.startswith("Drift: 1 breaking, 1 notable.")
    assert "$.choices[].delta.phase" in res.output
    res = runner.invoke(
        main,
        [
            "diff",
            str(DRIFT_DIR / "drift_thinking_summary.json"),
            "--schemas",
            str(schemas),
            "--contract",
            str(REPO / "schemas" / "gateway_contract.json"),
            "--json",
        ],
    )
    assert res.exit_code == 1
    import json

    data = json.loads(res.output)
    assert data["exit_code"] == 1
    assert data["summary"] == {"breaking": 0, "notable": 3, "info": 2}
    res = runner.invoke(main, ["diff", *baseline, "--schemas", str(schemas)])
    assert res.exit_code == 0
    assert res.output == "No drift.\n"


def test_diff_cli_input_errors_exit_3(tmp_path: Path) -> None:
    """Unknown options and unreadable schema directories exit 3, not a drift code."""
    runner = CliRunner()
    res = runner.invoke(main, ["diff", "--bogus", str(DRIFT_DIR)])
    assert res.exit_code == 3
    res = runner.invoke(main, ["diff", str(DRIFT_DIR), "--schemas", str(tmp_path / "none")])
    assert res.exit_code == 3
    assert "no such schema directory" in res.output


def test_tool_namespace_is_any_key_but_the_call_is_a_dependency() -> None:
    """local_mcp's namespace key may change (★ -> LocalTools): not breaking; a call that loses
    its tool_name is."""
    from recorder.synthetic_drift import mutate_frames

    tools = next(c for c in load_all([REPO / "cassettes"]) if c.name == "tool_local_tool")
    baseline = by_key(infer([tools]))

    def rename(frame: dict) -> dict:
        for choice in frame.get("choices", []):
            mcp = (choice["delta"].get("extra") or {}).get("local_mcp")
            if mcp:
                choice["delta"]["extra"]["local_mcp"] = {"LocalTools": next(iter(mcp.values()))}
        return frame

    def unnamed(frame: dict) -> dict:
        for choice in frame.get("choices", []):
            for calls in ((choice["delta"].get("extra") or {}).get("local_mcp") or {}).values():
                for call in calls:
                    call.pop("tool_name", None)
        return frame

    args = {"name": "x", "description": "synthetic", "sections": ("5.6",)}
    renamed = diff(baseline, by_key(infer([mutate_frames(tools, rename, **args)])), CONTRACT)
    assert renamed.breaking == [], renamed.text()
    gone = diff(baseline, by_key(infer([mutate_frames(tools, unnamed, **args)])), CONTRACT)
    assert [(i.kind, i.feature) for i in gone.breaking] == [("field_removed", "tools")], gone.text()
