"""Results of the conformance harness and their Markdown and JSON forms.

A :class:`Report` holds one :class:`CheckResult` per check. Its exit code is 0 when every
*required* check passed or was skipped, 1 otherwise (:meth:`Report.exit_code`). Requests are
recorded with the key already masked (:mod:`proxy.conformance.probes`), and both renderings mask
it again as a last pass: any fragment of 10 or more of its characters, in any case, also inside
JSON (``\\u0041``) or URL (``%41``) escapes, becomes ``<key>`` (a target may reflect the key in
a header such as ``WWW-Authenticate``, upper-cased, cut short or escaped).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from proxy.secrets import SecretMasker

__all__ = ["MASK", "CheckResult", "Evidence", "Report", "RequestRecord", "Status"]

Status = Literal["passed", "failed", "skipped", "error"]

MASK = "<key>"
"""What the key, or any fragment of it, becomes in a report."""

_ICON = {"passed": "✅ passed", "failed": "❌ failed", "skipped": "⏭️ skipped", "error": "💥 error"}


@dataclass
class RequestRecord:
    """The exact request a check sent: method, URL, headers (key masked) and body text.

    ``body`` is the body as sent, shortened for very large bodies (``body_bytes`` is then the
    real size in bytes).
    """

    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    body: str | None = None
    body_bytes: int | None = None


@dataclass
class Evidence:
    """What came back: HTTP ``status`` (``None`` when the transport failed), a subset of the
    response headers, a body excerpt, the first SSE ``data`` payloads (``events``, with
    ``event_count`` the total), ``notes`` (extra findings) and ``transport_error``."""

    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body_excerpt: str | None = None
    events: list[str] = field(default_factory=list)
    event_count: int | None = None
    notes: list[str] = field(default_factory=list)
    transport_error: str | None = None


@dataclass
class CheckResult:
    """One check's outcome.

    ``id`` (e.g. ``"chat.zh.stream"``), ``title``, ``status``; ``required`` (a failed required
    check fails the run); ``diagnosis`` a short code (``"ok"`` when passed, e.g.
    ``"mojibake_gbk"`` when failed, the reason's code when skipped); ``message`` a sentence;
    ``request`` and ``evidence``; ``ttft_s`` seconds from sending the request to the first
    streamed text (streams only) and ``total_s`` seconds to the end of the response.
    """

    id: str
    title: str
    status: Status
    required: bool
    diagnosis: str
    message: str
    request: RequestRecord | None = None
    evidence: Evidence | None = None
    ttft_s: float | None = None
    total_s: float | None = None


@dataclass
class Report:
    """The whole run: ``target`` (base URL), ``started_at`` (ISO 8601 UTC), ``duration_s``,
    ``capabilities`` (the models picked and why checks were skipped) and ``results``."""

    target: str
    started_at: str
    duration_s: float
    harness_version: str
    capabilities: dict[str, Any]
    results: list[CheckResult]
    strict: bool = False
    notes: list[str] = field(default_factory=list)
    """Run-level hints shown once, above the results (e.g. the target wants an API key)."""
    secrets: list[str] = field(default_factory=list, repr=False)
    """Values masked in both renderings (the API key); never rendered themselves."""

    def _masker(self, placeholder: str = MASK) -> SecretMasker:
        return SecretMasker(self.secrets, replacement=placeholder, html=True)

    def mask(self, text: str, *, placeholder: str = MASK) -> str:
        """``text`` (a rendering of this report) with the secrets and their fragments masked,
        each replaced by ``placeholder``."""
        return self._masker(placeholder).mask(text)

    def masked(self) -> Report:
        """A copy with the secrets and their fragments masked in every text (check messages,
        requests, evidence, notes); the copy holds no secrets. For renderings that escape
        text afterwards (HTML): masking the rendering would miss an escaped echo of the key and
        write the placeholder unescaped."""
        copy = Report.from_dict(self.to_dict())
        copy.duration_s = self.duration_s
        return copy

    def by_id(self) -> dict[str, CheckResult]:
        """The results keyed by check id."""
        return {r.id: r for r in self.results}

    def required_failures(self) -> list[CheckResult]:
        """Required checks that failed or errored."""
        return [r for r in self.results if r.required and r.status in ("failed", "error")]

    def counts(self) -> dict[str, int]:
        """How many checks ended in each status."""
        out = {"passed": 0, "failed": 0, "skipped": 0, "error": 0}
        for r in self.results:
            out[r.status] += 1
        return out

    def exit_code(self) -> int:
        """0 when every required check passed (or was skipped), else 1."""
        return 1 if self.required_failures() else 0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the layout of :meth:`to_json`), secrets masked."""
        return _mask_tree(self._to_dict(), self._masker())

    def _to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "started_at": self.started_at,
            "duration_s": round(self.duration_s, 3),
            "harness_version": self.harness_version,
            "strict": self.strict,
            "verdict": "pass" if self.exit_code() == 0 else "fail",
            "counts": self.counts(),
            "notes": list(self.notes),
            "capabilities": self.capabilities,
            "results": [asdict(r) for r in self.results],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Report:
        """A report read back from :meth:`to_dict` (e.g. an earlier ``--json`` file).

        Raises ``ValueError`` when ``data`` is not such a report."""
        try:
            results = []
            for r in data["results"]:
                values = {k: v for k, v in r.items() if k in _RESULT_FIELDS}
                request = values.pop("request", None)
                evidence = values.pop("evidence", None)
                results.append(
                    CheckResult(
                        **values,
                        request=RequestRecord(**_known(RequestRecord, request))
                        if request
                        else None,
                        evidence=Evidence(**_known(Evidence, evidence)) if evidence else None,
                    )
                )
            return cls(
                target=data["target"],
                started_at=data["started_at"],
                duration_s=float(data["duration_s"]),
                harness_version=data.get("harness_version", "?"),
                capabilities=data.get("capabilities", {}),
                results=results,
                strict=bool(data.get("strict", False)),
                notes=[str(n) for n in data.get("notes", [])],
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a qwen-proxy check JSON report: {exc}") from exc

    def to_json(self) -> str:
        """The report as indented JSON text (UTF-8 characters kept as is), secrets masked."""
        return self._masker().mask(json.dumps(self.to_dict(), ensure_ascii=False, indent=2))

    def to_markdown(self) -> str:
        """The report as Markdown: verdict, summary table, then failures in detail (the exact
        request and the evidence), then skipped checks with their reasons. Secrets masked."""
        return self._masker().mask(self._markdown())

    def _markdown(self) -> str:
        counts = self.counts()
        verdict = (
            "**PASS**: every required check passed"
            if self.exit_code() == 0
            else f"**FAIL**: {len(self.required_failures())} required check(s) failed"
        )
        lines = [
            f"# Conformance report: `{self.target}`",
            "",
            f"{verdict}. {counts['passed']} passed, {counts['failed']} failed, "
            f"{counts['skipped']} skipped, {counts['error']} errors "
            f"in {self.duration_s:.2f} s ({self.started_at}, qwen-proxy check "
            f"{self.harness_version}).",
            "",
        ]
        lines += [line for note in self.notes for line in (f"> **Note:** {note}", "")]
        caps = self.capabilities
        picked = [
            f"{label} `{caps[key]}`"
            for key, label in (
                ("text_model", "text model"),
                ("thinking_model", "thinking model"),
                ("image_model", "image model"),
            )
            if caps.get(key)
        ]
        if picked:
            lines += ["Models probed: " + ", ".join(picked) + ".", ""]
        lines += [
            "| check | result | required | diagnosis | TTFT s | total s |",
            "|---|---|---|---|---|---|",
        ]
        for r in self.results:
            lines.append(
                f"| `{r.id}` {_cell(r.title)} | {_ICON[r.status]} | "
                f"{'yes' if r.required else 'no'} | `{r.diagnosis}` | {_secs(r.ttft_s)} | "
                f"{_secs(r.total_s)} |"
            )
        bad = [r for r in self.results if r.status in ("failed", "error")]
        if bad:
            lines += ["", "## Failures", ""]
            for r in bad:
                lines += _detail(r)
        skipped = [r for r in self.results if r.status == "skipped"]
        if skipped:
            lines += ["", "## Skipped", ""]
            lines += [f"- `{r.id}`: {r.message}" for r in skipped]
        return "\n".join(lines) + "\n"


_RESULT_FIELDS = frozenset(f.name for f in fields(CheckResult))


def _known(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """``data`` without keys ``cls`` does not have (a report from another harness version)."""
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in data.items() if k in names}


def _mask_tree(value: Any, masker: SecretMasker) -> Any:
    """``value`` (JSON-like) with every string, keys included, masked."""
    if isinstance(value, str):
        return masker.mask(value)
    if isinstance(value, dict):
        return {masker.mask(str(k)): _mask_tree(v, masker) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_mask_tree(v, masker) for v in value]
    return value


def _secs(v: float | None) -> str:
    return "" if v is None else f"{v:.3f}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _fence(text: str, lang: str = "") -> list[str]:
    ticks = "````" if "```" in text else "```"
    return [f"{ticks}{lang}", text.rstrip("\n"), ticks]


def _detail(r: CheckResult) -> list[str]:
    req = "required" if r.required else "optional"
    out = [
        f"### `{r.id}`: {r.title}",
        "",
        f"{_ICON[r.status]} ({req}), `{r.diagnosis}`: {r.message}",
    ]
    if r.request is not None:
        q = r.request
        head = [f"{q.method} {q.url}", *(f"{k}: {v}" for k, v in q.headers.items())]
        body = q.body if q.body is not None else ""
        if q.body_bytes is not None and q.body_bytes != len(body.encode("utf-8")):
            body += f"\n… ({q.body_bytes} bytes in all)"
        out += [
            "",
            "Request:",
            "",
            *_fence("\n".join(head) + ("\n\n" + body if body else ""), "http"),
        ]
    if r.evidence is not None:
        e = r.evidence
        out += ["", "Evidence:", ""]
        if e.transport_error:
            out.append(f"- transport error: {e.transport_error}")
        if e.status is not None:
            out.append(f"- status: {e.status}")
        for k, v in e.headers.items():
            out.append(f"- `{k}: {v}`")
        for note in e.notes:
            out.append(f"- {note}")
        if e.events:
            total = e.event_count if e.event_count is not None else len(e.events)
            out += ["", f"SSE data ({len(e.events)} of {total} events):", ""]
            out += _fence("\n".join(f"data: {d}" for d in e.events))
        elif e.body_excerpt:
            out += ["", "Body:", "", *_fence(e.body_excerpt)]
    out.append("")
    return out
