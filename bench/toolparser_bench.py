"""Benchmark the tool-call stream parser: CPU per 1,000 chunks, and that it stays linear.

In-process and pure (no network): an answer is cut into small chunks (1-8 characters, like
chat.qwen.ai's incremental ``answer`` frames) and fed one chunk at a time through

- ``parser``: :class:`proxy.tools.parser.ToolCallParser` alone;
- ``stage``: :class:`proxy.tools.stage.ToolStage` (parser + block decoding + jsonschema check +
  ``ToolCall`` events), what the relay runs per answer when tools are offered;
- ``encoder``: :class:`proxy.qwen.translate.ChunkEncoder` on the same chunks as ``Text`` events,
  the per-chunk work every plain stream already pays, for scale.

Answers: ``prose`` (text with ``<`` and ``a < b`` comparisons, no call), ``call`` (a preface, then
one call whose arguments fill the answer: the parser is inside a block for most chunks), and
``worst`` (every chunk ends in ``<tool_c``, so every chunk is held back and decided by the next).
Each is run at 1k, 10k and 100k chunks: a constant cost per 1,000 chunks shows the cost is
O(answer length), with no re-scanning of a growing buffer.

Usage: ``python bench/toolparser_bench.py [--repeat 5]``. Prints a Markdown table (best of
``--repeat`` runs, microseconds per 1,000 chunks).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

from proxy.conversation import Conversation, ToolSpec, Turn
from proxy.qwen.translate import ChunkEncoder, Finish, Text
from proxy.tools.parser import ToolCallParser
from proxy.tools.stage import ToolStage

TOOL = ToolSpec(
    "write_file",
    "Write a file",
    {
        "type": "object",
        "properties": {"path": {"type": "string"}, "content": {"type": "string"}},
        "required": ["path", "content"],
    },
)


def chunked(text: str, n: int) -> list[str]:
    """``text`` cut into ``n`` chunks of 1-8 characters (a fixed cycle, no randomness)."""
    sizes = (3, 1, 5, 8, 2, 6, 4, 7)
    out: list[str] = []
    pos = 0
    i = 0
    while len(out) < n:
        size = sizes[i % len(sizes)]
        piece = text[pos : pos + size]
        if not piece:
            pos = 0
            continue
        out.append(piece)
        pos += size
        i += 1
    return out


def answer(kind: str, n: int) -> list[str]:
    if kind == "prose":
        base = "If a < b then b > a; the list <ul> is fine, and so is x<y. " * 8
        return chunked(base, n)
    if kind == "worst":
        return ["ab <tool_c" if i % 2 == 0 else "x" for i in range(n)]
    head = 'I will write it.\n<tool_call>\n{"name": "write_file", "arguments": {"path": "a.txt", '
    pieces = chunked(head, 20)
    body = chunked("lorem ipsum dolor sit amet " * 20, n - len(pieces) - 1)
    content = json.dumps("".join(body))
    return [*pieces, *chunked('"content": ' + content, len(body)), "}}\n</tool_call>"]


def run_parser(chunks: list[str]) -> None:
    p = ToolCallParser()
    for c in chunks:
        p.feed(c)
    p.close()


def run_stage(chunks: list[str]) -> None:
    stage = ToolStage(Conversation("m", [Turn("user", "x")], tools=(TOOL,)))
    for c in chunks:
        stage.feed([Text("content", c)])
    stage.feed([Finish()])


def run_encoder(chunks: list[str]) -> None:
    enc = ChunkEncoder(completion_id="chatcmpl-x", model="m", created=0, include_usage=False)
    for c in chunks:
        enc.encode(Text("content", c))


def best_us_per_1000(fn: Callable[[list[str]], None], chunks: list[str], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn(chunks)
        best = min(best, time.perf_counter() - t0)
    return best / len(chunks) * 1000 * 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()
    print("| answer | chunks | parser µs/1k chunks | stage µs/1k chunks | encoder µs/1k chunks |")
    print("|---|---|---|---|---|")
    for kind in ("prose", "call", "worst"):
        for n in (1_000, 10_000, 100_000):
            chunks = answer(kind, n)
            cols = [best_us_per_1000(f, chunks, args.repeat) for f in (run_parser, run_stage)]
            enc = best_us_per_1000(run_encoder, chunks, args.repeat)
            print(f"| {kind} | {n:,} | {cols[0]:.0f} | {cols[1]:.0f} | {enc:.0f} |")


if __name__ == "__main__":
    main()
