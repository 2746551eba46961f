"""Reports: trends between two runs (``--compare``) and the HTML page, opened in headless Chromium.

The HTML test renders a real report (a broken fixture, so it has failures, evidence and
timings) and opens it in Chromium from Debian's ``chromium`` package; it is skipped, with the
reason, when no Chromium is installed.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer
from broken_proxies import BROKEN_DIR
from test_conformance_broken import check_fixture, image_server  # noqa: F401  (fixture)
from test_secrets import _reflections, recoverable

from proxy.conformance.compare import TTFT_NOISE_S, compare
from proxy.conformance.html import chart_svg, to_html
from proxy.conformance.report import CheckResult, Evidence, Report, RequestRecord
from recorder.cassette import Cassette


def result(id: str, status: str = "passed", ttft: float | None = None, **kw: object) -> CheckResult:
    """A check result with a request (so it gets a chart row)."""
    diagnosis = "ok" if status == "passed" else kw.pop("diagnosis", "http_status")
    return CheckResult(
        id=id,
        title=f"title of {id}",
        status=status,  # type: ignore[arg-type]
        required=True,
        diagnosis=str(diagnosis),
        message=f"message of {id}",
        request=RequestRecord("POST", f"http://t/v1/{id}", {}, "{}"),
        ttft_s=ttft,
        total_s=(ttft or 0.1) + 0.2,
    )


def report(*results: CheckResult, started: str = "2026-11-29T06:00:00+00:00") -> Report:
    return Report("http://t/v1", started, 1.0, "0.1.0", {}, list(results))


# -- --compare ---------------------------------------------------------------------------------


def test_compare_names_flips_and_slowdowns_beyond_noise() -> None:
    """A passed→failed flip and a TTFT beyond noise are regressions; small jitter is not."""
    old = report(
        result("a"),
        result("b", "failed", diagnosis="missing_done"),
        result("c", ttft=0.4),
        result("d", ttft=0.4),
        result("gone"),
    )
    new = report(
        result("a", "failed", diagnosis="duplicated_deltas"),
        result("b"),
        result("c", ttft=0.4 + TTFT_NOISE_S / 2),  # noise
        result("d", ttft=2.0),  # slower beyond noise
        result("fresh", "failed", diagnosis="no_tool_call"),
        started="2026-11-30T06:00:00+00:00",
    )
    cmp = compare(old, new)
    kinds = {(c.id, c.kind) for c in cmp.changes}
    assert kinds == {
        ("a", "regression"),
        ("b", "improvement"),
        ("d", "regression"),
        ("fresh", "regression"),
        ("gone", "regression"),  # it passed: a capability lost
    }
    assert cmp.exit_code() == 1
    text = cmp.to_markdown()
    assert "passed → failed (duplicated_deltas)" in text and "0.40 s → 2.00 s" in text
    assert compare(old, old).exit_code() == 0 and not compare(old, old).changes


def test_compare_counts_a_lost_capability_as_worse() -> None:
    """A check that passed and is now skipped (the -image model vanished, an endpoint answers
    404) or gone from the report is worse; one left out on purpose (--skip, --profile) is not;
    a capability gained is better."""
    old = report(
        result("images.chat"),
        result("images.generations"),
        result("profile.cline"),
        result("anthropic.stream", "skipped", diagnosis="not_offered"),
        result("gone.failed", "failed", diagnosis="missing_done"),
    )
    lost = result("images.chat", "skipped", diagnosis="no_capability")
    lost.message = "the target lists no image model"
    new = report(
        lost,
        result("profile.cline", "skipped", diagnosis="not_requested"),
        result("anthropic.stream"),
        started="2026-11-30T06:00:00+00:00",
    )
    cmp = compare(old, new)
    kinds = {(c.id, c.kind) for c in cmp.changes}
    assert kinds == {
        ("images.chat", "regression"),
        ("images.generations", "regression"),
        ("anthropic.stream", "improvement"),
        ("gone.failed", "other"),
        ("profile.cline", "other"),  # left out on purpose: listed, not worse
    }, kinds
    assert cmp.exit_code() == 1
    assert "passed → skipped, capability lost: the target lists no image model" in (
        cmp.to_markdown()
    )


def test_report_round_trips_through_json() -> None:
    """A --json report reads back into an equal Report (what --compare loads)."""
    r = report(result("a", ttft=0.3), result("b", "failed", diagnosis="missing_done"))
    again = Report.from_dict(json.loads(r.to_json()))
    assert again.to_dict() == r.to_dict()
    with pytest.raises(ValueError, match="not a qwen-proxy check JSON report"):
        Report.from_dict({"results": [{"id": "x"}]})


# -- HTML --------------------------------------------------------------------------------------


class _Collect(HTMLParser):
    """Every start tag and its attributes (to look for external references)."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def test_html_escapes_what_the_target_sent_and_references_nothing() -> None:
    """Text from the target cannot inject markup; no src/href/url() points anywhere."""
    hostile = result("x", "failed", diagnosis="echo_mismatch")
    hostile.message = '<script>alert(1)</script><img src="http://evil/x.png">'
    page = to_html(report(hostile, result("y", ttft=0.2)))
    assert "<script>" not in page and "&lt;script&gt;" in page
    parser = _Collect()
    parser.feed(page)
    assert {t for t, _ in parser.tags} >= {"table", "svg", "rect", "section"}
    for tag, attrs in parser.tags:
        assert tag not in ("script", "img", "link", "iframe"), tag
        for name in ("src", "href"):
            assert name not in attrs or not str(attrs[name]).startswith(("http", "//")), (
                tag,
                attrs,
            )
    assert "url(" not in page and "@import" not in page


def test_no_rendering_lets_the_key_be_recovered() -> None:
    """The key reflected in every form (plain, upper-cased, cut short, JSON-escaped once and
    twice, percent-encoded, HTML character references) in a message, a header, a note and a
    body: JSON, Markdown and HTML hold none of it; the HTML shows the placeholder escaped
    (a raw ``<key>`` would be an unknown element, invisible in a browser)."""
    key = "sk-secret-XYZ123abc"
    forms = _reflections(key)
    bad = result("errors.bad_json", "failed", diagnosis="server_error")
    bad.message = f"HTTP 500: {forms['double_json']}"
    bad.evidence = Evidence(
        status=500,
        headers={"www-authenticate": f'Bearer token="{forms["upper"]}"'},
        body_excerpt=json.dumps({name: f"k={echo}" for name, echo in forms.items()}),
        notes=[f"answer: {forms['html_hex']}"],
    )
    r = report(bad)
    r.secrets = [key]
    old = report(result("errors.bad_json"))
    page = to_html(r, compare(old, r))
    for text in (r.to_json(), r.to_markdown(), page):
        assert not recoverable(key, text), text
    assert "<key>" not in page and "&lt;key&gt;" in page
    assert "token=&quot;&lt;key&gt;&quot;" in page


def test_chart_has_one_row_per_probe() -> None:
    """Checks sharing one request share one chart row; bars scale to the longest total."""
    a, b = result("stream.done", ttft=0.5), result("stream.role_first", ttft=0.5)
    b.request = copy.deepcopy(a.request)
    svg = chart_svg([a, b, result("chat.en")])
    assert svg.count('class="probe"') == 2
    assert "stream.done (+1)" in svg
    assert chart_svg([]) == ""


_CHROMIUM = next((p for p in ("chromium", "chromium-browser") if shutil.which(p)), None)


async def chromium(*args: str) -> tuple[str, str]:
    """Run headless Chromium with ``args``; ``(stdout, stderr)``."""
    assert _CHROMIUM is not None
    proc = await asyncio.create_subprocess_exec(
        _CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    return out.decode(errors="replace"), err.decode(errors="replace")


_MEASURE = """<script>
window.addEventListener("load", () => {
  const svg = document.getElementById("timing-chart");
  const box = svg ? svg.getBoundingClientRect() : {width: 0, height: 0};
  const out = {
    rows: document.querySelectorAll("#results tbody tr").length,
    failed_rows: document.querySelectorAll("#results tbody tr.failed").length,
    sections: document.querySelectorAll("section.failure").length,
    svg_width: box.width, svg_height: box.height,
    bars: svg ? svg.querySelectorAll("rect.total").length : 0,
    ttft_bars: svg ? svg.querySelectorAll("rect.ttft").length : 0,
    resources: performance.getEntriesByType("resource").length,
    verdict: document.getElementById("verdict").textContent,
  };
  const pre = document.createElement("pre");
  pre.id = "measured";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


@pytest.mark.skipif(
    _CHROMIUM is None,
    reason="no Chromium installed (Debian: apt-get install chromium); the HTML report is "
    "checked in a real browser only where one is present",
)
async def test_html_report_renders_in_headless_chromium(
    aiohttp_server: object,
    image_server: TestServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    """A real report of a broken proxy, opened in headless Chromium: the table has a row per
    check, the failures are there with their evidence, the SVG chart has a size and a bar per
    probe, and the page loads no resource at all (self-contained)."""
    broken = Cassette.load(BROKEN_DIR / "duplicated_deltas.json")
    rep = await check_fixture(aiohttp_server, image_server, broken)
    page = to_html(rep)
    (tmp_path / "report.html").write_text(page, encoding="utf-8")
    probe = tmp_path / "measured.html"
    probe.write_text(page.replace("</body>", _MEASURE + "</body>"), encoding="utf-8")
    stdout, stderr = await chromium(
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--virtual-time-budget=5000",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--dump-dom",
        probe.as_uri(),
    )
    m = re.search(r'<pre id="measured">(.*?)</pre>', stdout, re.DOTALL)
    assert m, f"no measurement in the DOM; stderr: {stderr[-2000:]}"
    got = json.loads(m.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    failed = [r for r in rep.results if r.status == "failed"]
    assert got["rows"] == len(rep.results)
    assert got["failed_rows"] == got["sections"] == len(failed) > 0
    assert got["svg_width"] > 300 and got["svg_height"] > 50
    assert got["bars"] >= 10 and got["ttft_bars"] >= 1
    assert got["resources"] == 0
    assert got["verdict"].startswith("FAIL")
    shot = tmp_path / "shot.png"
    await chromium(
        f"--user-data-dir={tmp_path / 'profile2'}",
        f"--screenshot={shot}",
        "--window-size=1200,1600",
        (tmp_path / "report.html").as_uri(),
    )
    assert shot.read_bytes().startswith(b"\x89PNG") and shot.stat().st_size > 20_000


def test_a_report_of_another_harness_version_still_reads() -> None:
    """Fields a newer or older harness wrote are ignored; missing optional ones default."""
    data = json.loads(report(result("a", ttft=0.3)).to_json())
    data["results"][0]["new_field"] = 1
    del data["results"][0]["ttft_s"]
    data["results"][0]["evidence"] = {"status": 200, "future": True}
    again = Report.from_dict(data)
    assert again.results[0].ttft_s is None and again.results[0].evidence is not None
