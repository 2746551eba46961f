"""Benchmark the front doors' stream renderers: CPU per 1,000 text chunks.

In-process and pure (no network): one answer of small text chunks (1-8 characters, like
chat.qwen.ai's incremental ``answer`` frames, with a reasoning part first) goes through each
front door's stream renderer as the relay calls it, one ``Text`` event per ``render`` call:

- ``openai_chat``: :class:`proxy.frontdoors.openai_chat.ChatStream` (``chat.completion.chunk``);
- ``responses``: :class:`proxy.frontdoors.responses.ResponsesStreamRenderer` (Responses events
  with sequence numbers; a delta frame built from a cached per-item head).

Each is run at 1k, 10k and 100k chunks: a constant cost per 1,000 chunks shows the renderer does
no work that grows with the answer (the Responses renderer keeps the text of the open item for
its ``.done`` events; that is one list append per chunk).

Usage: ``python bench/renderer_bench.py [--repeat 5]``. Prints a Markdown table (best of
``--repeat`` runs, microseconds per 1,000 chunks).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import orjson

from proxy.frontdoors.openai_chat import ChatStream, parse_chat
from proxy.frontdoors.responses import ResponsesStreamRenderer, new_ids, parse_request
from proxy.qwen.translate import Finish, OutEvent, Text, Usage

SIZES = (3, 1, 5, 8, 2, 6, 4, 7)
TEXT = "The quick brown fox jumps over the lazy dog, and then it naps in the sun. "


def events(n: int) -> list[OutEvent]:
    """``n`` text events (the first tenth reasoning, the rest content), then a finish."""
    out: list[OutEvent] = []
    pos = 0
    for i in range(n):
        size = SIZES[i % len(SIZES)]
        piece = (TEXT * 2)[pos : pos + size]
        pos = (pos + size) % len(TEXT)
        out.append(Text("reasoning" if i < n // 10 else "content", piece))
    out.append(Finish("stop"))
    return out


def openai_chat() -> Callable[[OutEvent], bytes]:
    body = {"model": "qwen3-max", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    renderer = ChatStream(parse_chat(orjson.dumps(body)))
    renderer.head()
    usage = Usage(10, 20)
    return lambda e: renderer.render([e], usage)


def responses() -> Callable[[OutEvent], bytes]:
    renderer = ResponsesStreamRenderer(
        parse_request({"model": "qwen3-max", "input": "hi", "stream": True}), new_ids()
    )
    renderer.head()
    usage = Usage(10, 20)
    return lambda e: renderer.render([e], usage)


RENDERERS: dict[str, Callable[[], Callable[[OutEvent], bytes]]] = {
    "openai_chat": openai_chat,
    "responses": responses,
}


def run(make: Callable[[], Callable[[OutEvent], bytes]], evs: list[OutEvent]) -> float:
    """Seconds to render ``evs`` one by one with a fresh renderer."""
    render = make()
    t0 = time.perf_counter()
    for e in evs:
        render(e)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per cell (best is kept)")
    args = parser.parse_args()
    sizes = (1_000, 10_000, 100_000)
    print("| renderer | " + " / ".join(f"{n // 1000}k" for n in sizes) + " chunks |")
    print("|---|---|")
    for name, make in RENDERERS.items():
        cells = []
        for n in sizes:
            evs = events(n)
            best = min(run(make, evs) for _ in range(args.repeat))
            cells.append(f"{best / n * 1e6 * 1000:.0f}")
        print(f"| {name} | {' / '.join(cells)} µs per 1,000 |")


if __name__ == "__main__":
    main()
