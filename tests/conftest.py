"""Shared test fixtures.

Tests never reach beyond loopback. Real captured payloads (browser captures published by another
project, docs/protocol.md §14 [S3]) are not in the repository: tests that read them look in
``../shared/protocol/samples`` (or ``$QWEN_SHARED_DIR/protocol/samples``) and skip cleanly where
that folder is absent.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

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


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str]:
    """A real ``redis-server`` on a free loopback port for the whole session: its URL.

    Skips (with the reason) where the binary is absent; CI installs it (``.ci/run``).
    Nothing is persisted to disk.
    """
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (apt-get install -y redis-server)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:  # ready when it accepts a connection and answers PING
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("redis-server did not start")
                time.sleep(0.02)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(autouse=True)
def _fresh_structlog() -> Iterator[None]:
    """Every test ends with structlog's defaults back: a CLI command run in-process (doctor,
    accounts) configures logging for the whole process (level, output stream), which must not
    leak into the tests that run after it."""
    yield
    structlog.reset_defaults()
