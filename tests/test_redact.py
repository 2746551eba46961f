"""Redaction before writing (recorder.redact): secrets, stable placeholders, chunk boundaries."""

from __future__ import annotations

import itertools
import json

from helpers import fake_jwt
from hypothesis import given
from hypothesis import strategies as st

from recorder.redact import Redactor

JWT = fake_jwt("redact")
CHAT_ID = "5f3c1b1e-2c6a-4f1a-9c7e-0a1b2c3d4e5f"


def test_sts_answer_is_redacted() -> None:
    """getstsToken answers (v1 flat, v2 wrapped; docs/protocol.md 7.1) lose every credential."""
    r = Redactor()
    v2 = {
        "success": True,
        "data": {
            "access_key_id": "STS.NTabc123",
            "access_key_secret": "s3cr3tKEY",
            "security_token": "CAIS1234567890",
            "bucketname": "qwen-bucket",
            "file_id": "f-1",
            "file_url": f"https://cdn.qwenlm.ai/u/f-1_a.png?key={JWT}",
        },
    }
    out = json.loads(r.text(json.dumps(v2)))
    data = out["data"]
    assert data["access_key_id"] == "<REDACTED:key:1>"
    assert data["access_key_secret"] == "<REDACTED:secret:1>"
    assert data["security_token"] == "<REDACTED:token:1>"
    assert data["file_url"] == "https://cdn.qwenlm.ai/u/f-1_a.png?key=<REDACTED:token:2>"
    assert data["bucketname"] == "qwen-bucket" and data["file_id"] == "f-1"


def test_camel_case_credentials_are_redacted() -> None:
    """Other spellings of the STS fields (accessKeyId, SecurityToken) are secrets too."""
    r = Redactor()
    out = json.loads(
        r.text(json.dumps({"accessKeyId": "a", "AccessKeySecret": "b", "SecurityToken": "c"}))
    )
    assert out == {
        "accessKeyId": "<REDACTED:key:1>",
        "AccessKeySecret": "<REDACTED:secret:1>",
        "SecurityToken": "<REDACTED:token:1>",
    }


def test_chat_ids_and_response_ids_are_kept() -> None:
    """Server-issued ids are not secrets: no placeholder is introduced for them."""
    r = Redactor()
    body = json.dumps({"response.created": {"chat_id": CHAT_ID, "response_id": CHAT_ID}})
    assert r.text(body) == body
    uri = f"https://chat.qwen.ai/api/v2/chat/completions?chat_id={CHAT_ID}"
    assert r.uri(uri) == uri


def test_every_cookie_value_and_anti_bot_header_is_redacted() -> None:
    """Cookie values, bx-ua, bx-umidtoken, x5sec and session-like headers are replaced."""
    r = Redactor()
    out = r.headers(
        {
            "Cookie": [f"token={JWT}; acw_tc=abc; x5sec=clear; ssxmod_itna=1-xyz"],
            "bx-ua": ["231!aaaa"],
            "bx-umidtoken": ["T2gAbbbb="],
            "X-Xsrf-Token": ["x1"],
            "x-request-id": [CHAT_ID],
            "bx-v": ["2.5.36"],
        }
    )
    assert out["Cookie"] == [
        "token=<REDACTED:token:1>; acw_tc=<REDACTED:cookie:1>; x5sec=<REDACTED:cookie:2>; "
        "ssxmod_itna=<REDACTED:cookie:3>"
    ]
    assert out["bx-ua"] == ["<REDACTED:bx-ua:1>"]
    assert out["bx-umidtoken"] == ["<REDACTED:bx-umidtoken:1>"]
    assert out["X-Xsrf-Token"] == ["<REDACTED:secret:1>"]
    assert out["x-request-id"] == [CHAT_ID]
    assert out["bx-v"] == ["2.5.36"]


def test_placeholders_are_stable_within_a_redactor() -> None:
    """The same secret gets the same placeholder in headers, bodies and URLs."""
    r = Redactor()
    header = r.headers({"Authorization": [f"Bearer {JWT}"]})["Authorization"][0]
    body = r.text(json.dumps({"token": JWT}))
    url = r.uri(f"https://cdn.qwenlm.ai/x.png?key={JWT}")
    assert header == "Bearer <REDACTED:token:1>"
    assert json.loads(body) == {"token": "<REDACTED:token:1>"}
    assert url.endswith("?key=<REDACTED:token:1>")
    assert Redactor().text(JWT) == "<REDACTED:token:1>"


def test_email_and_signin_fields_are_redacted() -> None:
    """E-mail addresses anywhere and sign-in passwords/refresh tokens are replaced."""
    r = Redactor()
    body = json.dumps({"email": "me@example.com", "password": "ab" * 32, "refresh_token": "rt"})
    out = json.loads(r.text(body))
    assert out == {
        "email": "<REDACTED:email:1>",
        "password": "<REDACTED:password:1>",
        "refresh_token": "<REDACTED:token:1>",
    }
    assert r.text("mail me@example.com") == "mail <REDACTED:email:1>"


def test_chunks_without_secrets_are_unchanged() -> None:
    """A stream without secrets keeps every chunk and boundary as is."""
    pieces = [(0.0, b'data: {"a": "\xe4'), (0.1, b'\xbd\xa0"}\n\n')]
    assert Redactor().chunks(pieces) == pieces


def test_chunk_boundary_inside_a_secret_moves_to_its_end() -> None:
    """A boundary inside a JWT moves to the end of its placeholder; later ones shift."""
    body = f'data: {{"url": "https://cdn.qwenlm.ai/a.png?key={JWT}"}}\n\ndata: {{"b": 1}}\n\n'
    raw = body.encode()
    cut1 = raw.index(b"eyJ") + 10  # inside the JWT
    cut2 = raw.index(b'data: {"b"')  # an event boundary after it
    pieces = [(0.0, raw[:cut1]), (0.1, raw[cut1:cut2]), (0.2, raw[cut2:])]
    out = Redactor().chunks(pieces)
    joined = b"".join(p for _, p in out).decode()
    assert joined == Redactor().text(body)
    assert out[0][1].endswith(b"<REDACTED:token:1>")
    assert out[1] == (0.1, b'"}\n\n')
    assert out[2] == (0.2, b'data: {"b": 1}\n\n')


def test_chunks_left_empty_are_dropped() -> None:
    """Two boundaries inside one secret leave an empty chunk, which is dropped."""
    raw = f"x {JWT} y".encode()
    pieces = [(0.0, raw[:5]), (0.1, raw[5:9]), (0.2, raw[9:])]
    out = Redactor().chunks(pieces)
    assert [t for t, _ in out] == [0.0, 0.2]
    assert b"".join(p for _, p in out) == b"x <REDACTED:token:1> y"


_secret = st.sampled_from([JWT, "me@example.com", '"token": "abc"', "?key=k1&x=1", "plain"])
_text = st.text(alphabet=st.sampled_from(list('ab ,:\n{}"你😊')), max_size=12)


@given(
    parts=st.lists(st.tuples(_text, _secret), min_size=1, max_size=5),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=8),
)
def test_chunks_property(parts: list[tuple[str, str]], cuts: list[int]) -> None:
    """For any chunking: joined output equals text(); sizes are positive; boundaries outside
    replaced spans keep their distance to the end of the body."""
    body = "".join(a + b for a, b in parts).encode()
    points = sorted({c for c in cuts if 0 < c < len(body)})
    edges = [0, *points, len(body)]
    pieces = [(float(i), body[a:b]) for i, (a, b) in enumerate(itertools.pairwise(edges))]
    r = Redactor()
    expected = Redactor().text(body.decode()).encode()
    out = r.chunks(pieces)
    assert b"".join(p for _, p in out) == expected
    assert all(p for _, p in out)
    spans = Redactor().spans(body.decode())
    byte_spans = [
        (len(body.decode()[:a].encode()), len(body.decode()[:b].encode())) for a, b, _ in spans
    ]
    new_edges = set(itertools.accumulate(len(p) for _, p in out))
    for cut in points:
        if all(cut <= a for a, _ in byte_spans):  # before every secret: position unchanged
            assert cut in new_edges
        if all(b <= cut for _, b in byte_spans):  # after every secret: same distance to the end
            assert len(expected) - (len(body) - cut) in new_edges
