"""The repository stands alone for its citations.

Docstrings, comments, report texts, cassette descriptions and docs cite the project's own
reference pages (``docs/protocol.md §5.3``, ``docs/agents.md §1.3``, ``docs/clients.md §6``,
``docs/landscape.md §3.13``, ``docs/recording.md §1.2``, ``bench/README.md, "Method"``). A user's
clone has nothing else: no team notes beside the repository. These tests fail when a file cites
a notes file the repository does not hold (or a folder of notes next to it), when a
``docs/<name>.md`` citation names a page that does not exist or a section that page does not
have, and when a reference page points at a section of its own that is missing.

Reading real captures from ``../shared/protocol/samples`` (``$QWEN_SHARED_DIR``) is a mechanism
of the tests, not a citation, and stays allowed.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("proxy", "recorder", "tests", "bench", "docs", "cassettes", "schemas", "README.md")
"""What is scanned: the code, tests, benchmarks, docs, cassettes, schemas and the README."""
SUFFIXES = {".py", ".md", ".json", ".toml", ".ini", ".cfg", ".txt", ".yaml", ".yml", ".html"}
SELF_CHECKED = ("agents", "clients", "landscape", "recording")
"""Reference pages whose bare ``§N`` references point at their own sections."""

_NOTE_NAMES = ("AGENTS", "CLIENTS", "LANDSCAPE", "BENCHMARK", "TOOLING", "ARCHITECTURE", "STYLE")
_NOTE_NAMES += ("PROTOCOL", "AGENTS-CONTRACT", "STATE-CONTRACT", "BUGS", "HELPERS")
"""The team's notes and coordination files, none of which a clone has."""
_NOTE_FILE = re.compile(
    r"(?<![\w-])(" + "|".join(_NOTE_NAMES) + r")(\.md\b|\s+§|\s+sections?\s+\d)"
)
_NOTES_DIR = re.compile(r"shared/" + r"notes|\.\./shared(?!/protocol/samples)(?![\w/])")
_ISSUE = re.compile(r"\bissues?\s+\d+\b")
"""A task brief of the team's tracker ("issue 9 §2"); public threads are cited ``owner/repo#N``."""
_NUM = r"\d+(?:\.\d+)*"
_SEC = rf"(?:§\s?|sections?\s+)?{_NUM}"
_CHAIN = re.compile(
    rf"(?<![\w/.-])docs/([a-z][a-z0-9_-]*)\.md`?"
    rf"((?:(?:\s*[,;/]\s*|\s+and\s+|\s+|\s*[-–]\s*){_SEC}(?!\w))*)"
)
_BENCH = re.compile(r'bench/README\.md, "([^"]+)"')
_HEADING = re.compile(rf"^#+\s+({_NUM})\.?\s", re.MULTILINE)
_ITEM = re.compile(r"^(\d+)\.\s", re.MULTILINE)
_BARE = re.compile(rf"§\s?({_NUM})")


def scanned_files(root: Path = ROOT) -> Iterator[Path]:
    """Every text file of :data:`SCANNED` (virtualenvs and caches excluded)."""
    for name in SCANNED:
        top = root / name
        paths = [top] if top.is_file() else sorted(top.rglob("*"))
        for path in paths:
            if path.suffix in SUFFIXES and path.is_file() and "__pycache__" not in path.parts:
                yield path


def notes_citations(text: str, root: Path = ROOT) -> list[str]:
    """Every citation in ``text`` of a notes file or folder the repository does not hold, or of
    the team's issue tracker."""
    found = [
        m.group(0).strip()
        for m in _NOTE_FILE.finditer(text)
        if not (m.group(2) == ".md" and _in_repo(m.group(1) + ".md", root))
    ]
    found += [m.group(0) for m in _NOTES_DIR.finditer(text)]
    return found + [m.group(0) for m in _ISSUE.finditer(text)]


def _in_repo(name: str, root: Path) -> bool:
    return (root / name).is_file() or (root / "docs" / name).is_file()


def section_citations(text: str) -> list[tuple[str, str]]:
    """``(page, section)`` for every section a ``docs/<page>.md`` citation names; ``section`` is
    ``""`` for a citation of the page alone. Chained (``§5.5, §5.6``) and ranged (``§1.3-§1.5``,
    ``sections 2-4``) sections are each listed."""
    out: list[tuple[str, str]] = []
    for m in _CHAIN.finditer(text):
        sections = re.findall(_NUM, m.group(2))
        out += [(m.group(1), s) for s in sections] or [(m.group(1), "")]
    return out


def headings(page: Path) -> set[str]:
    """The section numbers of a Markdown page: its numbered headings (``## 3.``, ``### 3.13``)
    and the items of numbered lists that start a line under a numbered heading (item 9 of
    ``## 11.`` is ``11.9``)."""
    found: set[str] = set()
    current = ""
    for line in page.read_text(encoding="utf-8").splitlines():
        heading = _HEADING.match(line + " ")
        if heading:
            current = heading.group(1)
            found.add(current)
        elif line.startswith("#"):
            current = ""
        else:
            item = _ITEM.match(line)
            if item and current:
                found.add(f"{current}.{item.group(1)}")
    return found


def _self_references(text: str) -> list[str]:
    """Bare ``§N`` references of a page that are not part of a ``docs/<page>.md`` citation."""
    for m in _CHAIN.finditer(text):
        text = text.replace(m.group(0), " " * len(m.group(0)), 1)
    return _BARE.findall(text)


def _where(path: Path, text: str, needle: str) -> str:
    line = text[: text.find(needle)].count("\n") + 1
    return f"{path.relative_to(ROOT)}:{line}: {needle}"


def test_no_file_cites_notes_outside_the_repository() -> None:
    """No docstring, comment, message, description or doc sends a user to team notes."""
    me = Path(__file__).resolve()
    offenders = [
        _where(path, text, hit)
        for path in scanned_files()
        if path.resolve() != me
        for text in [path.read_text(encoding="utf-8", errors="replace")]
        for hit in notes_citations(text)
    ]
    assert not offenders, "citations of notes a clone does not have:\n" + "\n".join(offenders)


def test_every_docs_citation_names_an_existing_section() -> None:
    """``docs/<page>.md §N`` names a page of docs/ and a numbered heading of that page."""
    me = Path(__file__).resolve()
    offenders: list[str] = []
    pages: dict[str, set[str] | None] = {}
    for path in scanned_files():
        if path.resolve() == me:
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        for page, section in section_citations(text):
            if page not in pages:
                file = ROOT / "docs" / f"{page}.md"
                pages[page] = headings(file) if file.is_file() else None
            known = pages[page]
            if known is None:
                offenders.append(_where(path, text, f"docs/{page}.md") + " (no such page)")
            elif section and section not in known:
                offenders.append(_where(path, text, f"docs/{page}.md") + f" §{section} (missing)")
    assert not offenders, "citations of missing pages or sections:\n" + "\n".join(offenders)


@pytest.mark.parametrize("page", SELF_CHECKED)
def test_reference_pages_point_at_their_own_sections(page: str) -> None:
    """A bare ``§N`` inside a reference page names one of its own numbered headings."""
    file = ROOT / "docs" / f"{page}.md"
    text = file.read_text(encoding="utf-8")
    missing = sorted(set(_self_references(text)) - headings(file))
    assert not missing, f"docs/{page}.md refers to its own missing sections: {missing}"


def test_bench_citations_name_a_heading_of_bench_readme() -> None:
    """``bench/README.md, "Method"`` names a heading of bench/README.md."""
    readme = (ROOT / "bench" / "README.md").read_text(encoding="utf-8")
    titles = {t.strip() for t in re.findall(r"^#+\s+(.+)$", readme, re.MULTILINE)}
    cited = {
        m.group(1)
        for path in scanned_files()
        for m in _BENCH.finditer(path.read_text(encoding="utf-8", errors="replace"))
    }
    assert cited, "bench/ cites its method in bench/README.md"
    assert cited <= titles, f"bench/README.md has no heading {sorted(cited - titles)}"


_REPO_PATH = re.compile(r"`((?:proxy|recorder|tests|cassettes|schemas|bench)/[^`\s]+)`")


def missing_paths(text: str, root: Path = ROOT) -> list[str]:
    """Backticked repository paths in ``text`` (``cassettes/x.json``, ``tests/t.py::test_y``,
    globs such as ``cassettes/s13_*.json``) that name no file, or a test the file lacks."""
    out = []
    for m in _REPO_PATH.finditer(text):
        path, _, name = m.group(1).partition("::")
        files = sorted(root.glob(path)) if "*" in path else [root / path]
        ok = bool(files) and all(f.exists() for f in files)
        if ok and name:
            ok = re.search(rf"def {re.escape(name)}\b", files[0].read_text("utf-8")) is not None
        if not ok:
            out.append(m.group(1))
    return out


@pytest.mark.parametrize("page", SELF_CHECKED)
def test_reference_pages_name_files_that_exist(page: str) -> None:
    """The cassettes, tests and modules a reference page names as showing a fact exist."""
    text = (ROOT / "docs" / f"{page}.md").read_text(encoding="utf-8")
    missing = missing_paths(text)
    assert not missing, f"docs/{page}.md names files or tests that do not exist: {missing}"


def test_the_checks_can_fail(tmp_path: Path) -> None:
    """The patterns catch what they must and let the allowed forms through."""
    notes = "AGENTS" + ".md"
    assert notes_citations(f"tool markup ({notes} §1.3)") == [notes]
    assert notes_citations("see ../shared/" + "notes/BENCH.txt") != []
    assert notes_citations("captures in ../shared/protocol/samples") == []
    assert notes_citations("the README.md of the project") == []
    assert notes_citations("an empty body (LANDSCAPE §3 #2)") == ["LANDSCAPE §"]
    assert notes_citations("(TOOLING" + " section 1.4)") == ["TOOLING section 1"]
    assert notes_citations("the contract (STATE-CONTRACT" + ".md)") == ["STATE-CONTRACT.md"]
    assert notes_citations("old work (issue" + " 9 §2)") == ["issue 9"]
    assert notes_citations("Rfym21/Qwen2API#147, issues #155 and #177") == []
    (tmp_path / notes).write_text("now it is in the repository")
    assert notes_citations(f"({notes} §1)", root=tmp_path) == []

    assert section_citations("(docs/protocol.md §5.5, §5.6)") == [
        ("protocol", "5.5"),
        ("protocol", "5.6"),
    ]
    assert section_citations("docs/agents.md §1.3-§1.5: the forms") == [
        ("agents", "1.3"),
        ("agents", "1.5"),
    ]
    assert section_citations("docs/protocol.md sections 2-4, and") == [
        ("protocol", "2"),
        ("protocol", "4"),
    ]
    assert section_citations("`docs/protocol.md` section 11 (`python") == [("protocol", "11")]
    assert section_citations("[docs/architecture.md](docs/architecture.md)") == [
        ("architecture", ""),
        ("architecture", ""),
    ]
    assert section_citations("docs/agents.md §1.2, the flattened history") == [("agents", "1.2")]
    assert section_citations("egirl/docs/tool-format.md, `./docs/x.md`") == []

    page = tmp_path / "page.md"
    page.write_text(
        "# Title\n\n## 1. One\n\n### 1.2 Two\n\n## 10. Ten\n\n1. item\n2. item\n", encoding="utf-8"
    )
    assert headings(page) == {"1", "1.2", "10", "10.1", "10.2"}
    assert "1.3" not in headings(page)
    assert _self_references("see §1.2 and docs/protocol.md §7, §9, and §4") == ["1.2", "4"]

    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_a.py").write_text("def test_b(): pass\n", encoding="utf-8")
    shown = "`tests/test_a.py::test_b`, `tests/test_a.py::test_c`, `cassettes/none_*.json`"
    assert missing_paths(shown, root=tmp_path) == [
        "tests/test_a.py::test_c",
        "cassettes/none_*.json",
    ]
