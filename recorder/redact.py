"""Replace secrets in recorded traffic with stable placeholders, before anything touches disk.

A ``Redactor`` maps every secret value it sees to a placeholder ``<REDACTED:kind:n>``; the same
value always gets the same placeholder within one ``Redactor`` (use one per cassette), so
requests that shared a token still share it after redaction. What counts as a secret follows
docs/cassette-format.md and docs/protocol.md sections 1 (cookies, ``bx-ua``/``bx-umidtoken``, JWT
``token`` cookie, ``Authorization``), 7.1 (STS credentials of getstsToken answers, signed
``file_url``), 9 (sign-in tokens, e-mail, password hash) and 10 (``x5secdata`` in punish URLs).
Values that already look like placeholders (``<...>``) are left alone. Server-issued ids (chat
ids, response ids, file ids) are not secrets and are never replaced, so ids that matched before
redaction still match after it.

Streamed bodies keep their chunk boundaries: :meth:`Redactor.chunks` redacts the whole body and
maps every original boundary through the edits (docs/recording.md §2.2). Pure, no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["Redactor"]

_JWT = re.compile(r"eyJ[A-Za-z0-9_-]+\.eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
_QUERY = re.compile(
    r"(?P<prefix>[?&;](?P<name>key|x5secdata|x5sec|Signature|OSSAccessKeyId"
    r"|[\w.-]*security-token|token|access_token|refresh_token|auth_key)=)"
    r"(?P<value>[^&#\s\"'<>]+)",
    re.IGNORECASE,
)
_JSON_FIELD = re.compile(
    r'(?P<prefix>"(?P<name>[A-Za-z0-9_-]{1,40})"\s*:\s*")(?P<value>(?:[^"\\]|\\.)+)(?=")'
)
_QUERY_KINDS = {
    "key": "key",
    "x5secdata": "x5sec",
    "x5sec": "x5sec",
    "signature": "signature",
    "ossaccesskeyid": "key",
}
# JSON field names (lower-cased, without "_" and "-") whose string values are secrets.
_FIELD_KINDS = {
    "token": "token",
    "refreshtoken": "token",
    "accesstoken": "token",
    "securitytoken": "token",
    "ststoken": "token",
    "authorization": "token",
    "accesskeysecret": "secret",
    "clientsecret": "secret",
    "secret": "secret",
    "accesskeyid": "key",
    "password": "password",
    "email": "email",
    "cookie": "cookie",
    "x5sec": "x5sec",
    "x5secdata": "x5sec",
    "bxua": "bx-ua",
    "bxumidtoken": "bx-umidtoken",
}
_NAMED_HEADERS = {"bx-ua": "bx-ua", "bx-umidtoken": "bx-umidtoken", "bx-et": "bx-et"}
_SECRET_WORDS = (
    "token",
    "secret",
    "cookie",
    "auth",
    "csrf",
    "xsrf",
    "session",
    "signature",
    "api-key",
    "apikey",
    "password",
    "umid",
)

_MIN_ECHO = 12
"""Shortest known secret (or piece of one) searched for anywhere in the text, characters."""

Span = tuple[int, int, str]
"""``(start, end, replacement)`` in character offsets of the redacted string."""


def _is_placeholder(value: str) -> bool:
    v = value.strip()
    return len(v) >= 2 and v.startswith("<") and v.endswith(">")


def _field_kind(name: str) -> str | None:
    return _FIELD_KINDS.get(name.lower().replace("_", "").replace("-", ""))


class Redactor:
    """Stable secret -> placeholder mapping for one cassette.

    Placeholders look like ``<REDACTED:kind:n>`` where ``n`` counts distinct values per kind
    from 1. ``mapping`` exposes ``{secret: placeholder}`` (keep it out of any file).
    """

    def __init__(self) -> None:
        self.mapping: dict[str, str] = {}
        self._counts: dict[str, int] = {}
        # encodings and pieces of known secrets -> their placeholder: a JWT's segments, the
        # secret with "." percent-encoded; found wherever they occur, not only in known slots
        self._echoes: dict[str, str] = {}

    def placeholder(self, value: str, kind: str) -> str:
        """The placeholder for ``value`` (reused when seen before); placeholders pass through."""
        if not value or _is_placeholder(value):
            return value
        known = self.mapping.get(value)
        if known is not None:
            return known
        n = self._counts.get(kind, 0) + 1
        self._counts[kind] = n
        ph = f"<REDACTED:{kind}:{n}>"
        self.mapping[value] = ph
        if len(value) >= _MIN_ECHO:
            self._echoes[value] = ph
            for enc in (value.replace(".", "%2E"), value.replace(".", "%2e")):
                self._echoes.setdefault(enc, ph)
            for segment in value.split("."):
                if len(segment) >= _MIN_ECHO:
                    self._echoes.setdefault(segment, ph)
        return ph

    def _cookie_pairs(self, value: str, *, attributes: bool) -> str:
        """Redact ``name=value`` pairs separated by ``;``; with ``attributes`` only the first."""
        parts = value.split(";")
        out: list[str] = []
        for i, part in enumerate(parts):
            if attributes and i > 0:
                out.append(part)
                continue
            name, sep, val = part.partition("=")
            if not sep:
                out.append(part)
                continue
            stripped = val.strip()
            kind = "token" if _JWT.fullmatch(stripped) else "cookie"
            new = self.placeholder(stripped, kind) if stripped else stripped
            out.append(f"{name}{sep}{val.replace(stripped, new, 1) if stripped else val}")
        return ";".join(out)

    def _authorization(self, value: str) -> str:
        scheme, sep, cred = value.strip().partition(" ")
        if not sep:
            return self.placeholder(value.strip(), "token")
        cred = cred.strip()
        return f"{scheme} {self.placeholder(cred, 'token')}"

    def header_value(self, name: str, value: str) -> str:
        """Redact one header value according to its (case-insensitive) name."""
        lname = name.lower()
        if lname == "authorization" or lname == "proxy-authorization":
            return self._authorization(value)
        if lname == "cookie":
            return self._cookie_pairs(value, attributes=False)
        if lname == "set-cookie":
            return self._cookie_pairs(value, attributes=True)
        if lname in _NAMED_HEADERS:
            return self.placeholder(value, _NAMED_HEADERS[lname])
        if lname.startswith("x5sec"):
            return self.placeholder(value, "x5sec")
        if any(word in lname for word in _SECRET_WORDS):
            return self.placeholder(value, "secret")
        return self.text(value)

    def headers(self, headers: dict[str, list[str]]) -> dict[str, list[str]]:
        """A redacted copy of ``{name: [values]}``: names kept, secret values replaced.

        ``Authorization`` keeps its scheme (``Bearer <REDACTED:token:1>``); ``Cookie`` and
        ``Set-Cookie`` keep cookie names and attributes but replace every cookie value;
        ``bx-ua``, ``bx-umidtoken``, ``bx-et``, ``x5sec*`` and any name containing token,
        secret, cookie, auth, csrf, xsrf, session, signature, api-key, password or umid are
        replaced whole; other values go through ``text`` (JWTs, e-mail addresses, signed-URL
        keys).
        """
        return {
            name: [self.header_value(name, v) for v in values] for name, values in headers.items()
        }

    def uri(self, u: str) -> str:
        """``u`` with signed-URL query values (e.g. CDN ``?key=``), JWTs and e-mails replaced."""
        return self.text(u)

    def spans(self, s: str) -> list[Span]:
        """The replacements ``text`` would make in ``s``, sorted and non-overlapping.

        Each is ``(start, end, placeholder)`` in character offsets of ``s``. Patterns are
        applied in priority order (secret JSON fields, JWTs, secret query values, e-mail
        addresses); a match overlapping an earlier one is skipped. Placeholders are allocated
        in that order, so numbering is stable for a given input.
        """
        taken: list[Span] = []

        def add(start: int, end: int, value: str, kind: str) -> None:
            if any(start < e and s0 < end for s0, e, _ in taken):
                return
            new = self.placeholder(value, kind)
            if new != value:
                taken.append((start, end, new))

        for m in _JSON_FIELD.finditer(s):
            kind = _field_kind(m.group("name"))
            if kind is not None:
                add(m.start("value"), m.end("value"), m.group("value"), kind)
        for m in _JWT.finditer(s):
            add(m.start(), m.end(), m.group(0), "token")
        for m in _QUERY.finditer(s):
            kind = _QUERY_KINDS.get(m.group("name").lower(), "token")
            add(m.start("value"), m.end("value"), m.group("value"), kind)
        for m in _EMAIL.finditer(s):
            add(m.start(), m.end(), m.group(0), "email")
        # known secrets echoed anywhere (a JSON key, a log line, one JWT segment): longest first
        for value in sorted(self._echoes, key=len, reverse=True):
            start = s.find(value)
            while start != -1:
                end = start + len(value)
                if not any(start < e and s0 < end for s0, e, _ in taken):
                    taken.append((start, end, self._echoes[value]))
                start = s.find(value, end)
        return sorted(taken)

    def text(self, s: str) -> str:
        """``s`` with secrets replaced wherever they occur.

        Replaced: string values of JSON fields named token, refresh_token, access_token,
        security_token, access_key_id, access_key_secret (any spelling: ``accessKeyId``,
        ``AccessKeySecret``…), password, email, cookie, x5sec, bx_ua, bx_umidtoken; JWTs
        (``eyJ….eyJ….…``); query values of ``key``, ``x5secdata``, ``Signature``,
        ``OSSAccessKeyId``, ``*security-token``, ``token``, ``access_token``,
        ``refresh_token``; e-mail addresses. Then every secret this ``Redactor`` has seen
        (12 characters or more), each of its JWT segments and its ``%2E``-encoded form,
        wherever they occur (echoed as a JSON key, inside an error message…).
        """
        out: list[str] = []
        pos = 0
        for start, end, new in self.spans(s):
            out.append(s[pos:start])
            out.append(new)
            pos = end
        out.append(s[pos:])
        return "".join(out)

    def chunks(self, pieces: Sequence[tuple[float, bytes]]) -> list[tuple[float, bytes]]:
        """Redact a streamed body given as ``(time, bytes)`` chunks; keep boundaries close.

        The concatenated bytes must be valid UTF-8 (raises ``UnicodeDecodeError`` otherwise).
        The joined result equals ``text`` of the joined input (as UTF-8). A boundary outside
        every replaced span keeps its position relative to the surrounding bytes; a boundary
        strictly inside a replaced span moves to the end of its placeholder. Chunks left empty
        by that move are dropped, so the result may have fewer chunks than the input. Times are
        kept unchanged.
        """
        raw = b"".join(p for _, p in pieces)
        text = raw.decode("utf-8")
        spans = self.spans(text)
        if not spans:
            return [(t, p) for t, p in pieces]
        edits: list[tuple[int, int, bytes]] = []
        char_pos = 0
        byte_pos = 0
        for start, end, new in spans:
            byte_pos += len(text[char_pos:start].encode("utf-8"))
            b_start = byte_pos
            byte_pos += len(text[start:end].encode("utf-8"))
            char_pos = end
            edits.append((b_start, byte_pos, new.encode("utf-8")))
        out_raw = bytearray()
        pos = 0
        for b_start, b_end, new_b in edits:
            out_raw += raw[pos:b_start]
            out_raw += new_b
            pos = b_end
        out_raw += raw[pos:]

        def moved(boundary: int) -> int:
            shift = 0
            for b_start, b_end, new_b in edits:
                if b_end <= boundary:
                    shift += len(new_b) - (b_end - b_start)
                elif b_start < boundary:
                    return b_start + shift + len(new_b)
                else:
                    break
            return boundary + shift

        result: list[tuple[float, bytes]] = []
        previous = 0
        cumulative = 0
        for t, piece in pieces:
            cumulative += len(piece)
            cut = moved(cumulative)
            if cut > previous:
                result.append((t, bytes(out_raw[previous:cut])))
                previous = cut
        if previous < len(out_raw):  # only when the input ended inside a span (cannot happen)
            result.append((pieces[-1][0], bytes(out_raw[previous:])))
        return result
