"""Proof that recording is faithful: a real ``mitmdump -s recorder/addon.py`` process in reverse
mode in front of the replay server (docs/recording.md §1.2, §1.4).

The replay server plays ``cassettes/chinese_emoji.json`` (``chats/new`` then a 17-chunk SSE stream
paced 10-40 ms, several chunks ending inside UTF-8 characters) at real speed; an aiohttp client
sends the cassette's requests through mitmdump with a JWT-looking token in ``Authorization`` and
``Cookie`` and records its ``iter_chunks()`` boundaries and arrival times.

Timing tolerance: every recorded chunk offset (seconds since the response headers) must be
within ``TIMING_TOL_S`` = 0.1 s of the original offset, and the client's arrival offsets within
the same 0.1 s of the recorded ones. The replay server's own pacing drifts by about 1 ms per chunk
(asyncio sleeps overshoot), so 17 chunks drift about 20 ms on an idle machine; 0.1 s leaves room
for a loaded 2-core machine while still failing if mitmproxy buffered the stream (the stream lasts
about 0.45 s).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from helpers import fake_jwt

from recorder.cassette import Cassette, Interaction
from recorder.replay import DropAfter, Fault, make_replay_app

pytest.importorskip("mitmproxy")

REPO = Path(__file__).resolve().parents[1]
ADDON = REPO / "recorder" / "addon.py"
SOURCE = REPO / "cassettes" / "chinese_emoji.json"
MITMDUMP = str(Path(sys.executable).parent / "mitmdump")
if not Path(MITMDUMP).exists():
    MITMDUMP = shutil.which("mitmdump") or ""
if not MITMDUMP:
    pytest.skip("mitmdump not installed", allow_module_level=True)

TIMING_TOL_S = 0.1
READY_DEADLINE_S = 30.0
JWT = fake_jwt("mitmdump-e2e")
SECRET_HEADERS = {
    "Authorization": f"Bearer {JWT}",
    "Cookie": f"token={JWT}; ssxmod_itna=e2e-cookie-value",
}

Arrivals = list[tuple[float, int]]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def _replay(cassette: Cassette, fault: Fault | None = None) -> AsyncIterator[int]:
    """The replay server at real speed on a loopback port; yields the port."""
    runner = web.AppRunner(make_replay_app([cassette], speed=1.0, fault=fault))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield int(runner.addresses[0][1])
    finally:
        await runner.cleanup()


@asynccontextmanager
async def _mitmdump(upstream: int, out_dir: Path, confdir: Path) -> AsyncIterator[int]:
    """A real mitmdump with the addon in reverse mode; yields its port; SIGINT on exit."""
    port = _free_port()
    log_path = out_dir.parent / f"mitmdump-{port}.log"
    cmd = [
        MITMDUMP,
        "-s",
        str(ADDON),
        "--mode",
        f"reverse:http://127.0.0.1:{upstream}",
        "--listen-host",
        "127.0.0.1",
        "-p",
        str(port),
        "--set",
        f"confdir={confdir}",
        "--set",
        f"qwen_cassette_dir={out_dir}",
        "--set",
        "qwen_hosts=127.0.0.1",
        "--set",
        "qwen_run_name=e2e",
    ]
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(*cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + READY_DEADLINE_S
        while True:
            text = log_path.read_text(errors="replace")
            if "error in script" in text or proc.returncode is not None:
                pytest.fail(f"mitmdump failed to start:\n{text}")
            if "listening at" in text:
                break
            if time.monotonic() > deadline:
                pytest.fail(f"mitmdump not listening after {READY_DEADLINE_S} s:\n{text}")
            await asyncio.sleep(0.05)
        yield port
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(proc.wait(), 20)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def _until(predicate: Callable[[], bool], what: str, limit_s: float = 10.0) -> None:
    deadline = time.monotonic() + limit_s
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def _path_qs(inter: Interaction) -> str:
    return inter.uri.split("chat.qwen.ai", 1)[1]


async def _send(
    session: aiohttp.ClientSession, port: int, inter: Interaction, *, stop_after: int | None = None
) -> tuple[int, Arrivals]:
    """Send ``inter``'s request through the proxy; return status and (arrival s, size) per HTTP
    chunk (pieces of one HTTP chunk are joined). ``stop_after``: close after that many chunks."""
    body = inter.request_body_bytes()
    headers = {"Content-Type": "application/json", **SECRET_HEADERS}
    url = f"http://127.0.0.1:{port}{_path_qs(inter)}"
    arrivals: Arrivals = []
    async with session.post(url, data=body, headers=headers) as resp:
        start = time.monotonic()
        size = 0
        async for data, end_of_chunk in resp.content.iter_chunks():
            size += len(data)
            if end_of_chunk and size:
                arrivals.append((time.monotonic() - start, size))
                size = 0
                if stop_after is not None and len(arrivals) >= stop_after:
                    resp.close()
                    break
        if size:
            arrivals.append((time.monotonic() - start, size))
        return resp.status, arrivals


def _load(out_dir: Path) -> Cassette:
    return Cassette.load(out_dir / "e2e-chat-1.json")


def _stream_end(out_dir: Path) -> str | None:
    """The ``end`` of the recorded stream once the cassette holds it, else ``None``."""
    path = out_dir / "e2e-chat-1.json"
    if not path.exists():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    streams = [i["response"].get("x_stream") for i in data["interactions"]]
    ends = [s["end"] for s in streams if s]
    return ends[0] if ends else None


@pytest.fixture(scope="module")
def confdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A mitmproxy confdir shared by the module (the CA is generated once, not in ~/.mitmproxy)."""
    return tmp_path_factory.mktemp("mitmproxy-conf")


@pytest.fixture
def original() -> Cassette:
    """The cassette the replay server plays."""
    return Cassette.load(SOURCE)


async def test_recording_is_faithful(tmp_path: Path, confdir: Path, original: Cassette) -> None:
    """Bodies are byte-identical, chunk boundaries identical, timings within 0.1 s, the client
    streamed every chunk as sent, and the tokens are redacted in the written file."""
    out_dir = tmp_path / "out"
    new_chat, stream = original.interactions
    assert stream.stream is not None
    async with _replay(original) as upstream, _mitmdump(upstream, out_dir, confdir) as port:
        async with aiohttp.ClientSession() as session:
            status, _ = await _send(session, port, new_chat)
            assert status == 200
            status, arrivals = await _send(session, port, stream)
            assert status == 200
        await _until(lambda: _stream_end(out_dir) == "eof", "the recorded stream")
    recorded = _load(out_dir)
    assert [i.method for i in recorded.interactions] == ["POST", "POST"]
    rec_new, rec_stream = recorded.interactions
    # bodies
    assert rec_new.response_body == new_chat.response_body
    assert rec_stream.body_bytes() == stream.body_bytes()
    assert rec_stream.request_body == stream.request_body
    # chunk boundaries: the recording and the client both see the original ones
    original_sizes = [n for _, n in stream.stream.chunks]
    assert rec_stream.stream is not None and rec_stream.stream.end == "eof"
    assert [n for _, n in rec_stream.stream.chunks] == original_sizes
    assert [n for _, n in arrivals] == original_sizes
    # timings
    for (t_orig, _), (t_rec, _) in zip(stream.stream.chunks, rec_stream.stream.chunks, strict=True):
        assert abs(t_rec - t_orig) <= TIMING_TOL_S, (t_orig, t_rec)
    assert abs(rec_stream.stream.t_headers_s - stream.stream.t_headers_s) <= TIMING_TOL_S
    first_client = arrivals[0][0]
    for (t_client, _), (t_rec, _) in zip(arrivals, rec_stream.stream.chunks, strict=True):
        assert abs((t_client - first_client) - t_rec) <= TIMING_TOL_S
    span = stream.stream.chunks[-1][0] - stream.stream.chunks[0][0]
    assert arrivals[-1][0] - first_client >= span - TIMING_TOL_S  # not buffered into one piece
    # secrets
    text = (out_dir / "e2e-chat-1.json").read_text(encoding="utf-8")
    assert JWT not in text and "e2e-cookie-value" not in text
    assert rec_stream.request_headers["Authorization"] == ["Bearer <REDACTED:token:1>"]
    assert rec_stream.request_headers["Cookie"] == [
        "token=<REDACTED:token:1>; ssxmod_itna=<REDACTED:cookie:1>"
    ]
    assert recorded.provenance.kind == "captured"


async def test_client_disconnect_mid_stream(
    tmp_path: Path, confdir: Path, original: Cassette
) -> None:
    """A client that leaves after 3 chunks yields a cassette with end 'error' and a prefix of
    the original chunks."""
    out_dir = tmp_path / "out"
    stream = original.interactions[1]
    assert stream.stream is not None
    async with _replay(original) as upstream, _mitmdump(upstream, out_dir, confdir) as port:
        async with aiohttp.ClientSession() as session:
            _, arrivals = await _send(session, port, stream, stop_after=3)
        assert len(arrivals) == 3
        await _until(lambda: _stream_end(out_dir) == "error", "the cut stream")
    (inter,) = _load(out_dir).interactions
    assert inter.stream is not None and inter.stream.end == "error"
    assert "client" in (inter.stream.error or "").lower()
    sizes = [n for _, n in inter.stream.chunks]
    original_sizes = [n for _, n in stream.stream.chunks]
    assert 3 <= len(sizes) < len(original_sizes)
    assert sizes == original_sizes[: len(sizes)]
    assert stream.body_bytes().startswith(inter.body_bytes())


async def test_upstream_drops_the_connection(
    tmp_path: Path, confdir: Path, original: Cassette
) -> None:
    """An upstream that drops the connection mid-body (replay fault drop_after:N) yields a cassette
    with end 'error' holding exactly the N bytes received, in the original chunks."""
    out_dir = tmp_path / "out"
    stream = original.interactions[1]
    assert stream.stream is not None
    sizes = [n for _, n in stream.stream.chunks]
    body = stream.body_bytes()
    n = sum(sizes[:4]) + 5
    while True:  # cut at a character boundary, so the recorder keeps every byte
        try:
            body[:n].decode("utf-8")
            break
        except UnicodeDecodeError:
            n += 1
    async with _replay(original, DropAfter(n)) as upstream:
        async with _mitmdump(upstream, out_dir, confdir) as port:
            async with aiohttp.ClientSession() as session:
                with pytest.raises(aiohttp.ClientPayloadError):
                    await _send(session, port, stream)
            await _until(lambda: _stream_end(out_dir) == "error", "the dropped stream")
    (inter,) = _load(out_dir).interactions
    assert inter.stream is not None and inter.stream.end == "error"
    assert inter.stream.error
    assert inter.body_bytes() == body[:n]
    assert [size for _, size in inter.stream.chunks] == [*sizes[:4], n - sum(sizes[:4])]


def test_capture_dry_run_builds_the_mitmdump_command(tmp_path: Path) -> None:
    """`qwen-record capture --dry-run` prints mitmdump with the addon and the qwen_* options."""
    from click.testing import CliRunner

    from recorder.cli import main

    res = CliRunner().invoke(
        main,
        [
            "capture",
            "--dry-run",
            "--mode",
            "reverse:https://chat.qwen.ai",
            "--port",
            "8081",
            "--dir",
            str(tmp_path),
            "--per",
            "run",
            "--",
            "--ssl-insecure",
        ],
    )
    assert res.exit_code == 0, res.output
    words = res.output.split()
    assert words[:3] == [MITMDUMP, "-s", str(ADDON)]
    for expected in (
        "reverse:https://chat.qwen.ai",
        f"qwen_cassette_dir={tmp_path}",
        "qwen_hosts=chat.qwen.ai",
        "qwen_cassette_mode=run",
        "--ssl-insecure",
    ):
        assert expected in words
    res = CliRunner().invoke(main, ["capture", "--dry-run", "--mode", "sideways"])
    assert res.exit_code == 2
    assert "reverse:URL" in res.output


async def test_capture_command_records_and_stops_on_ctrl_c(
    tmp_path: Path, confdir: Path, original: Cassette
) -> None:
    """`qwen-record capture` in reverse mode records through mitmdump and exits cleanly on SIGINT
    (forwarded once to mitmdump, which flushes the cassette)."""
    out_dir = tmp_path / "out"
    port = _free_port()
    log_path = tmp_path / "capture.log"
    async with _replay(original) as upstream:
        cmd = [
            str(Path(sys.executable).parent / "qwen-record"),
            "capture",
            "--mode",
            f"reverse:http://127.0.0.1:{upstream}",
            "--port",
            str(port),
            "--dir",
            str(out_dir),
            "--run-name",
            "e2e",
            "--",
            "--set",
            f"confdir={confdir}",
        ]
        with log_path.open("wb") as log:
            proc = await asyncio.create_subprocess_exec(*cmd, stdout=log, stderr=subprocess.STDOUT)
        await _until(
            lambda: "listening at" in log_path.read_text(errors="replace"),
            "mitmdump to listen",
            READY_DEADLINE_S,
        )
        async with aiohttp.ClientSession() as session:
            status, _ = await _send(session, port, original.interactions[0])
        assert status == 200
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 20) == 0, log_path.read_text()
    text = log_path.read_text()
    assert "mitmproxy-ca-cert.pem" not in text  # reverse mode: no CA instructions
    assert f"Stopped; cassettes are in {out_dir}/" in text
    (inter,) = _load(out_dir).interactions
    assert inter.response_body == original.interactions[0].response_body
