"""Every cassette in the repository's cassettes/ folder is valid format v1."""

from __future__ import annotations

from pathlib import Path

import pytest

from recorder.cassette import Cassette, load_all

CASSETTE_FILES = sorted((Path(__file__).resolve().parents[1] / "cassettes").glob("*.json"))
NO_FILES = pytest.mark.skip(reason="cassettes/ holds no *.json files yet")
FILE_PARAMS = [pytest.param(p, id=p.name) for p in CASSETTE_FILES] or [
    pytest.param(None, id="empty", marks=NO_FILES)
]


@pytest.mark.parametrize("path", FILE_PARAMS)
def test_cassette_file_is_valid(path: Path) -> None:
    """The file loads (schema and invariants hold) and re-serialises to the same text."""
    cassette = Cassette.load(path)
    assert cassette.interactions
    assert cassette.dumps() == path.read_text(encoding="utf-8")


def test_cassette_names_are_unique(cassettes_dir: Path) -> None:
    """No two cassettes in cassettes/ share a name."""
    if not CASSETTE_FILES:
        pytest.skip("cassettes/ holds no *.json files yet")
    names = [c.name for c in load_all([cassettes_dir])]
    assert len(names) == len(set(names))
