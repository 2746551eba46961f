"""``qwen-proxy doctor``: failing checks tied to the drift that explains them.

Offline: the replay server serves ``cassettes/`` with the reasoning probe's answer replaced by a
drift version (``thinking_summary`` frames without ``extra.summary_thought``,
``recorder.synthetic_drift.probe_drift``); a real ``mitmdump`` records in front of it; the report
must name ``reasoning.thinking`` as failed and explain it by exactly that drift, and nothing the
doctor writes may hold the configured secrets.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from click.testing import CliRunner
from helpers import cassettes, fake_jwt

from proxy.cli import main
from proxy.config import Settings
from proxy.doctor import DoctorResult, explain, features_of, render_markdown, run_doctor
from recorder.replay import make_replay_app
from recorder.synthetic_drift import probe_drift

REPO = Path(__file__).resolve().parents[1]
SUMMARY_THOUGHT = "$.choices[].delta.extra.summary_thought"


def test_features_of_checks() -> None:
    """Check ids map to contract features by their longest prefix; unknown ones to all."""
    assert features_of("reasoning.thinking") == ("reasoning",)
    assert features_of("stream.usage") == ("usage",)
    assert features_of("stream.framing") == ("chat", "answer", "errors")
    assert features_of("errors.unknown_model") == ("models",)
    assert features_of("auth.wrong_key") == ()
    assert features_of("brand.new") is None
    assert features_of("anthropic.tools.stream") == ("tools", "answer", "chat", "errors")
    assert features_of("responses.errors") == ()


def test_every_check_of_the_harness_is_mapped() -> None:
    """Each check id the harness has today maps to features (no silent 'all features')."""
    from proxy.conformance import check_ids

    assert [i for i in check_ids() if features_of(i) is None] == []


def _item(severity: str, feature: str = "", **kw: Any) -> dict[str, Any]:
    base = {
        "severity": severity,
        "kind": "field_removed",
        "endpoint": "POST /api/v2/chat/completions [t2t]",
        "where": "delta:thinking_summary",
        "path": SUMMARY_THOUGHT,
        "message": "gone",
        "feature": feature,
        "failure": "reasoning_content will be empty" if feature else "",
    }
    return {**base, **kw}


def test_explain_ties_failures_to_their_features() -> None:
    """A failed reasoning check gets the reasoning drift, not the usage drift; passed checks
    get nothing; a gateway-only check is never blamed on the site."""
    results = [
        {
            "id": "reasoning.thinking",
            "status": "failed",
            "diagnosis": "no_reasoning",
            "message": "m",
        },
        {"id": "chat.en", "status": "passed", "diagnosis": "ok", "message": ""},
        {"id": "auth.wrong_key", "status": "failed", "diagnosis": "served", "message": "m"},
    ]
    drift = {
        "items": [
            _item("breaking", "reasoning"),
            _item("breaking", "usage", path="$.usage.output_tokens", kind="type_changed"),
            _item("info", kind="error_answer", where="envelope:RateLimited", path=""),
        ]
    }
    reasoning, auth = explain(results, drift)
    assert reasoning.check == "reasoning.thinking"
    assert [d["feature"] for d in reasoning.drift] == ["reasoning"]
    assert reasoning.verdict.startswith(
        "`reasoning.thinking` failed: `delta:thinking_summary` frames no longer carry "
        f"`{SUMMARY_THOUGHT}`"
    )
    assert "reasoning_content will be empty" in reasoning.verdict
    assert reasoning.upstream_errors == [
        "envelope:RateLimited (POST /api/v2/chat/completions [t2t])"
    ]
    assert auth.drift == [] and auth.upstream_errors == []
    assert "no drift" in auth.verdict


def test_a_renamed_phase_is_explained_by_missing_and_new_frames() -> None:
    """No breaking drift: a failed reasoning check names the reasoning frames that vanished and
    the new frame kind that appeared instead."""
    results = [{"id": "reasoning.thinking", "status": "failed", "diagnosis": "x", "message": "m"}]
    t2t = "POST /api/v2/chat/completions [t2t]"
    drift = {
        "items": [
            _item("info", kind="frame_type_unseen", where="delta:thinking_summary", path=""),
            _item("info", kind="frame_type_unseen", where="delta:answer", path=""),
            _item("notable", kind="frame_type_added", where="delta:thinking_v2", path=""),
        ]
    }
    (e,) = explain(results, drift)
    assert e.verdict == (
        "`reasoning.thinking` failed; no breaking drift, but: no `delta:thinking_summary` frames "
        f"any more; a new frame kind `delta:thinking_v2` on {t2t}"
    )


def test_markdown_report_lists_failures_first() -> None:
    """The Markdown report opens with the verdict and the explained failures."""
    checks = {"results": [{"id": "reasoning.thinking", "status": "failed", "required": True}]}
    drift = {
        "summary": {"breaking": 1, "notable": 0, "info": 0},
        "items": [_item("breaking", "reasoning")],
    }
    result = DoctorResult(
        checks=checks,
        drift=drift,
        drift_text="Drift: 1 breaking, 0 notable.",
        explanations=explain(checks["results"], drift),
        out_dir=Path("out"),
        cassettes=[],
        upstream="https://chat.qwen.ai",
    )
    text = render_markdown(result)
    assert text.startswith("# qwen-proxy doctor: problems found")
    assert text.index("`reasoning.thinking` failed") < text.index("## Drift")
    assert result.exit_code == 1


# -- offline, with a real recorder ---------------------------------------------------------------

MITMDUMP = Path(sys.executable).parent / "mitmdump"
needs_mitmdump = pytest.mark.skipif(
    not (MITMDUMP.exists() or shutil.which("mitmdump")), reason="mitmdump not installed"
)


async def _replay_with_drift() -> web.AppRunner:
    served = [c for c in cassettes() if c.name != "probe_thinking"] + [probe_drift()]
    runner = web.AppRunner(make_replay_app(served, speed=0))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner


@needs_mitmdump
async def test_doctor_names_the_failing_check_and_its_drift(tmp_path: Path) -> None:
    """The doctor, run against a replay server serving a drift cassette, reports
    reasoning.thinking failed because thinking_summary frames lost extra.summary_thought;
    the other required checks pass; nothing written holds the secrets."""
    token = fake_jwt("doctor-upstream")
    cookie_value = "ssxmod-doctor-cookie-0123456789"
    replay = await _replay_with_drift()
    try:
        port = int(replay.addresses[0][1])
        settings = Settings(
            upstream_url=f"http://127.0.0.1:{port}",
            tokens=[token],
            cookies=f"ssxmod_itna={cookie_value}",
            api_keys=["sk-user-key-abcdef123456"],
        )
        out = tmp_path / "doctor"
        result = await run_doctor(
            settings,
            out_dir=out,
            schema_dir=REPO / "schemas" / "upstream",
            skip=["images"],
            timeout_s=30,
            mitm_confdir=tmp_path / "mitm",
        )
    finally:
        await replay.cleanup()
    failed = {e.check: e for e in result.explanations}
    assert "reasoning.thinking" in failed, result.to_json()
    assert set(failed) == {"reasoning.thinking"}, {k: v.message for k, v in failed.items()}
    explanation = failed["reasoning.thinking"]
    assert [(d["kind"], d["path"], d["feature"]) for d in explanation.drift] == [
        ("field_removed", SUMMARY_THOUGHT, "reasoning")
    ]
    assert result.exit_code == 1
    report = (out / "doctor.md").read_text(encoding="utf-8")
    assert (
        "`reasoning.thinking` failed: `delta:thinking_summary` frames no longer carry "
        f"`{SUMMARY_THOUGHT}`" in report
    )
    data = json.loads((out / "doctor.json").read_text(encoding="utf-8"))
    assert data["explanations"][0]["check"] == "reasoning.thinking"
    assert data["drift"]["summary"]["breaking"] == 1
    recorded = sorted((out / "cassettes").glob("*.json"))
    assert recorded, "the recording was not written"
    for path in [*out.rglob("*")]:
        if path.is_file():
            text = path.read_text(encoding="utf-8", errors="replace")
            for secret in (token, cookie_value, "sk-user-key-abcdef123456", "sk-doctor-"):
                assert secret not in text, f"{secret[:8]}… in {path.name}"


def test_cli_doctor_usage_errors(tmp_path: Path) -> None:
    """Without baseline schemas the command is a usage error (exit 2), before starting anything."""
    res = CliRunner().invoke(
        main, ["doctor", "--schemas", str(tmp_path / "none"), "-o", str(tmp_path / "o")]
    )
    assert res.exit_code == 2
    assert "no baseline schemas" in res.output


@needs_mitmdump
def test_cli_doctor_end_to_end(tmp_path: Path) -> None:
    """`qwen-proxy doctor` (the command) against `qwen-record replay` serving the drift: exit 1,
    the verdict on stdout, the report files written."""
    import socket
    import subprocess
    import time

    served = tmp_path / "served"
    served.mkdir()
    for c in [c for c in cassettes() if c.name != "probe_thinking"] + [probe_drift()]:
        c.save(served / f"{c.name}.json")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    exe = str(Path(sys.executable).parent / "qwen-record")
    replay = subprocess.Popen(
        [exe, "replay", str(served), "--port", str(port), "--speed", "0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "replay server did not start"
                time.sleep(0.1)
        out = tmp_path / "report"
        res = CliRunner().invoke(
            main,
            [
                "doctor",
                "--upstream",
                f"http://127.0.0.1:{port}",
                "-o",
                str(out),
                "--schemas",
                str(REPO / "schemas" / "upstream"),
                "--skip",
                "images",
                "--timeout",
                "30",
                "--mitm-confdir",
                str(tmp_path / "mitm"),
            ],
            env={"QWEN_PROXY_TOKENS": "", "QWEN_PROXY_API_KEYS": ""},
        )
    finally:
        replay.terminate()
        replay.wait(10)
    assert res.exit_code == 1, res.output
    assert "reasoning.thinking failed: delta:thinking_summary frames no longer carry" in res.output
    assert (out / "doctor.md").is_file() and (out / "doctor.json").is_file()
