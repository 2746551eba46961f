"""``qwen-proxy doctor``: from "it broke" to the cause in one command.

One run: the recorder addon (``mitmdump -s recorder/addon.py``, reverse mode) starts in front of
the configured upstream; a gateway instance (this proxy, with the user's settings) starts on
loopback with that recorder as its upstream; the conformance probes (:mod:`proxy.conformance`)
run against the gateway; the recording is written as cassettes, inferred into schemas and
diffed against the baseline (``schemas/upstream/``) under the gateway's consumer contract
(:mod:`proxy.qwen.contract`); and one report ties each failing check to the drift that explains
it (:func:`explain`).

Layout of the output folder::

    <out>/cassettes/doctor-*.json   the recording, one cassette (redacted by the addon)
    <out>/doctor.md                 the report
    <out>/doctor.json               the same as JSON (checks, drift, explanations)

Secrets: the addon redacts tokens, cookies, anti-bot values and signed-URL keys before anything
reaches a cassette; the report holds schema facts and check results; both report files also go
through :class:`recorder.redact.Redactor` and have every configured secret (tokens, cookies,
API keys) replaced before they are written.

Like offline mode, this diagnostic tool imports ``recorder`` (the schema diff and the redactor).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import signal
import socket
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from proxy.config import Settings

__all__ = [
    "CHECK_FEATURES",
    "DoctorError",
    "DoctorResult",
    "Explanation",
    "explain",
    "features_of",
    "render_markdown",
    "run_doctor",
]

CHECK_FEATURES: dict[str, tuple[str, ...]] = {
    "models": ("models",),
    "auth": (),
    "chat": ("chat", "answer", "errors"),
    "stream.usage": ("usage",),
    "stream": ("chat", "answer", "errors"),
    "reasoning": ("reasoning",),
    "images": ("images", "uploads", "chat", "errors"),
    "errors.unknown_model": ("models",),
    "errors": (),
    "sources": ("sources",),
    "search": ("sources",),
    "video": ("video",),
    "tools": ("tools", "answer", "chat", "errors"),
    "wire": (),
    "profile": ("chat", "answer", "errors"),
    "anthropic": ("chat", "answer", "errors"),
    "anthropic.tools": ("tools", "answer", "chat", "errors"),
    "anthropic.errors": (),
    "responses": ("chat", "answer", "errors"),
    "responses.tools": ("tools", "answer", "chat", "errors"),
    "responses.errors": (),
}
"""Check-id prefixes (longest wins) and the contract features a failing check can come from
(``proxy/qwen/contract.py`` FEATURES); ``()`` for checks of the gateway alone (auth, its own
400s, the OpenAI wire shape). Unknown checks are tied to every feature."""

FEATURE_FRAMES: dict[str, tuple[str, ...]] = {
    "answer": ("delta:answer",),
    "reasoning": ("delta:think", "delta:thinking_summary"),
    "sources": ("delta:web_search",),
    "images": ("delta:image_gen", "delta:image_edit", "delta:image_gen_tool"),
    "tools": ("delta:local_tool",),
}
"""SSE frame kinds that carry each feature: when a failing check's frames are missing from the
recording, that is part of its explanation."""

READY_DEADLINE_S = 30.0


class DoctorError(RuntimeError):
    """The doctor could not run (no mitmdump, no baseline schemas, recorder did not start)."""


def features_of(check_id: str) -> tuple[str, ...] | None:
    """The features a check exercises, or ``None`` when the check is unknown (all features)."""
    best: str | None = None
    for prefix in CHECK_FEATURES:
        if (check_id == prefix or check_id.startswith(prefix + ".")) and (
            best is None or len(prefix) > len(best)
        ):
            best = prefix
    return None if best is None else CHECK_FEATURES[best]


@dataclass
class Explanation:
    """A failing check and what explains it: ``drift`` (breaking items of its features),
    ``related`` (notable drift on the endpoints it uses), ``upstream_errors`` (error answers
    chat.qwen.ai gave during the run)."""

    check: str
    status: str
    diagnosis: str
    message: str
    drift: list[dict[str, Any]] = field(default_factory=list)
    related: list[dict[str, Any]] = field(default_factory=list)
    upstream_errors: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        """One sentence: what explains the failure, or that drift does not."""
        if self.drift:
            first = self.drift[0]
            what = _describe(first)
            more = f" (+{len(self.drift) - 1} more)" if len(self.drift) > 1 else ""
            return f"`{self.check}` failed: {what}{more}"
        if self.upstream_errors:
            return f"`{self.check}` failed while chat.qwen.ai answered errors: " + ", ".join(
                self.upstream_errors
            )
        if self.related:
            shown = "; ".join(_describe(i) for i in self.related[:3])
            return f"`{self.check}` failed; no breaking drift, but: {shown}"
        return f"`{self.check}` failed; the recording shows no drift that explains it"

    def to_json(self) -> dict[str, Any]:
        """The explanation as a JSON object."""
        return {
            "check": self.check,
            "status": self.status,
            "diagnosis": self.diagnosis,
            "message": self.message,
            "verdict": self.verdict,
            "drift": self.drift,
            "related": self.related,
            "upstream_errors": self.upstream_errors,
        }


def _describe(item: Mapping[str, Any]) -> str:
    where = item.get("where") or ""
    path = item.get("path") or ""
    frame = where.split(" vs ", 1)[0]
    subject = f"`{frame}` frames" if frame.startswith(("delta:", "response.")) else "answers"
    kind = item["kind"]
    if kind == "frame_type_unseen":
        return f"no `{frame}` frames any more"
    if kind == "frame_type_added":
        return f"a new frame kind `{frame}` on {item['endpoint']}"
    if kind == "enum_value_added" and path:
        return f"`{path}` has a new value {', '.join(item.get('after') or [])}"
    if kind == "field_removed" and path:
        text = f"{subject} no longer carry `{path}`"
    elif kind == "required_missing" and path:
        text = f"{subject} do not always carry `{path}`"
    elif kind == "type_changed" and path:
        text = f"`{path}` in {subject} changed type ({item['message']})"
    else:
        text = f"{kind}: {item['message']}"
    if item.get("failure"):
        text += f" ({item['feature']}: {item['failure']})"
    return text


def explain(results: Sequence[Mapping[str, Any]], drift: Mapping[str, Any]) -> list[Explanation]:
    """Tie each failed check (``results``: the conformance report's ``results``) to drift
    (``drift``: ``DriftReport.to_json()``): breaking items of the features the check exercises
    (:func:`features_of`), else notable items on chat endpoints, plus the error answers seen."""
    items = list(drift.get("items", []))
    errors = sorted(
        {f"{i['where']} ({i['endpoint']})" for i in items if i["kind"] == "error_answer"}
    )
    out: list[Explanation] = []
    for r in results:
        if r.get("status") not in ("failed", "error"):
            continue
        feats = features_of(str(r["id"]))
        breaking = [
            i
            for i in items
            if i["severity"] == "breaking" and (feats is None or i.get("feature") in feats)
        ]
        related: list[dict[str, Any]] = []
        if not breaking and feats != ():
            frames = {f for feat in (feats or FEATURE_FRAMES) for f in FEATURE_FRAMES.get(feat, ())}
            related = [
                i for i in items if i["kind"] == "frame_type_unseen" and i["where"] in frames
            ]
            related += [i for i in items if i["severity"] == "notable"][:5]
        out.append(
            Explanation(
                check=str(r["id"]),
                status=str(r["status"]),
                diagnosis=str(r.get("diagnosis", "")),
                message=str(r.get("message", "")),
                drift=breaking,
                related=related,
                upstream_errors=errors if feats != () else [],
            )
        )
    return out


@dataclass
class DoctorResult:
    """What one run found: the conformance report (JSON object), the drift report (JSON object)
    and its text, the explanations, where files went, and the exit code (0: every required
    check passed and no breaking drift; 1 otherwise)."""

    checks: dict[str, Any]
    drift: dict[str, Any]
    drift_text: str
    explanations: list[Explanation]
    out_dir: Path
    cassettes: list[Path]
    upstream: str

    @property
    def exit_code(self) -> int:
        """0 when healthy, 1 when a required check failed or drift is breaking."""
        failed = any(
            r.get("required") and r.get("status") in ("failed", "error")
            for r in self.checks.get("results", [])
        )
        return 1 if failed or self.drift.get("summary", {}).get("breaking") else 0

    def to_json(self) -> dict[str, Any]:
        """The whole result as one JSON object (``doctor.json``)."""
        return {
            "upstream": self.upstream,
            "exit_code": self.exit_code,
            "explanations": [e.to_json() for e in self.explanations],
            "drift": self.drift,
            "checks": self.checks,
            "cassettes": [p.name for p in self.cassettes],
        }


def render_markdown(result: DoctorResult) -> str:
    """The report: verdict, each failing check with its explanation, the drift, the checks."""
    verdict = "healthy" if result.exit_code == 0 else "problems found"
    summary = result.drift.get("summary", {})
    lines = [
        f"# qwen-proxy doctor: {verdict}",
        "",
        f"- upstream: {result.upstream}",
        f"- recording: {len(result.cassettes)} cassette(s) in `{result.out_dir / 'cassettes'}`",
        f"- drift: {summary.get('breaking', 0)} breaking, {summary.get('notable', 0)} notable, "
        f"{summary.get('info', 0)} info",
        "",
        "## Failing checks and what explains them",
        "",
    ]
    if not result.explanations:
        lines.append("Every check passed or was skipped.")
    for e in result.explanations:
        lines.append(f"- {e.verdict}")
        lines.append(f"  - check said ({e.diagnosis}): {e.message}")
        for item in e.drift[1:]:
            lines.append(f"  - also: {_describe(item)}")
        for item in e.related[3:]:
            lines.append(f"  - also: {_describe(item)}")
    lines += ["", "## Drift against the baseline schemas", "", "```", result.drift_text, "```"]
    lines += ["", "## Checks", "", "| check | status | diagnosis |", "|---|---|---|"]
    for r in result.checks.get("results", []):
        lines.append(f"| `{r['id']}` | {r['status']} | {r.get('diagnosis', '')} |")
    return "\n".join(lines) + "\n"


# -- the run -------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _mitmdump() -> str | None:
    beside = Path(sys.executable).parent / "mitmdump"
    if beside.exists():
        return str(beside)
    return shutil.which("mitmdump")


def _addon() -> Path:
    import recorder

    return Path(recorder.__file__).resolve().parent / "addon.py"


class _Recorder:
    """mitmdump with the recorder addon in reverse mode in front of ``upstream``."""

    def __init__(self, upstream: str, out_dir: Path, confdir: Path | None, run_name: str) -> None:
        exe = _mitmdump()
        if exe is None:
            raise DoctorError(
                "mitmdump not found; install the recorder extra: "
                "pip install 'qwen-gateway[recorder]'"
            )
        self.port = _free_port()
        host = urlsplit(upstream).hostname or "chat.qwen.ai"
        self.log_path = out_dir / "mitmdump.log"
        self.cmd = [
            exe,
            "-s",
            str(_addon()),
            "--mode",
            f"reverse:{upstream.rstrip('/')}",
            "--listen-host",
            "127.0.0.1",
            "-p",
            str(self.port),
            "--set",
            f"qwen_cassette_dir={out_dir / 'cassettes'}",
            "--set",
            f"qwen_hosts={host}",
            "--set",
            "qwen_cassette_mode=run",
            "--set",
            f"qwen_run_name={run_name}",
        ]
        # The gateway builds Origin/Referer from its upstream URL, the recorder's loopback
        # address; the site must see its own origin, as when the gateway talks to it directly.
        parts = urlsplit(upstream)
        origin = f"{parts.scheme}://{parts.netloc}"
        self.cmd += [
            "--set",
            f"modify_headers=/~q/Origin/{origin}",
            "--set",
            f"modify_headers=/~q/Referer/{origin}/",
        ]
        if confdir is not None:
            self.cmd += ["--set", f"confdir={confdir}"]
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self.log_path.open("wb") as log:
            self.proc = await asyncio.create_subprocess_exec(
                *self.cmd, stdout=log, stderr=asyncio.subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + READY_DEADLINE_S
        while True:
            text = self.log_path.read_text(errors="replace")
            if "error in script" in text or self.proc.returncode is not None:
                raise DoctorError(f"the recorder (mitmdump) failed to start:\n{text[-2000:]}")
            if "listening at" in text:
                return
            if time.monotonic() > deadline:
                raise DoctorError(f"the recorder was not listening after {READY_DEADLINE_S} s")
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        proc.send_signal(signal.SIGINT)  # the addon flushes every cassette on shutdown
        try:
            await asyncio.wait_for(proc.wait(), 20)
        except TimeoutError:
            proc.kill()
            await proc.wait()


def _secrets(settings: Settings, extra: Sequence[str]) -> list[str]:
    found = [t.get_secret_value() for t in settings.tokens]
    found += [k.get_secret_value() for k in settings.api_keys]
    if settings.cookies is not None:
        cookie = settings.cookies.get_secret_value()
        found.append(cookie)
        found += [p.split("=", 1)[1].strip() for p in cookie.split(";") if "=" in p]
    found += list(extra)
    return sorted({s for s in found if len(s) >= 6}, key=len, reverse=True)


def _redact(text: str, secret_values: Sequence[str]) -> str:
    from recorder.redact import Redactor

    for value in secret_values:
        text = text.replace(value, "<REDACTED>")
    return Redactor().text(text)


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


async def run_doctor(
    settings: Settings,
    *,
    out_dir: Path,
    schema_dir: Path,
    models: Sequence[str] = (),
    skip: Sequence[str] = (),
    timeout_s: float = 120.0,
    url_rewrites: Mapping[str, str] | None = None,
    mitm_confdir: Path | None = None,
) -> DoctorResult:
    """Run the doctor (module docstring). ``settings`` are the user's (upstream URL, tokens…);
    ``out_dir`` receives the cassettes and the reports; ``schema_dir`` is the baseline. The other
    arguments go to :func:`proxy.conformance.run_checks`. Raises :class:`DoctorError`."""
    from aiohttp import web

    from proxy.app import make_app
    from proxy.conformance import run_checks
    from proxy.qwen.contract import contract_json
    from recorder.cassette import load_all
    from recorder.schema import Contract, by_key, diff, infer, load_schemas

    try:
        baseline = load_schemas(schema_dir)
    except (OSError, ValueError) as exc:
        raise DoctorError(f"cannot read the baseline schemas: {exc}") from exc
    (out_dir / "cassettes").mkdir(parents=True, exist_ok=True)
    run_name = "doctor-" + datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    recorder = _Recorder(settings.upstream_url, out_dir, mitm_confdir, run_name)
    key = "sk-doctor-" + secrets.token_hex(12)
    gateway_settings = settings.model_copy(
        update={
            "upstream_url": f"http://127.0.0.1:{recorder.port}",
            "api_keys": [*settings.api_keys, _secret(key)],
            "replay": [],
            "host": "127.0.0.1",
            "port": 0,
        }
    )
    runner: web.AppRunner | None = None
    try:
        await recorder.start()
        runner = web.AppRunner(make_app(gateway_settings), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = int(runner.addresses[0][1])
        report = await run_checks(
            f"http://127.0.0.1:{port}/v1",
            key,
            list(models),
            timeout_s=timeout_s,
            skip=list(skip),
            url_rewrites=dict(url_rewrites or {}),
        )
    finally:
        if runner is not None:
            await runner.cleanup()
        await recorder.stop()
    paths = sorted((out_dir / "cassettes").glob("*.json"))
    recorded = load_all(paths) if paths else []
    contract = Contract.from_json(contract_json())
    drift_report = diff(baseline, by_key(infer(recorded)), contract)
    checks = json.loads(report.to_json())
    drift_json = drift_report.to_json()
    result = DoctorResult(
        checks=checks,
        drift=drift_json,
        drift_text=drift_report.text().rstrip("\n"),
        explanations=explain(checks.get("results", []), drift_json),
        out_dir=out_dir,
        cassettes=paths,
        upstream=settings.upstream_url,
    )
    hidden = _secrets(settings, [key])
    _write(out_dir / "doctor.md", _redact(render_markdown(result), hidden))
    _write(
        out_dir / "doctor.json",
        _redact(json.dumps(result.to_json(), indent=2, ensure_ascii=False) + "\n", hidden),
    )
    log_text = recorder.log_path.read_text(errors="replace")
    recorder.log_path.write_text(_redact(log_text, hidden), encoding="utf-8")
    return result


def _secret(value: str) -> Any:
    from pydantic import SecretStr

    return SecretStr(value)
