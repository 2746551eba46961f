"""Benchmark the streaming relay: added time to first token, streams per second, CPU per chunk.

Three processes on loopback, as ../shared/notes/BENCHMARK.md §2.3 asks: a mock chat.qwen.ai
(Qwen-shaped SSE: response.created, N answer frames with usage, the finished frame), the proxy
(``python -m proxy serve``), and this load client. Optional ``--pin`` puts the proxy on CPU 0 and
the mock + client on CPU 1 (taskset).

Metrics
- TTFT, c = 1: time from request start to the first content byte. "direct" does what the proxy
  must do upstream (chats/new, then the completions stream) straight against the mock; "proxy"
  asks the proxy. Added TTFT = proxy - direct (p50, p99).
- Throughput: unpaced streams at concurrency C for a fixed number of streams; streams/s,
  chunks/s, and the proxy's CPU-seconds per 1000 relayed chunks (from /proc/<pid>/stat).

Usage: ``python bench/relay_bench.py [--n 300] [--frames 64] [--concurrency 50]
[--streams 1000] [--pin]``. Prints a Markdown table. Nothing here is a test: numbers vary by
machine; read them with their conditions.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
from aiohttp import web

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- the mock upstream (runs in its own process: `python relay_bench.py --mock PORT FRAMES`) ----


def mock_app(frames: int) -> web.Application:
    created = json.dumps(
        {"response.created": {"chat_id": "c", "parent_id": "p", "response_id": "r"}}
    )
    pieces = []
    for i in range(frames):
        frame = {
            "choices": [
                {
                    "delta": {
                        "role": "assistant",
                        "content": f" tok{i}",
                        "phase": "answer",
                        "status": "typing",
                    }
                }
            ],
            "usage": {"input_tokens": 20, "output_tokens": i + 1},
        }
        pieces.append(f"data: {json.dumps(frame)}\n\n".encode())
    finished = json.dumps(
        {"choices": [{"delta": {"content": "", "phase": "answer", "status": "finished"}}]}
    )
    head = f"data: {created}\n\n".encode()
    tail = f"data: {finished}\n\n".encode()
    models = {"data": [{"id": "bench-model", "info": {"meta": {"chat_type": ["t2t"]}}}]}

    async def models_h(_: web.Request) -> web.Response:
        return web.json_response(models)

    async def new_h(_: web.Request) -> web.Response:
        return web.json_response({"success": True, "request_id": "x", "data": {"id": "chat-1"}})

    async def completions_h(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8"})
        await resp.prepare(request)
        await resp.write(head)
        for p in pieces:
            await resp.write(p)
        await resp.write(tail)
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_get("/api/models", models_h)
    app.router.add_post("/api/v2/chats/new", new_h)
    app.router.add_post("/api/v2/chat/completions", completions_h)
    return app


# -- measurement --------------------------------------------------------------------------------

BODY = {"model": "bench-model", "stream": True, "messages": [{"role": "user", "content": "hi"}]}


async def ttft_direct(session: aiohttp.ClientSession, base: str) -> float:
    t0 = time.perf_counter()
    async with session.post(f"{base}/api/v2/chats/new", data=b"{}") as r:
        await r.read()
    async with session.post(f"{base}/api/v2/chat/completions?chat_id=chat-1", data=b"{}") as r:
        async for chunk in r.content.iter_any():
            if b"tok0" in chunk:
                t = time.perf_counter() - t0
                break
        else:
            raise RuntimeError("no content")
        await r.read()
    return t


async def ttft_proxy(session: aiohttp.ClientSession, base: str) -> tuple[float, int]:
    t0 = time.perf_counter()
    t = -1.0
    chunks = 0
    async with session.post(f"{base}/v1/chat/completions", json=BODY) as r:
        assert r.status == 200, await r.text()
        buf = b""
        async for chunk in r.content.iter_any():
            if t < 0 and b"tok0" in chunk:
                t = time.perf_counter() - t0
            buf += chunk
        assert buf.endswith(b"data: [DONE]\n\n"), buf[-200:]
        chunks = buf.count(b"\n\n")
    return t, chunks


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def wait_ready(url: str) -> None:
    async with aiohttp.ClientSession() as s:
        for _ in range(200):
            try:
                async with s.get(url) as r:
                    if r.status < 500:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


async def main_async(args: argparse.Namespace) -> None:
    mock_port, proxy_port = free_port(), free_port()
    pin_proxy = ["taskset", "-c", "0"] if args.pin else []
    pin_rest = ["taskset", "-c", "1"] if args.pin else []
    mock = subprocess.Popen(  # noqa: ASYNC220
        [
            *pin_rest,
            sys.executable,
            __file__,
            "--mock",
            str(mock_port),
            "--frames",
            str(args.frames),
        ]
    )
    env = dict(os.environ, QWEN_PROXY_LOG_LEVEL="warning")
    profile = ["-m", "cProfile", "-o", args.profile] if args.profile else []
    proxy = subprocess.Popen(  # noqa: ASYNC220
        [
            *pin_proxy,
            sys.executable,
            *profile,
            "-m",
            "proxy",
            "serve",
            "--port",
            str(proxy_port),
            "--upstream",
            f"http://127.0.0.1:{mock_port}",
        ],
        cwd=ROOT,
        env=env,
        stderr=subprocess.DEVNULL,
    )
    if args.pin:
        os.sched_setaffinity(0, {1})
    try:
        mock_base, proxy_base = f"http://127.0.0.1:{mock_port}", f"http://127.0.0.1:{proxy_port}"
        await wait_ready(f"{mock_base}/api/models")
        await wait_ready(f"{proxy_base}/healthz")
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
            for _ in range(30):  # warm-up (model list cache, connection pools)
                await ttft_direct(s, mock_base)
                await ttft_proxy(s, proxy_base)
            direct, via = [], []
            for _ in range(args.n):  # interleaved rounds
                direct.append(await ttft_direct(s, mock_base))
                via.append((await ttft_proxy(s, proxy_base))[0])
            sem = asyncio.Semaphore(args.concurrency)
            relayed = 0

            async def one() -> None:
                nonlocal relayed
                async with sem:
                    _, n = await ttft_proxy(s, proxy_base)
                relayed += n

            cpu0 = cpu_seconds(proxy.pid)
            t0 = time.perf_counter()
            await asyncio.gather(*(one() for _ in range(args.streams)))
            wall = time.perf_counter() - t0
            cpu = cpu_seconds(proxy.pid) - cpu0
        ms = 1000.0
        added = [v - d for v, d in zip(via, direct, strict=True)]
        rows = [
            ("metric", "value", f"conditions: {args.frames} frames/stream, pin={args.pin}"),
            ("---", "---", "---"),
            (
                "TTFT direct p50 / p99",
                f"{pct(direct, 0.5) * ms:.2f} / {pct(direct, 0.99) * ms:.2f} ms",
                f"c=1, n={args.n}",
            ),
            (
                "TTFT via proxy p50 / p99",
                f"{pct(via, 0.5) * ms:.2f} / {pct(via, 0.99) * ms:.2f} ms",
                f"c=1, n={args.n}",
            ),
            ("added TTFT p50 (paired)", f"{statistics.median(added) * ms:.2f} ms", ""),
            (
                "streams/s",
                f"{args.streams / wall:.1f}",
                f"c={args.concurrency}, {args.streams} streams, unpaced",
            ),
            ("chunks/s relayed", f"{relayed / wall:.0f}", ""),
            (
                "proxy CPU per 1000 chunks",
                f"{cpu / max(relayed, 1) * 1000 * ms:.1f} ms",
                "utime+stime",
            ),
        ]
        for row in rows:
            print("| " + " | ".join(row) + " |")
    finally:
        proxy.send_signal(2)  # SIGINT: a clean shutdown (and the profile is written)
        mock.terminate()
        proxy.wait(10)
        mock.wait(10)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mock", type=int, help=argparse.SUPPRESS)
    p.add_argument("--frames", type=int, default=64, help="answer frames per stream")
    p.add_argument("--n", type=int, default=300, help="sequential TTFT samples per side")
    p.add_argument("--concurrency", type=int, default=50)
    p.add_argument("--streams", type=int, default=1000, help="streams in the throughput run")
    p.add_argument("--pin", action="store_true", help="pin proxy to CPU 0, the rest to CPU 1")
    p.add_argument("--profile", help="write a cProfile of the proxy process to this file")
    args = p.parse_args()
    if args.mock:
        web.run_app(
            mock_app(args.frames), host="127.0.0.1", port=args.mock, print=None, access_log=None
        )
        return
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
