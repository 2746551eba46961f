"""Masking known secrets and any long fragment of them, however they were re-encoded.

A :class:`SecretMasker` is built from the secrets the process knows (chat.qwen.ai tokens, cookie
values, client API keys, the key given to ``qwen-proxy check``). :meth:`SecretMasker.mask`
replaces, in any text, every run of at least ``min_fragment`` characters that also occurs in one
of those secrets: the whole secret, one segment of a JWT, a prefix or suffix of a truncated
echo. Matching is case-insensitive and sees through the encodings an upstream or a target uses
when it echoes a value: JSON escapes (``\\u0041``, ``\\/``), also escaped a second time and left
as text (``\\\\u0041``), URL percent-encoding (``%2E``, also twice: ``%252E``) and HTML character
references (``&#65;``, ``&#x41;``, ``&amp;``; with ``html=True``). The masked span covers the
encoded characters, so nothing of the secret is left.

An escape is read both ways (as the character it encodes and as the characters it is written
with), since a stray ``%``, ``&`` or ``\\`` before a secret's characters can look like one.

Pure: no I/O, no globals. Cost, for text without escapes: a few ``str.find`` calls and one set
lookup per anchor found; with escapes, per position of each run of token-like characters at
least ``min_fragment`` long, one set lookup per character that still spells the beginning of a
fragment (short texts and ordinary words cost almost nothing).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["SecretMasker", "cookie_values"]

# characters a secret (or its encoded echo) may be made of; anything else ends a run
_RUN = re.compile(r"[A-Za-z0-9_\-.~+/=%\\:&#;]+")
_HEX = frozenset("0123456789abcdefABCDEF")
_JSON_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", '"': '"', "/": "/"}
_JSON_ESCAPES["\\"] = "\\"
_HTML_REF = re.compile(r"&(?:([A-Za-z]{2,6})|#([0-9]{1,7})|#[xX]([0-9a-fA-F]{1,6}));")
_HTML_NAMED = {"amp": "&", "lt": "<", "gt": ">", "quot": '"', "apos": "'"}


def cookie_values(header: str) -> list[str]:
    """The values of a ``Cookie`` header (``a=1; b=2`` → ``["1", "2"]``), each a secret."""
    out = []
    for part in header.split(";"):
        _, sep, value = part.partition("=")
        value = value.strip() if sep else part.strip()
        if value:
            out.append(value)
    return out


def _escape(run: str, i: int) -> tuple[str, int] | None:
    """The escape that starts at ``run[i]``, if any: ``(the character it encodes, lower-cased,
    the index after it)``. JSON escapes (``\\u0041``, ``\\/``), also escaped again as text
    (``\\\\u0041``: any number of backslashes before the ``u``), percent escapes of an ASCII
    character (``%2E``, also twice encoded: ``%252E``) and HTML character references
    (``&#65;``, ``&#x41;``, ``&amp;``, ``&lt;``, ``&gt;``, ``&quot;``, ``&apos;``)."""
    n = len(run)
    c = run[i]
    if c == "\\":
        j = i
        while j < n and run[j] == "\\":
            j += 1
        if j < n and run[j] == "u" and j + 5 <= n and all(h in _HEX for h in run[j + 1 : j + 5]):
            return chr(int(run[j + 1 : j + 5], 16)).lower(), j + 5
        if i + 1 < n and run[i + 1] in _JSON_ESCAPES:
            return _JSON_ESCAPES[run[i + 1]], i + 2
    elif c == "%":
        if run[i + 1 : i + 3] == "25" and i + 5 <= n and all(h in _HEX for h in run[i + 3 : i + 5]):
            code = int(run[i + 3 : i + 5], 16)  # a percent escape encoded again
            if code < 0x80:
                return chr(code).lower(), i + 5
        if i + 3 <= n and run[i + 1] in _HEX and run[i + 2] in _HEX:
            code = int(run[i + 1 : i + 3], 16)
            if code < 0x80:
                return chr(code).lower(), i + 3
    elif c == "&":
        m = _HTML_REF.match(run, i)
        if m is not None:
            name, dec, hexa = m.groups()
            if name is not None:
                char = _HTML_NAMED.get(name.lower())
            else:
                code = int(dec) if dec is not None else int(hexa, 16)
                char = chr(code) if code < 0x110000 else None
            if char is not None:
                return char.lower(), m.end()
    return None


class SecretMasker:
    """Replaces known secrets and their fragments in text.

    ``secrets``: the secret strings (empty ones are ignored); ``min_fragment``: the shortest
    run of characters, in characters, that counts as a fragment (a secret shorter than that is
    matched whole, if at least 4 characters long); ``replacement``: what a masked span becomes;
    ``html``: also read HTML character references (``&#65;``, ``&amp;``), for text that may be
    HTML (reports: off by default, since every ``&`` then takes the slower escaped path).
    """

    __slots__ = ("_blocks", "_escapes", "_grams", "_min_run", "_prefixes", "_replacement")

    def __init__(
        self,
        secrets: Iterable[str],
        *,
        min_fragment: int = 10,
        replacement: str = "<redacted>",
        html: bool = False,
    ) -> None:
        self._replacement = replacement
        self._escapes = "\\%&" if html else "\\%"
        cleaned = {s.strip().lower() for s in secrets if s and len(s.strip()) >= 4}
        # length -> the fragments of that length: k-grams of long secrets, short secrets whole
        grams: dict[int, set[str]] = {}
        for s in cleaned:
            k = min(min_fragment, len(s))
            bucket = grams.setdefault(k, set())
            for i in range(len(s) - k + 1):
                bucket.add(s[i : i + k])
        self._grams = tuple((k, frozenset(v)) for k, v in sorted(grams.items()))
        # every prefix of every fragment: a reading of escaped text is followed only while it
        # can still become a fragment
        self._prefixes = tuple(
            (k, frozenset(g[:j] for g in v for j in range(1, k + 1))) for k, v in self._grams
        )
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
        if "\\" not in text and "%" not in text and (self._escapes == "\\%" or "&" not in text):
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
        if out:
            out.append(text[last:])
            text = "".join(out)
        return self._mask_plain(text)  # what escaped runs miss: a key with other characters

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
        """Merged ``(start, end)`` spans of ``run`` covered by secret fragments, under every
        reading of its escapes: a character is read as itself, and an escape (:func:`_escape`)
        also as what it encodes, since the same text can be either (``%7b6a`` is ``{6a``
        decoded, but also a stray ``%`` before the hex digits ``7b6a`` of a secret). From each
        position, the readings are followed while they spell the beginning of a fragment."""
        low = run.lower()
        n = len(low)
        escapes = {i: e for i, c in enumerate(run) if c in self._escapes and (e := _escape(run, i))}
        hits: list[tuple[int, int]] = []
        for k, prefixes in self._prefixes:
            for i in range(n):
                branches: list[tuple[int, str]] = []
                pos, spelled = i, ""
                while True:
                    if len(spelled) == k:  # a whole fragment (the prefixes of length k)
                        hits.append((i, pos))
                    elif pos < n:
                        esc = escapes.get(pos)
                        if esc is not None and spelled + esc[0] in prefixes:
                            branches.append((esc[1], spelled + esc[0]))
                        longer = spelled + low[pos]
                        if longer in prefixes:
                            pos, spelled = pos + 1, longer
                            continue
                    if not branches:
                        break
                    pos, spelled = branches.pop()
        return _merge(hits)


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
