"""The report as one self-contained HTML page (``--html FILE``).

No external assets: the style is inline, the chart is inline SVG, there is no script. The page
holds the verdict, the table of checks, a chart of time to first token and total time per probe,
each failure with its exact request and evidence, the skipped checks with their reasons and,
with ``--compare``, what changed since the earlier report. Every text from the target is
escaped (a hostile proxy cannot inject markup into the page). Pure: a string in, a string out.
"""

from __future__ import annotations

from dataclasses import replace
from html import escape

from proxy.conformance.compare import Comparison
from proxy.conformance.report import MASK, CheckResult, Report

__all__ = ["chart_svg", "to_html"]

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:2em auto;max-width:1100px;
color:#1b1f24;padding:0 1em}
h1{font-size:1.5em}h2{margin-top:2em;border-bottom:1px solid #d0d7de}h3{font-size:1.05em}
table{border-collapse:collapse;width:100%}th,td{border:1px solid #d0d7de;padding:4px 8px;
text-align:left;vertical-align:top}th{background:#f6f8fa}td.num{text-align:right;
font-variant-numeric:tabular-nums}
.passed{color:#1a7f37}.failed,.error{color:#cf222e;font-weight:600}.skipped{color:#6e7781}
.verdict{font-size:1.2em;padding:.6em 1em;border-radius:6px;display:inline-block}
.verdict.pass{background:#dafbe1}.verdict.fail{background:#ffebe9}
pre{background:#f6f8fa;padding:.8em;overflow-x:auto;white-space:pre-wrap;word-break:break-all}
code{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:.92em}
.legend span{display:inline-block;width:12px;height:12px;margin:0 4px 0 12px;vertical-align:middle}
"""

_ICON = {"passed": "✓ passed", "failed": "✗ failed", "skipped": "– skipped", "error": "! error"}
"""Plain symbols (not emoji): they render with any font, headless browsers included."""


def _secs(v: float | None) -> str:
    return "" if v is None else f"{v:.3f}"


def chart_svg(results: list[CheckResult], *, width: int = 900) -> str:
    """An inline SVG bar chart: one row per probe (checks that share a request share a row),
    a light bar for the total time and a dark one for the time to first token, in seconds.
    Returns ``""`` when no check has a timing."""
    rows: dict[tuple[str, str, str], tuple[list[str], float, float | None]] = {}
    for r in results:
        if r.total_s is None or r.request is None:
            continue
        key = (r.request.method, r.request.url, r.request.body or "")
        ids, total, ttft = rows.get(key, ([], r.total_s, r.ttft_s))
        rows[key] = ([*ids, r.id], total, ttft if ttft is not None else r.ttft_s)
    if not rows:
        return ""
    label_w, row_h, top = 300, 22, 24
    bar_w = width - label_w - 70
    longest = max(total for _, total, _ in rows.values()) or 1.0
    height = top + row_h * len(rows) + 10
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="time per probe" '
        'id="timing-chart" font-family="system-ui,sans-serif" font-size="12">',
    ]
    for frac in (0.0, 0.5, 1.0):
        x = label_w + frac * bar_w
        out.append(
            f'<line x1="{x:.1f}" y1="{top - 6}" x2="{x:.1f}" y2="{height - 6}" stroke="#d0d7de"/>'
            f'<text x="{x:.1f}" y="{top - 10}" text-anchor="middle" fill="#57606a">'
            f"{frac * longest:.2f} s</text>"
        )
    for i, (ids, total, ttft) in enumerate(rows.values()):
        y = top + i * row_h
        label = ids[0] + (f" (+{len(ids) - 1})" if len(ids) > 1 else "")
        tip = (
            ", ".join(ids)
            + f": total {total:.3f} s"
            + (f", first token {ttft:.3f} s" if ttft is not None else "")
        )
        out.append(
            f'<g class="probe"><title>{escape(tip)}</title>'
            f'<text x="{label_w - 8}" y="{y + 15}" text-anchor="end">{escape(label)}</text>'
            f'<rect class="total" x="{label_w}" y="{y + 4}" '
            f'width="{max(1.0, total / longest * bar_w):.1f}" height="{row_h - 8}" '
            'fill="#9ecbff"/>'
        )
        if ttft is not None:
            out.append(
                f'<rect class="ttft" x="{label_w}" y="{y + 4}" '
                f'width="{max(1.0, ttft / longest * bar_w):.1f}" height="{row_h - 8}" '
                'fill="#0550ae"/>'
            )
        out.append(
            f'<text x="{label_w + total / longest * bar_w + 6:.1f}" y="{y + 15}" '
            f'fill="#57606a">{total:.2f} s</text></g>'
        )
    out.append("</svg>")
    return "".join(out)


def _detail(r: CheckResult) -> str:
    parts = [
        f'<section class="failure" id="check-{escape(r.id)}">'
        f"<h3><code>{escape(r.id)}</code>: {escape(r.title)}</h3>",
        f'<p><span class="{r.status}">{_ICON[r.status]}</span> '
        f"({'required' if r.required else 'optional'}), <code>{escape(r.diagnosis)}</code>: "
        f"{escape(r.message)}</p>",
    ]
    if r.request is not None:
        q = r.request
        head = [f"{q.method} {q.url}", *(f"{k}: {v}" for k, v in q.headers.items())]
        body = q.body or ""
        if q.body_bytes is not None and q.body_bytes != len(body.encode("utf-8")):
            body += f"\n… ({q.body_bytes} bytes in all)"
        text = "\n".join(head) + ("\n\n" + body if body else "")
        parts.append(f"<p>Request:</p><pre><code>{escape(text)}</code></pre>")
    if r.evidence is not None:
        e = r.evidence
        items = []
        if e.transport_error:
            items.append(f"transport error: {escape(e.transport_error)}")
        if e.status is not None:
            items.append(f"status: {e.status}")
        items += [f"<code>{escape(k)}: {escape(v)}</code>" for k, v in e.headers.items()]
        items += [escape(n) for n in e.notes]
        parts.append("<p>Evidence:</p><ul>" + "".join(f"<li>{i}</li>" for i in items) + "</ul>")
        if e.events:
            total = e.event_count if e.event_count is not None else len(e.events)
            data = "\n".join(f"data: {d}" for d in e.events)
            parts.append(
                f"<p>SSE data ({len(e.events)} of {total} events):</p>"
                f"<pre><code>{escape(data)}</code></pre>"
            )
        elif e.body_excerpt:
            parts.append(f"<p>Body:</p><pre><code>{escape(e.body_excerpt)}</code></pre>")
    parts.append("</section>")
    return "".join(parts)


def _diagnosis_cell(r: CheckResult) -> str:
    code = f"<code>{escape(r.diagnosis)}</code>"
    if r.status in ("failed", "error"):
        return f'<a href="#check-{escape(r.id)}">{code}</a>'  # to the failure's details
    return code


def to_html(report: Report, comparison: Comparison | None = None) -> str:
    """The whole page for ``report`` (and ``comparison`` when given), as text.

    Every text is masked before it is escaped (an echo of the key is caught in its own form,
    and the placeholder shows as ``<key>``); the page is masked once more as a last pass."""
    original = report
    report = report.masked()
    if comparison is not None:
        comparison = replace(
            comparison,
            changes=[replace(ch, message=original.mask(ch.message)) for ch in comparison.changes],
        )
    counts = report.counts()
    ok = report.exit_code() == 0
    verdict = (
        "PASS: every required check passed"
        if ok
        else f"FAIL: {len(report.required_failures())} required check(s) failed"
    )
    caps = report.capabilities
    picked = ", ".join(
        f"{label} <code>{escape(str(caps[key]))}</code>"
        for key, label in (
            ("text_model", "text model"),
            ("thinking_model", "thinking model"),
            ("image_model", "image model"),
        )
        if caps.get(key)
    )
    rows = "".join(
        f'<tr class="{r.status}" id="row-{escape(r.id)}"><td><code>{escape(r.id)}</code> '
        f'{escape(r.title)}</td><td class="{r.status}">{_ICON[r.status]}</td>'
        f"<td>{'yes' if r.required else 'no'}</td><td>{_diagnosis_cell(r)}</td>"
        f'<td class="num">{_secs(r.ttft_s)}</td><td class="num">{_secs(r.total_s)}</td></tr>'
        for r in report.results
    )
    chart = chart_svg(report.results)
    bad = [r for r in report.results if r.status in ("failed", "error")]
    skipped = [r for r in report.results if r.status == "skipped"]
    body = [
        f"<h1>Conformance report: <code>{escape(report.target)}</code></h1>",
        f'<p class="verdict {"pass" if ok else "fail"}" id="verdict">{escape(verdict)}</p>',
        *(f'<p class="note"><strong>Note:</strong> {escape(n)}</p>' for n in report.notes),
        f"<p>{counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped, "
        f"{counts['error']} errors in {report.duration_s:.2f} s ({escape(report.started_at)}, "
        f"qwen-proxy check {escape(report.harness_version)}"
        f"{', strict' if report.strict else ''}).</p>",
    ]
    if picked:
        body.append(f"<p>Models probed: {picked}.</p>")
    if comparison is not None:
        body.append(_comparison(comparison))
    body += [
        '<table id="results"><thead><tr><th>check</th><th>result</th><th>required</th>'
        "<th>diagnosis</th><th>TTFT s</th><th>total s</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>",
    ]
    if chart:
        body += [
            "<h2>Time per probe</h2>",
            '<p class="legend"><span style="background:#0550ae"></span>time to first token'
            '<span style="background:#9ecbff"></span>total time</p>',
            chart,
        ]
    if bad:
        body += ["<h2>Failures</h2>", *(_detail(r) for r in bad)]
    if skipped:
        body += [
            "<h2>Skipped</h2><ul>",
            *(f"<li><code>{escape(r.id)}</code>: {escape(r.message)}</li>" for r in skipped),
            "</ul>",
        ]
    return original.mask(  # the key, and any fragment of it, never reaches the page
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>qwen-proxy check: {escape(report.target)}</title><style>{_CSS}</style></head>"
        f"<body>{''.join(body)}</body></html>\n",
        placeholder=escape(MASK),
    )


def _comparison(c: Comparison) -> str:
    css = {"regression": "failed", "improvement": "passed", "other": ""}
    items = "".join(
        f'<li class="{css[ch.kind]}"><code>{escape(ch.id)}</code>: {escape(ch.message)}</li>'
        for ch in c.changes
    )
    head = (
        f"<h2>Compared with {escape(c.old_started_at)}</h2>"
        f'<p id="trend">{len(c.regressions)} worse, {len(c.improvements)} better.</p>'
    )
    return head + (f"<ul>{items}</ul>" if items else "<p>Nothing changed beyond noise.</p>")
