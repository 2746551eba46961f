"""Trends: what got better or worse between an earlier report and this one (``--compare``).

Pure: two :class:`~proxy.conformance.report.Report` objects in, a :class:`Comparison` out. A
*regression* is a check that passed (or was skipped) before and now fails or errors, a
capability lost (a check that passed before and is now skipped, e.g. the ``-image`` model is no
longer listed, or is no longer in the report at all), or a time to first token that grew beyond
noise; an *improvement* the reverse. ``qwen-proxy check --compare OLD.json`` exits 1 on any
regression, so a cron job can alert on it. A check left out on purpose (``--skip``, another
``--profile``: diagnosis ``not_requested``) is not a lost capability.

Noise: time to first token varies from run to run; a change counts only when it is larger than
both :data:`TTFT_NOISE_S` (absolute) and :data:`TTFT_NOISE_RATIO` (relative to the old value).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from proxy.conformance.report import CheckResult, Report

__all__ = ["TTFT_NOISE_RATIO", "TTFT_NOISE_S", "Change", "Comparison", "compare"]

TTFT_NOISE_S = 0.5
"""A time-to-first-token change smaller than this many seconds is noise."""
TTFT_NOISE_RATIO = 0.5
"""A time-to-first-token change smaller than this fraction of the old value is noise."""

_BAD = ("failed", "error")
_CHOSEN = "not_requested"
"""The diagnosis of a check the user left out (--skip, --profile): not a lost capability."""


@dataclass(frozen=True)
class Change:
    """One difference: the check ``id``, ``kind`` (``regression``, ``improvement``, ``other``),
    and a readable ``message``."""

    id: str
    kind: Literal["regression", "improvement", "other"]
    message: str


@dataclass
class Comparison:
    """Every change between ``old`` and ``new`` (targets and start times kept for the header)."""

    old_target: str
    old_started_at: str
    new_target: str
    new_started_at: str
    changes: list[Change] = field(default_factory=list)

    @property
    def regressions(self) -> list[Change]:
        """The changes for the worse."""
        return [c for c in self.changes if c.kind == "regression"]

    @property
    def improvements(self) -> list[Change]:
        """The changes for the better."""
        return [c for c in self.changes if c.kind == "improvement"]

    def exit_code(self) -> int:
        """1 when anything regressed, else 0."""
        return 1 if self.regressions else 0

    def to_markdown(self) -> str:
        """A short Markdown section: regressions, improvements, other changes."""
        lines = [
            f"## Compared with the report of {self.old_started_at} (`{self.old_target}`)",
            "",
        ]
        if not self.changes:
            return "\n".join(
                [*lines, "No check changed its result; no timing moved beyond noise.", ""]
            )
        for kind, title in (
            ("regression", "Worse"),
            ("improvement", "Better"),
            ("other", "Other changes"),
        ):
            items = [c for c in self.changes if c.kind == kind]
            if items:
                lines += [f"**{title}** ({len(items)}):", ""]
                lines += [f"- `{c.id}`: {c.message}" for c in items]
                lines.append("")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict."""
        return {
            "old": {"target": self.old_target, "started_at": self.old_started_at},
            "regressions": len(self.regressions),
            "improvements": len(self.improvements),
            "changes": [{"id": c.id, "kind": c.kind, "message": c.message} for c in self.changes],
        }


def _label(r: CheckResult) -> str:
    return r.status if r.status in ("passed", "skipped") else f"{r.status} ({r.diagnosis})"


def _ttft_change(old: CheckResult, new: CheckResult) -> Change | None:
    if old.ttft_s is None or new.ttft_s is None:
        return None
    delta = new.ttft_s - old.ttft_s
    if abs(delta) < TTFT_NOISE_S or abs(delta) < TTFT_NOISE_RATIO * old.ttft_s:
        return None
    kind: Literal["regression", "improvement"] = "regression" if delta > 0 else "improvement"
    return Change(
        new.id,
        kind,
        f"time to first token {old.ttft_s:.2f} s → {new.ttft_s:.2f} s "
        f"({'+' if delta > 0 else ''}{delta:.2f} s)",
    )


def compare(old: Report, new: Report) -> Comparison:
    """What changed from ``old`` to ``new``, check by check.

    - passed/skipped → failed/error: regression; failed/error → passed: improvement;
    - passed → skipped (a capability lost: the endpoint or model is gone): regression;
      skipped → passed: improvement; unless the skip was chosen (``not_requested``);
    - failed → failed with another diagnosis: other (the failure changed);
    - a check new in ``new`` that fails: regression; one that disappeared: regression when it
      had passed, else other;
    - time to first token beyond noise (:data:`TTFT_NOISE_S` and :data:`TTFT_NOISE_RATIO`):
      slower is a regression, faster an improvement.
    """
    out = Comparison(old.target, old.started_at, new.target, new.started_at)
    before = old.by_id()
    for r in new.results:
        o = before.pop(r.id, None)
        if o is None:
            if r.status in _BAD:
                out.changes.append(Change(r.id, "regression", f"new check, {_label(r)}"))
            continue
        was_bad, is_bad = o.status in _BAD, r.status in _BAD
        if is_bad and not was_bad:
            out.changes.append(
                Change(r.id, "regression", f"{_label(o)} → {_label(r)}: {r.message}")
            )
        elif was_bad and not is_bad:
            out.changes.append(Change(r.id, "improvement", f"{_label(o)} → {_label(r)}"))
        elif is_bad and o.diagnosis != r.diagnosis:
            out.changes.append(Change(r.id, "other", f"{_label(o)} → {_label(r)}"))
        elif o.status == "passed" and r.status == "skipped" and r.diagnosis != _CHOSEN:
            out.changes.append(
                Change(r.id, "regression", f"passed → skipped, capability lost: {r.message}")
            )
        elif o.status == "skipped" and r.status == "passed" and o.diagnosis != _CHOSEN:
            out.changes.append(Change(r.id, "improvement", "skipped → passed"))
        elif o.status != r.status:
            out.changes.append(Change(r.id, "other", f"{_label(o)} → {_label(r)}"))
        if r.status == "passed" and o.status == "passed":
            ttft = _ttft_change(o, r)
            if ttft is not None:
                out.changes.append(ttft)
    for gone in before.values():
        kind: Literal["regression", "other"] = "regression" if gone.status == "passed" else "other"
        out.changes.append(Change(gone.id, kind, f"no longer checked (was {_label(gone)})"))
    return out
