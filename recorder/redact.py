"""Replace secrets in recorded traffic with stable placeholders (basic version).

A ``Redactor`` maps every secret value it sees to a placeholder ``<REDACTED:kind:n>``; the same
value always gets the same placeholder within one ``Redactor`` (use one per cassette), so
requests that shared a token still share it after redaction. What counts as a secret follows
docs/cassette-format.md and PROTOCOL.md sections 1 (cookies, ``bx-ua``/``bx-umidtoken``, JWT
``token`` cookie, ``Authorization``), 7.1 (STS credentials) and 10 (``x5secdata`` in punish
URLs). Values that already look like placeholders (``<...>``) are left alone. Pure, no I/O.
"""

from __future__ import annotations

import re

__all__ = ["Redactor"]

_JWT = re.compile(r"eyJ[A-Za-z0-9_-]+\.eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
_QUERY = re.compile(
    r"(?P<prefix>[?&;](?P<name>key|x5secdata|Signature|OSSAccessKeyId|[\w.-]*security-token)=)"
    r"(?P<value>[^&#\s\"'<>]+)",
    re.IGNORECASE,
)
_JSON_FIELD = re.compile(
    r'(?P<prefix>"(?P<name>token|refresh_token|access_key_secret|security_token|access_key_id'
    r'|password|email)"\s*:\s*")(?P<value>(?:[^"\\]|\\.)+)(?=")'
)
_QUERY_KINDS = {
    "key": "key",
    "x5secdata": "x5sec",
    "signature": "signature",
    "ossaccesskeyid": "key",
}
_FIELD_KINDS = {
    "token": "token",
    "refresh_token": "token",
    "security_token": "token",
    "access_key_secret": "secret",
    "access_key_id": "key",
    "password": "password",
    "email": "email",
}
_NAMED_HEADERS = {"bx-ua": "bx-ua", "bx-umidtoken": "bx-umidtoken", "bx-et": "bx-et"}
_SECRET_WORDS = ("token", "secret", "cookie", "auth")


def _is_placeholder(value: str) -> bool:
    v = value.strip()
    return len(v) >= 2 and v.startswith("<") and v.endswith(">")


class Redactor:
    """Stable secret -> placeholder mapping for one cassette.

    Placeholders look like ``<REDACTED:kind:n>`` where ``n`` counts distinct values per kind
    from 1. ``mapping`` exposes ``{secret: placeholder}`` (keep it out of any file).
    """

    def __init__(self) -> None:
        self.mapping: dict[str, str] = {}
        self._counts: dict[str, int] = {}

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
        ``Set-Cookie`` keep cookie names and attributes; ``bx-ua``, ``bx-umidtoken``, ``bx-et``,
        ``x5sec*`` and any name containing token/secret/cookie/auth are replaced whole; other
        values go through ``text`` (JWTs, e-mail addresses, signed-URL keys).
        """
        return {
            name: [self.header_value(name, v) for v in values] for name, values in headers.items()
        }

    def uri(self, u: str) -> str:
        """``u`` with signed-URL query values, JWTs and e-mail addresses replaced."""
        return self.text(u)

    def text(self, s: str) -> str:
        """``s`` with secrets replaced wherever they occur.

        Replaced: JSON string fields named token, refresh_token, access_key_secret,
        security_token, access_key_id, password, email; JWTs (``eyJ….eyJ….…``); query values of
        ``key``, ``x5secdata``, ``Signature``, ``OSSAccessKeyId`` and ``*security-token``; e-mail
        addresses.
        """

        def field_sub(m: re.Match[str]) -> str:
            kind = _FIELD_KINDS[m.group("name")]
            return m.group("prefix") + self.placeholder(m.group("value"), kind)

        def query_sub(m: re.Match[str]) -> str:
            name = m.group("name").lower()
            kind = _QUERY_KINDS.get(name, "token")
            return m.group("prefix") + self.placeholder(m.group("value"), kind)

        out = _JSON_FIELD.sub(field_sub, s)
        out = _JWT.sub(lambda m: self.placeholder(m.group(0), "token"), out)
        out = _QUERY.sub(query_sub, out)
        out = _EMAIL.sub(lambda m: self.placeholder(m.group(0), "email"), out)
        return out
