"""Shared test fixtures.

Tests never reach beyond loopback. Real captured payloads live outside the repository, in
``../shared/protocol/samples`` (or ``$QWEN_SHARED_DIR/protocol/samples``); tests that read them skip
cleanly where that folder is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
CASSETTES_DIR = REPO_ROOT / "cassettes"


def _shared_dir() -> Path:
    env = os.environ.get("QWEN_SHARED_DIR")
    return Path(env) if env else REPO_ROOT.parent / "shared"


@pytest.fixture
def samples_dir() -> Path:
    """The folder of real captured payloads; skips the test where it is absent."""
    path = _shared_dir() / "protocol" / "samples"
    if not path.is_dir():
        pytest.skip(
            f"real captures not found at {path}: set QWEN_SHARED_DIR to a folder holding "
            "protocol/samples/ (the published captures of docs/protocol.md §14 [S3], or your own "
            "`qwen-record capture` files under the same names) to run these tests"
        )
    return path


@pytest.fixture
def cassettes_dir() -> Path:
    """The repository's own cassettes."""
    return CASSETTES_DIR
