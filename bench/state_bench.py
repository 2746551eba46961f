"""Benchmark the shared state: the proxy with Redis on against the same proxy with in-process state.

Four processes on loopback: the mock chat.qwen.ai of ``relay_bench.py``, a ``redis-server`` on
a free port, and two proxies that differ only in ``redis_url`` (both with two accounts and one
API key with limits, so every request takes an account slot and a key admission: the hot path
the issue bounds). The load client alternates between them (A, B, A, B…).

Metrics
- Added TTFT of Redis, c = 1: paired median of (Redis - embedded) time to the first content
  byte, n rounds; p50/p99 of each side. Goal: < 1 ms.
- CPU per stream: unpaced streams at concurrency C against each proxy in turn (``--rounds``
  alternations), the proxy's CPU-seconds per 1000 relayed chunks from /proc/<pid>/stat, and the
  ratio Redis / embedded. Goal: within 10 %.

Usage: ``python bench/state_bench.py [--n 300] [--streams 500] [--rounds 3] [--pin]``. Needs
``redis-server`` on PATH. Prints a Markdown table. Nothing here is a test: numbers vary by
machine and load; read them with their conditions.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from relay_bench import (
    ROOT,
    cpu_seconds,
    free_port,
    pct,
    wait_ready,
)

KEY = "bench-key"
BODY = {"model": "bench-model", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
HEADERS = {"Authorization": f"Bearer {KEY}"}


async def ttft(session: aiohttp.ClientSession, base: str) -> tuple[float, int]:
    t0 = time.perf_counter()
    t = -1.0
    async with session.post(f"{base}/v1/chat/completions", json=BODY, headers=HEADERS) as r:
        assert r.status == 200, await r.text()
        buf = b""
        async for chunk in r.content.iter_any():
            if t < 0 and b"tok0" in chunk:
                t = time.perf_counter() - t0
            buf += chunk
        assert buf.endswith(b"data: [DONE]\n\n"), buf[-200:]
    return t, buf.count(b"\n\n")


async def throughput(
    session: aiohttp.ClientSession, base: str, pid: int, streams: int, concurrency: int
) -> tuple[float, int, float]:
    """(wall seconds, chunks relayed, proxy CPU seconds) for ``streams`` streams."""
    sem = asyncio.Semaphore(concurrency)
    relayed = 0

    async def one() -> None:
        nonlocal relayed
        async with sem:
            _, n = await ttft(session, base)
        relayed += n  # not `relayed += await …`: that reads `relayed` before the await

    cpu0 = cpu_seconds(pid)
    t0 = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(streams)))
    return time.perf_counter() - t0, relayed, cpu_seconds(pid) - cpu0


def start_proxy(
    port: int, mock_port: int, config: Path, extra_env: dict[str, str], pin: list[str]
) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QWEN_PROXY_")}
    env |= {"QWEN_PROXY_LOG_LEVEL": "warning", **extra_env}
    return subprocess.Popen(
        [
            *pin,
            sys.executable,
            "-m",
            "proxy",
            "serve",
            "--port",
            str(port),
            "--upstream",
            f"http://127.0.0.1:{mock_port}",
            "--config",
            str(config),
        ],
        cwd=ROOT,
        env=env,
        stderr=subprocess.DEVNULL,
    )


async def main_async(args: argparse.Namespace) -> None:
    redis_bin = shutil.which("redis-server")
    if redis_bin is None:
        sys.exit("state_bench needs redis-server on PATH (apt-get install -y redis-server)")
    pin_proxy = ["taskset", "-c", "0"] if args.pin else []
    pin_rest = ["taskset", "-c", "1"] if args.pin else []
    mock_port, redis_port, emb_port, red_port = (free_port() for _ in range(4))
    tmp = Path(tempfile.mkdtemp(prefix="state-bench-"))
    config = tmp / "bench.toml"
    # two fake accounts (the mock ignores them), no per-account limit, one key with limits
    fake = ".".join(  # an obviously fake JWT (alg none), built at run time
        base64.urlsafe_b64encode(part).rstrip(b"=").decode()
        for part in (b'{"alg":"none"}', b'{"id":"bench"}', b"no")
    )
    config.write_text(
        f'tokens = ["{fake}1", "{fake}2"]\n'
        "max_inflight_per_account = 0\n"
        "[[keys]]\n"
        f'key = "{KEY}"\n'
        "requests_per_minute = 10000000\n"
        "max_streams = 100000\n"
    )
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.append(
            subprocess.Popen(  # noqa: ASYNC220
                [
                    *pin_rest,
                    redis_bin,
                    "--port",
                    str(redis_port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ],
                stdout=subprocess.DEVNULL,
            )
        )
        procs.append(
            subprocess.Popen(  # noqa: ASYNC220
                [
                    *pin_rest,
                    sys.executable,
                    str(ROOT / "bench" / "relay_bench.py"),
                    "--mock",
                    str(mock_port),
                    "--frames",
                    str(args.frames),
                ]
            )
        )
        embedded = start_proxy(emb_port, mock_port, config, {}, pin_proxy)
        redis_env = {"QWEN_PROXY_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0"}
        with_redis = start_proxy(red_port, mock_port, config, redis_env, pin_proxy)
        procs += [embedded, with_redis]
        if args.pin:
            os.sched_setaffinity(0, {1})
        emb, red = f"http://127.0.0.1:{emb_port}", f"http://127.0.0.1:{red_port}"
        await wait_ready(f"http://127.0.0.1:{mock_port}/api/models")
        for base in (emb, red):
            await wait_ready(f"{base}/healthz")
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
            async with s.get(f"{red}/healthz") as r:
                assert (await r.json())["redis"] == "ok", "the Redis proxy is not on Redis"
            for _ in range(30):  # warm-up
                await ttft(s, emb)
                await ttft(s, red)
            t_emb, t_red = [], []
            for _ in range(args.n):
                t_emb.append((await ttft(s, emb))[0])
                t_red.append((await ttft(s, red))[0])
            cpu = {"embedded": [0.0, 0], "redis": [0.0, 0]}
            walls = {"embedded": 0.0, "redis": 0.0}
            for _ in range(args.rounds):
                for name, base, proc in (("embedded", emb, embedded), ("redis", red, with_redis)):
                    wall, chunks, used = await throughput(
                        s, base, proc.pid, args.streams, args.concurrency
                    )
                    cpu[name][0] += used
                    cpu[name][1] += chunks
                    walls[name] += wall
        ms = 1000.0
        added = [r - e for r, e in zip(t_red, t_emb, strict=True)]
        per_k = {k: v[0] / max(int(v[1]), 1) * 1000 * ms for k, v in cpu.items()}
        streams_total = args.streams * args.rounds
        rows = [
            ("metric", "value", f"conditions: {args.frames} frames/stream, pin={args.pin}"),
            ("---", "---", "---"),
            (
                "TTFT embedded p50 / p99",
                f"{pct(t_emb, 0.5) * ms:.2f} / {pct(t_emb, 0.99) * ms:.2f} ms",
                f"c=1, n={args.n}",
            ),
            (
                "TTFT Redis p50 / p99",
                f"{pct(t_red, 0.5) * ms:.2f} / {pct(t_red, 0.99) * ms:.2f} ms",
                f"c=1, n={args.n}",
            ),
            ("added TTFT of Redis, paired p50", f"{statistics.median(added) * ms:.3f} ms", ""),
            (
                "proxy CPU per 1000 chunks, embedded / Redis",
                f"{per_k['embedded']:.1f} / {per_k['redis']:.1f} ms",
                f"c={args.concurrency}, {streams_total} streams each, {args.rounds} rounds",
            ),
            ("CPU ratio Redis / embedded", f"{per_k['redis'] / per_k['embedded']:.3f}", ""),
            (
                "streams/s, embedded / Redis",
                f"{streams_total / walls['embedded']:.0f} / {streams_total / walls['redis']:.0f}",
                "",
            ),
        ]
        for row in rows:
            print("| " + " | ".join(row) + " |")
    finally:
        for p in reversed(procs):
            p.send_signal(2)
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=64, help="answer frames per stream")
    p.add_argument("--n", type=int, default=300, help="TTFT samples per side (interleaved)")
    p.add_argument("--concurrency", type=int, default=50)
    p.add_argument("--streams", type=int, default=500, help="streams per throughput round")
    p.add_argument("--rounds", type=int, default=3, help="alternating throughput rounds")
    p.add_argument("--pin", action="store_true", help="proxies on CPU 0, the rest on CPU 1")
    asyncio.run(main_async(p.parse_args()))


if __name__ == "__main__":
    main()
