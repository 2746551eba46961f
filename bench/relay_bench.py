"""Benchmark the streaming relay against a plain aiohttp translating relay, in the same run.

Four processes on loopback (bench/README.md, "Method"): a mock chat.qwen.ai (Qwen-shaped
SSE: response.created, N answer frames with usage, the finished frame), the gateway
(``python -m proxy serve``, logging at info: one line per request, as deployed), the reference
``bench/plain_relay.py`` (one ClientSession, line splitting, json.loads/json.dumps per frame, no
logging), and this load client. ``--pin`` puts both servers on CPU 0 and mock + client on CPU 1.

Metrics, each a ratio gateway / plain relay measured in the same run (with its goal):
- CPU per stream: CPU-seconds (utime + stime from /proc/<pid>/stat) per short stream at
  concurrency C, over interleaved rounds (gateway, plain, gateway, plain…); medians, and the
  median of the rounds' ratios (a noisy round does not move it). Goal ≤ 0.6×.
- RSS per open stream: (RSS with K streams held open after their first token - RSS before) / K.
  Goal < 1×.
- Added TTFT p50 at c = 1: time to the first content byte minus the same through nothing
  ("direct": chats/new then the completions stream straight against the mock). Goal ≤ 1×.

Usage: ``make bench`` or ``python bench/relay_bench.py [--frames 25] [--concurrency 50]
[--streams 500] [--rounds 6] [--open 200] [--n 200] [--pin] [--perf]``. Prints the Markdown
table the README shows. Nothing here is a test: numbers vary by machine and load; read them
with their conditions.
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
HOLD = web.AppKey("hold", asyncio.Event | None)  # type: ignore[arg-type]


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
        for i, p in enumerate(pieces):
            await resp.write(p)
            hold = request.app[HOLD]
            if i == 0 and hold is not None:
                await hold.wait()  # the RSS phase: streams stay open after their first token
        await resp.write(tail)
        await resp.write_eof()
        return resp

    async def hold_h(request: web.Request) -> web.Response:
        request.app[HOLD] = asyncio.Event()
        return web.Response(text="held")

    async def release_h(request: web.Request) -> web.Response:
        event = request.app[HOLD]
        request.app[HOLD] = None
        if event is not None:
            event.set()
        return web.Response(text="released")

    app = web.Application()
    app[HOLD] = None
    app.router.add_post("/bench/hold", hold_h)
    app.router.add_post("/bench/release", release_h)
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
    """CPU time of process ``pid`` in seconds (user + system, every thread): the nanosecond
    on-CPU times of ``/proc/<pid>/task/*/schedstat`` where the kernel keeps them, else utime +
    stime from ``/proc/<pid>/stat`` (counted in clock ticks, 10 ms)."""
    if SCHEDSTAT:
        total = 0
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                total += int((task / "schedstat").read_text().split()[0])
            except (OSError, ValueError, IndexError):
                pass  # a thread that just ended
        return total / 1e9
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime


SCHEDSTAT = Path("/proc/self/schedstat").exists()


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


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def throughput(s: aiohttp.ClientSession, base: str, streams: int, conc: int) -> int:
    """Run ``streams`` streams at concurrency ``conc``; returns the chunks relayed."""
    sem = asyncio.Semaphore(conc)
    relayed = 0

    async def one() -> None:
        nonlocal relayed
        async with sem:
            _, n = await ttft_proxy(s, base)
        relayed += n

    await asyncio.gather(*(one() for _ in range(streams)))
    return relayed


async def open_streams(
    s: aiohttp.ClientSession, mock: str, base: str, pid: int, n: int
) -> tuple[float, int]:
    """Hold ``n`` streams open after their first token; ``(KiB of RSS per open stream, idle
    RSS KiB)`` of process ``pid``."""
    idle = rss_kib(pid)
    async with s.post(f"{mock}/bench/hold") as r:
        await r.read()
    ready = 0
    all_ready = asyncio.Event()

    async def one() -> None:
        nonlocal ready
        async with s.post(f"{base}/v1/chat/completions", json=BODY) as r:
            seen = False
            async for chunk in r.content.iter_any():
                if not seen and b"tok0" in chunk:
                    seen = True
                    ready += 1
                    if ready == n:
                        all_ready.set()

    tasks = [asyncio.ensure_future(one()) for _ in range(n)]
    await asyncio.wait_for(all_ready.wait(), 60)
    await asyncio.sleep(0.3)  # let the server settle (buffers allocated, nothing in flight)
    steady = rss_kib(pid)
    async with s.post(f"{mock}/bench/release") as r:
        await r.read()
    await asyncio.gather(*tasks)
    return (steady - idle) / n, idle


def _spawn(cmd: list[str], pin: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*pin, sys.executable, *cmd], cwd=ROOT, env=env, stderr=subprocess.DEVNULL
    )


async def main_async(args: argparse.Namespace) -> None:
    mock_port, proxy_port, plain_port = free_port(), free_port(), free_port()
    pin_proxy = ["taskset", "-c", "0"] if args.pin else []
    pin_rest = ["taskset", "-c", "1"] if args.pin else []
    env = dict(os.environ, QWEN_PROXY_LOG_LEVEL=args.log_level)
    if args.spare_chats:
        env["QWEN_PROXY_SPARE_CHATS"] = "true"
    mock_base = f"http://127.0.0.1:{mock_port}"
    mock = _spawn([__file__, "--mock", str(mock_port), "--frames", str(args.frames)], pin_rest, env)
    profile = ["-m", "cProfile", "-o", args.profile] if args.profile else []
    perf = ["-X", "perf"] if args.perf else []
    proxy = _spawn(
        [
            *perf,
            *profile,
            "-m",
            "proxy",
            "serve",
            "--port",
            str(proxy_port),
            "--upstream",
            mock_base,
        ],
        pin_proxy,
        env,
    )
    plain = _spawn(
        [str(ROOT / "bench" / "plain_relay.py"), str(plain_port), mock_base], pin_proxy, env
    )
    if args.pin:
        os.sched_setaffinity(0, {1})
    try:
        proxy_base = f"http://127.0.0.1:{proxy_port}"
        plain_base = f"http://127.0.0.1:{plain_port}"
        await wait_ready(f"{mock_base}/api/models")
        await wait_ready(f"{proxy_base}/healthz")
        await wait_ready(f"{plain_base}/healthz")
        servers = {"gateway": (proxy_base, proxy.pid), "plain relay": (plain_base, plain.pid)}
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
            for _ in range(30):  # warm-up (model list cache, connection pools)
                await ttft_direct(s, mock_base)
                for base, _pid in servers.values():
                    await ttft_proxy(s, base)
            for base, _pid in servers.values():
                await throughput(s, base, args.concurrency * 2, args.concurrency)
            # 1. TTFT at c = 1, interleaved
            ttft: dict[str, list[float]] = {"direct": [], **{k: [] for k in servers}}
            for _ in range(args.n):
                ttft["direct"].append(await ttft_direct(s, mock_base))
                for name, (base, _pid) in servers.items():
                    ttft[name].append((await ttft_proxy(s, base))[0])
            # 2. CPU per stream at concurrency C, interleaved rounds
            rounds: dict[str, list[float]] = {k: [] for k in servers}  # CPU s per stream
            chunks = {k: 0 for k in servers}
            streams = {k: 0 for k in servers}
            for i in range(args.rounds):
                order = list(servers.items())
                for name, (base, pid) in order if i % 2 == 0 else order[::-1]:
                    c0 = cpu_seconds(pid)
                    chunks[name] += await throughput(s, base, args.streams, args.concurrency)
                    rounds[name].append((cpu_seconds(pid) - c0) / args.streams)
                    streams[name] += args.streams
            # 3. RSS per open stream
            rss = {}
            for name, (base, pid) in servers.items():
                rss[name] = (await open_streams(s, mock_base, base, pid, args.open))[0]
        ms = 1000.0
        added = {
            k: statistics.median([v - d for v, d in zip(ttft[k], ttft["direct"], strict=True)])
            for k in servers
        }
        # medians over the rounds, and the ratio of each round to its neighbour (the two
        # servers run one after the other in each round): robust to a noisy round
        per_stream = {k: statistics.median(v) * ms for k, v in rounds.items()}
        g, p = "gateway", "plain relay"
        ratios = sorted(a / b for a, b in zip(rounds[g], rounds[p], strict=True))
        chunks_per_stream = chunks[g] / streams[g]
        print(
            f"Conditions: {args.frames} answer frames per stream ({chunks_per_stream:.0f} chunks "
            f"to the client), CPU at concurrency {args.concurrency} over {args.rounds} "
            f"interleaved rounds of {args.streams} streams (medians; the ratio is the median "
            f"of the rounds' ratios, range {ratios[0]:.2f}–{ratios[-1]:.2f}×), TTFT at c = 1 "
            f"(n = {args.n}), RSS "
            f"with {args.open} streams held open; log level {args.log_level}; pin={args.pin}; "
            f"spare_chats={args.spare_chats}; "
            f"{os.cpu_count()} CPUs."
        )
        print()
        print("| metric | gateway | plain aiohttp relay | ratio (gateway / plain) | goal |")
        print("|---|---|---|---|---|")
        print(
            f"| CPU per stream | {per_stream[g]:.3f} ms | {per_stream[p]:.3f} ms | "
            f"**{statistics.median(ratios):.2f}×** | ≤ 0.6× (aim 0.5×) |"
        )
        print(
            f"| RSS per open stream | {rss[g]:.1f} KiB | {rss[p]:.1f} KiB | "
            f"**{rss[g] / rss[p]:.2f}×** | < 1× |"
        )
        print(
            f"| added TTFT p50 (vs direct {pct(ttft['direct'], 0.5) * ms:.2f} ms) | "
            f"{added[g] * ms:.2f} ms | {added[p] * ms:.2f} ms | "
            f"**{added[g] / added[p]:.2f}×** | ≤ 1× |"
        )
        # the two servers answered the same request in turn: their difference, request by
        # request, is less noisy than the ratio of two medians
        paired = sorted(a - b for a, b in zip(ttft[g], ttft[p], strict=True))
        print(
            f"| TTFT gateway − plain, paired per request | median {pct(paired, 0.5) * ms:+.2f} ms "
            f"(IQR {pct(paired, 0.25) * ms:+.2f} to {pct(paired, 0.75) * ms:+.2f}) | | | "
            "(information) |"
        )
        print(
            f"| TTFT p99 | {pct(ttft[g], 0.99) * ms:.2f} ms | {pct(ttft[p], 0.99) * ms:.2f} ms | "
            f"{pct(ttft[g], 0.99) / pct(ttft[p], 0.99):.2f}× | (information) |"
        )
    finally:
        for proc in (proxy, plain):
            proc.send_signal(2)  # SIGINT: a clean shutdown (and the profile is written)
        mock.terminate()
        for proc in (proxy, plain, mock):
            proc.wait(10)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mock", type=int, help=argparse.SUPPRESS)
    p.add_argument("--frames", type=int, default=25, help="answer frames per stream")
    p.add_argument("--n", type=int, default=200, help="sequential TTFT samples per server")
    p.add_argument("--concurrency", type=int, default=50)
    p.add_argument("--streams", type=int, default=500, help="streams per CPU round")
    p.add_argument("--rounds", type=int, default=6, help="interleaved CPU rounds")
    p.add_argument("--open", type=int, default=200, help="streams held open for RSS")
    p.add_argument("--log-level", default="info", help="the gateway's log level")
    p.add_argument("--perf", action="store_true", help="run the gateway with -X perf")
    p.add_argument(
        "--spare-chats",
        action="store_true",
        help="run the gateway with spare_chats on (chats made ahead: no chats/new before TTFT)",
    )
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
