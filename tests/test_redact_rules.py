"""Every rule of the recorder's redactor on its own: one test per header rule, per
secret word, per JSON field kind, per query name; placeholders; chunk boundaries."""

from __future__ import annotations

import json

import pytest
from helpers import fake_jwt

from recorder import redact
from recorder.redact import Redactor

SECRET = "S3cr3tValue-0123456789"


@pytest.mark.parametrize("name", ["Authorization", "authorization", "Proxy-Authorization"])
def test_authorization_headers_keep_the_scheme(name: str) -> None:
    """Authorization and Proxy-Authorization: scheme kept, credential replaced."""
    assert Redactor().header_value(name, f"Bearer {SECRET}") == "Bearer <REDACTED:token:1>"


def test_bare_token_without_scheme() -> None:
    """An Authorization value without a scheme is replaced whole."""
    assert Redactor().header_value("Authorization", f" {SECRET} ") == "<REDACTED:token:1>"


def test_authorization_with_extra_spaces() -> None:
    """Spaces around the credential do not end up in the placeholder's secret."""
    red = Redactor()
    assert red.header_value("Authorization", f"Bearer   {SECRET}") == "Bearer <REDACTED:token:1>"
    assert red.mapping == {SECRET: "<REDACTED:token:1>"}


def test_cookie_header_every_value() -> None:
    """Cookie: every value replaced, names kept; a JWT value is a token, others cookies."""
    jwt = fake_jwt("x")
    out = Redactor().header_value("Cookie", f"a=1111; token={jwt}; flag; b=")
    assert out == "a=<REDACTED:cookie:1>; token=<REDACTED:token:1>; flag; b="


def test_set_cookie_keeps_attributes() -> None:
    """Set-Cookie: only the first pair's value is replaced; attributes stay."""
    out = Redactor().header_value("Set-Cookie", f"sid={SECRET}; Path=/; Domain=x.example")
    assert out == "sid=<REDACTED:cookie:1>; Path=/; Domain=x.example"


@pytest.mark.parametrize(
    ("name", "kind"),
    [("bx-ua", "bx-ua"), ("bx-umidtoken", "bx-umidtoken"), ("bx-et", "bx-et"), ("BX-UA", "bx-ua")],
)
def test_named_anti_bot_headers(name: str, kind: str) -> None:
    """Each named anti-bot header gets its own placeholder kind."""
    assert Redactor().header_value(name, SECRET) == f"<REDACTED:{kind}:1>"


@pytest.mark.parametrize("name", ["x5sec", "x5secdata", "X5SEC-extra"])
def test_x5sec_headers(name: str) -> None:
    """Headers starting with x5sec are x5sec secrets."""
    assert Redactor().header_value(name, SECRET) == "<REDACTED:x5sec:1>"


@pytest.mark.parametrize("word", redact._SECRET_WORDS)
def test_each_secret_word_in_a_header_name(word: str) -> None:
    """A header whose name contains any secret word is replaced whole."""
    assert Redactor().header_value(f"X-My-{word.upper()}-Thing", SECRET) == "<REDACTED:secret:1>"


def test_secret_words_table_size() -> None:
    """Each entry of the table has its case above (a new word needs nothing more)."""
    assert len(redact._SECRET_WORDS) == 12


def test_ordinary_header_goes_through_text() -> None:
    """Other headers are kept, except for secrets ``text`` finds in them."""
    red = Redactor()
    assert red.header_value("Accept", "text/event-stream") == "text/event-stream"
    assert red.header_value("Referer", "https://x/a?token=abc") == (
        "https://x/a?token=<REDACTED:token:1>"
    )


@pytest.mark.parametrize(("field", "kind"), sorted(redact._FIELD_KINDS.items()))
def test_each_json_field_kind(field: str, kind: str) -> None:
    """Each secret JSON field name (normalised spelling) gets its kind."""
    body = json.dumps({field: SECRET, "other": "keep"})
    assert Redactor().text(body) == json.dumps({field: f"<REDACTED:{kind}:1>", "other": "keep"})


@pytest.mark.parametrize("field", ["access_token", "AccessToken", "access-token", "ACCESSTOKEN"])
def test_field_name_spellings(field: str) -> None:
    """Underscores, hyphens and case do not matter in field names."""
    assert Redactor().text(json.dumps({field: SECRET})) == json.dumps({field: "<REDACTED:token:1>"})


def test_escaped_quotes_inside_a_field_value() -> None:
    """A value with an escaped quote is replaced whole."""
    body = '{"password": "a\\"b"}'
    assert Redactor().text(body) == '{"password": "<REDACTED:password:1>"}'


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("key", "key"),
        ("x5secdata", "x5sec"),
        ("x5sec", "x5sec"),
        ("Signature", "signature"),
        ("OSSAccessKeyId", "key"),
        ("x-oss-security-token", "token"),
        ("security-token", "token"),
        ("token", "token"),
        ("access_token", "token"),
        ("refresh_token", "token"),
        ("auth_key", "token"),
    ],
)
def test_each_query_name(name: str, kind: str) -> None:
    """Each secret query parameter gets its kind; ``&`` and ``;`` separators both work."""
    assert Redactor().uri(f"https://h/p?a=1&{name}={SECRET}&b=2") == (
        f"https://h/p?a=1&{name}=<REDACTED:{kind}:1>&b=2"
    )
    assert (
        Redactor().uri(f"https://h/p;{name}={SECRET}") == f"https://h/p;{name}=<REDACTED:{kind}:1>"
    )


def test_email_addresses() -> None:
    """E-mail addresses are replaced anywhere in text."""
    assert Redactor().text("from a.b+c@mail.example.com!") == "from <REDACTED:email:1>!"


def test_placeholders_are_stable_and_counted_per_kind() -> None:
    """Same value, same placeholder; numbering per kind from 1."""
    red = Redactor()
    assert red.placeholder("v1", "token") == "<REDACTED:token:1>"
    assert red.placeholder("v2", "token") == "<REDACTED:token:2>"
    assert red.placeholder("v3", "cookie") == "<REDACTED:cookie:1>"
    assert red.placeholder("v1", "cookie") == "<REDACTED:token:1>"


@pytest.mark.parametrize("value", ["", "<already>", " <x> ", "<REDACTED:token:1>"])
def test_placeholders_and_empty_values_pass_through(value: str) -> None:
    """Empty values and placeholders are never replaced (idempotence)."""
    red = Redactor()
    assert red.placeholder(value, "token") == value
    assert red.mapping == {}


@pytest.mark.parametrize("value", ["<", ">", "<a"])
def test_almost_placeholders_are_secrets(value: str) -> None:
    """Only a value both starting with < and ending with > (2+ chars) is a placeholder."""
    assert Redactor().placeholder(value, "token") == "<REDACTED:token:1>"


def test_adjacent_secrets() -> None:
    """Two secrets side by side are both replaced, each with its own placeholder."""
    jwt1 = fake_jwt("1")
    jwt2 = fake_jwt("2")
    assert Redactor().text(f"{jwt1} {jwt2}") == "<REDACTED:token:1> <REDACTED:token:2>"
    out = Redactor().text(f"?token={SECRET}&key={SECRET}x")
    assert out == "?token=<REDACTED:token:1>&key=<REDACTED:key:1>"


def test_overlapping_matches_keep_the_first_rule() -> None:
    """A JWT inside a secret JSON field is replaced once, as the field."""
    jwt = fake_jwt("1")
    assert Redactor().text(json.dumps({"token": jwt})) == json.dumps(
        {"token": "<REDACTED:token:1>"}
    )


def test_spans_are_sorted_with_offsets() -> None:
    """``spans`` lists (start, end, placeholder) in order."""
    s = 'x a@b.example y {"password": "pw"}'
    spans = Redactor().spans(s)
    assert [s[a:b] for a, b, _ in spans] == ["a@b.example", "pw"]
    assert [p for _, _, p in spans] == ["<REDACTED:email:1>", "<REDACTED:password:1>"]


def test_secret_ending_on_a_chunk_boundary() -> None:
    """A secret ending exactly where a chunk ends: the boundary stays right after its
    placeholder; one spanning chunks moves the boundary to the placeholder's end."""
    jwt = fake_jwt("1")
    pieces = [(1.0, f"data: {jwt}".encode()), (2.0, b" tail\n\n")]
    out = Redactor().chunks(pieces)
    assert out == [(1.0, b"data: <REDACTED:token:1>"), (2.0, b" tail\n\n")]
    cut = 6 + 10
    raw = f"data: {jwt} tail".encode()
    out = Redactor().chunks([(1.0, raw[:cut]), (2.0, raw[cut:])])
    assert out == [(1.0, b"data: <REDACTED:token:1>"), (2.0, b" tail")]


def test_chunks_without_secrets_are_unchanged() -> None:
    """No secret: the same pieces, same times, same boundaries."""
    pieces = [(0.5, b"data: a\n"), (0.7, b"\n")]
    assert Redactor().chunks(pieces) == pieces


def test_chunks_keep_boundaries_around_a_shorter_placeholder() -> None:
    """Boundaries after a replaced span shift by the length change."""
    pieces = [(1.0, f"k={SECRET}&x".encode()), (2.0, b"y"), (3.0, b"z?token=abc")]
    out = Redactor().chunks([(t, b"?" + p if i == 0 else p) for i, (t, p) in enumerate(pieces)])
    joined = b"".join(p for _, p in out)
    assert joined == b"?k=" + SECRET.encode() + b"&xyz?token=<REDACTED:token:1>"
    assert [t for t, _ in out] == [1.0, 2.0, 3.0]
    assert out[1] == (2.0, b"y")


def test_known_secret_echoed_anywhere() -> None:
    """After a secret was seen in a header, its echo as a JSON key or one JWT segment, or
    with %2E dots, is replaced with the same placeholder."""
    jwt = fake_jwt("xxxxxx")
    red = Redactor()
    assert red.header_value("Authorization", f"Bearer {jwt}") == "Bearer <REDACTED:token:1>"
    _, claims, signature = jwt.split(".")
    body = json.dumps({jwt: 1, "m": f"seg {claims} end", "p": jwt.replace(".", "%2E")})
    out = red.text(body)
    assert claims[:12] not in out and signature[:12] not in out
    assert out.count("<REDACTED:token:1>") == 3


def test_short_known_values_are_not_searched_everywhere() -> None:
    """Values shorter than 12 characters are only replaced where a rule finds them (a cookie
    value "1" must not blank out every digit 1)."""
    red = Redactor()
    red.header_value("Cookie", "a=1")
    assert red.text("version 1.2.1") == "version 1.2.1"
