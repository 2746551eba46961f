"""``qwen-proxy check``: a conformance harness for any OpenAI-compatible Qwen proxy.

It sends fixed probes to a deployed proxy (ours or another), checks every answer against the
OpenAI contract with the ``openai`` SDK's own types, and names what broke with the diagnoses
users of Qwen proxies file by hand (docs/landscape.md §3): garbled Chinese (U+FFFD, Latin-1 or GBK
mojibake, "your message looks garbled"), duplicated streamed text, ``![image](null)``, a drawing
tutorial instead of an image, streams without ``[DONE]`` or ``finish_reason``, errors sent as
HTTP 200.

Library use::

    from proxy.conformance import run_checks, run_checks_sync
    report = run_checks_sync("http://127.0.0.1:8000/v1", key="sk-…")
    print(report.to_markdown()); raise SystemExit(report.exit_code())

In async code ``await run_checks(...)``; in tests ``await assert_conformant(...)`` or the
``qwen_conformance`` fixture of :mod:`proxy.conformance.pytest_plugin`. ``run_checks(...,
strict=True)`` requires every field OpenAI returns; ``profiles=[...]`` picks client profiles
(:func:`profile_names`); :func:`compare` diffs two reports (``Report.from_dict`` reads one back
from JSON) and :func:`to_html` renders one as a self-contained page.
"""

from __future__ import annotations

from proxy.conformance.catalog import CHECKS
from proxy.conformance.checks import Capabilities
from proxy.conformance.compare import Comparison, compare
from proxy.conformance.html import to_html
from proxy.conformance.profiles import profile_names
from proxy.conformance.report import CheckResult, Evidence, Report, RequestRecord, Status
from proxy.conformance.runner import (
    DEFAULT_OVERSIZE_BYTES,
    NotAnOpenAIAPIError,
    ProgressCallback,
    TargetUnreachableError,
    assert_conformant,
    check_ids,
    pick_models,
    run_checks,
    run_checks_sync,
)

__all__ = [
    "CHECKS",
    "DEFAULT_OVERSIZE_BYTES",
    "Capabilities",
    "CheckResult",
    "Comparison",
    "Evidence",
    "NotAnOpenAIAPIError",
    "ProgressCallback",
    "Report",
    "RequestRecord",
    "Status",
    "TargetUnreachableError",
    "assert_conformant",
    "check_ids",
    "compare",
    "pick_models",
    "profile_names",
    "run_checks",
    "run_checks_sync",
    "to_html",
]
