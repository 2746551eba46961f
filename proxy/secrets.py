"""Masking known secrets and any long fragment of them, however they were re-encoded.

A :class:`SecretMasker` is built from the secrets the process knows (chat.qwen.ai tokens, cookie
values, client API keys, the key given to ``qwen-proxy check``). :meth:`SecretMasker.mask`
replaces, in any text, every run of at least ``min_fragment`` characters that also occurs in one
of those secrets: the whole secret, one segment of a JWT, a prefix or suffix of a truncated
echo. Matching is case-insensitive and sees through the encodings an upstream or a target uses
when it echoes a value: JSON escapes (``\\u0041``, ``\\/``) and URL percent-encoding (``%2E``).
The masked span covers the encoded characters, so nothing of the secret is left.

Pure: no I/O, no globals. Cost: one set lookup per position of each run of token-like
characters at least ``min_fragment`` long (short texts and ordinary words cost almost nothing).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["SecretMasker", "cookie_values"]

# characters a secret (or its encoded echo) may be made of; anything else ends a run
_RUN = re.compile(r"[A-Za-z0-9_\-.~+/=%\\:]+")
_HEX = frozenset("0123456789abcdefABCDEF")
_JSON_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", '"': '"', "/": "/"}
_JSON_ESCAPES["\\"] = "\\"


def cookie_values(header: str) -> list[str]:
    """The values of a ``Cookie`` header (``a=1; b=2`` → ``["1", "2"]``), each a secret."""
    out = []
    for part in header.split(";"):
        _, sep, value = part.partition("=")
        value = value.strip() if sep else part.strip()
        if value:
            out.append(value)
    return out


def _decode(run: str) -> tuple[str, list[int]]:
    """``run`` with JSON and percent escapes decoded, lower-cased, and for each decoded
    character the index in ``run`` where its encoding starts (plus one final end index)."""
    chars: list[str] = []
    starts: list[int] = []
    i, n = 0, len(run)
    while i < n:
        c = run[i]
        starts.append(i)
        if c == "\\" and i + 1 < n:
            nxt = run[i + 1]
            if nxt == "u" and i + 6 <= n and all(h in _HEX for h in run[i + 2 : i + 6]):
                chars.append(chr(int(run[i + 2 : i + 6], 16)).lower())
                i += 6
                continue
            if nxt in _JSON_ESCAPES:
                chars.append(_JSON_ESCAPES[nxt])
                i += 2
                continue
        elif c == "%" and i + 3 <= n and run[i + 1] in _HEX and run[i + 2] in _HEX:
            code = int(run[i + 1 : i + 3], 16)
            if code < 0x80:
                chars.append(chr(code).lower())
                i += 3
                continue
        chars.append(c.lower())
        i += 1
    starts.append(n)
    return "".join(chars), starts


class SecretMasker:
    """Replaces known secrets and their fragments in text.

    ``secrets``: the secret strings (empty ones are ignored); ``min_fragment``: the shortest
    run of characters, in characters, that counts as a fragment (a secret shorter than that is
    matched whole, if at least 4 characters long); ``replacement``: what a masked span becomes.
    """

    __slots__ = ("_blocks", "_grams", "_min_run", "_replacement")

    def __init__(
        self,
        secrets: Iterable[str],
        *,
        min_fragment: int = 10,
        replacement: str = "<redacted>",
    ) -> None:
        self._replacement = replacement
        cleaned = {s.strip().lower() for s in secrets if s and len(s.strip()) >= 4}
        # length -> the fragments of that length: k-grams of long secrets, short secrets whole
        grams: dict[int, set[str]] = {}
        for s in cleaned:
            k = min(min_fragment, len(s))
            bucket = grams.setdefault(k, set())
            for i in range(len(s) - k + 1):
                bucket.add(s[i : i + k])
        self._grams = tuple((k, frozenset(v)) for k, v in sorted(grams.items()))
        self._min_run = self._grams[0][0] if self._grams else 0
        # Anchors for the fast path: every fragment of length k contains one whole aligned
        # block of length (k + 1) // 2 of its secret, so only where a block occurs can a
        # fragment start (str.find runs in C).
        blocks: set[tuple[str, int, frozenset[str]]] = set()
        by_k = dict(self._grams)
        for s in cleaned:
            k = min(min_fragment, len(s))
            b = (k + 1) // 2
            for a in range(0, len(s) - b + 1, b):
                blocks.add((s[a : a + b], k, by_k[k]))
        self._blocks = tuple(blocks)

    def __bool__(self) -> bool:
        return bool(self._grams)

    def mask(self, text: str) -> str:
        """``text`` with every secret fragment (and its encoded characters) replaced."""
        if not self._grams or len(text) < self._min_run:
            return text
        if "\\" not in text and "%" not in text:
            return self._mask_plain(text)
        out: list[str] = []
        last = 0
        for m in _RUN.finditer(text):
            if m.end() - m.start() < self._min_run:
                continue
            spans = self._spans(m.group())
            for a, b in spans:
                out.append(text[last : m.start() + a])
                out.append(self._replacement)
                last = m.start() + b
        if not out:
            return text
        out.append(text[last:])
        return "".join(out)

    def _mask_plain(self, text: str) -> str:
        """The fast path for text without escapes: find block anchors, confirm fragments."""
        low = text.lower()
        n = len(low)
        hits: list[tuple[int, int]] = []
        for block, k, grams in self._blocks:
            i = low.find(block)
            while i != -1:
                for j in range(max(0, i + len(block) - k), min(i, n - k) + 1):
                    if low[j : j + k] in grams:
                        hits.append((j, j + k))
                i = low.find(block, i + 1)
        if not hits:
            return text
        out: list[str] = []
        last = 0
        for a, b in _merge(hits):
            out.append(text[last:a])
            out.append(self._replacement)
            last = b
        out.append(text[last:])
        return "".join(out)

    def _spans(self, run: str) -> list[tuple[int, int]]:
        """Merged ``(start, end)`` spans of ``run`` covered by secret fragments."""
        decoded, starts = _decode(run)
        hits: list[tuple[int, int]] = []
        for k, grams in self._grams:
            for i in range(len(decoded) - k + 1):
                if decoded[i : i + k] in grams:
                    hits.append((i, i + k))
        return [(starts[a], starts[b]) for a, b in _merge(hits)]


def _merge(hits: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Overlapping or touching ``(start, end)`` spans merged, in order."""
    if not hits:
        return []
    hits.sort()
    merged = [hits[0]]
    for a, b in hits[1:]:
        if a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
        else:
            merged.append((a, b))
    return merged
