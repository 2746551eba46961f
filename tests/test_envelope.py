"""Classifying non-stream upstream answers: error envelopes, WAF bodies, HTTP failures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import fake_jwt

from proxy.errors import (
    UpstreamBadRequestError,
    UpstreamCaptchaError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamRateLimitedError,
    UpstreamReplayMissError,
    UpstreamTimeoutError,
    UpstreamUnauthorizedError,
    UpstreamUnavailableError,
    to_openai,
)
from proxy.qwen.envelope import classify_response, envelope_error


def test_real_ratelimited_sample_maps_to_429_with_retry_after(samples_dir: Path) -> None:
    """The captured RateLimited data object gives 429 and Retry-After of num hours."""
    data = json.loads((samples_dir / "error_ratelimited_guest_2026-04.json").read_text())
    body = json.dumps({"success": False, "request_id": "r", "data": data}).encode()
    err = classify_response(200, "application/json", body)
    assert isinstance(err, UpstreamRateLimitedError)
    status, headers, payload = to_openai(err)
    assert status == 429
    assert headers["Retry-After"] == str(6 * 3600)
    assert payload["error"]["code"] == "rate_limit_exceeded"


def test_real_waf_sample_maps_to_503_without_leaking_the_punish_url(samples_dir: Path) -> None:
    """The captured FAIL_SYS_USER_VALIDATE body gives 503 with captcha advice and no URL."""
    raw = (samples_dir / "waf_fail_sys_user_validate_2026-06-17.json").read_bytes()
    err = classify_response(200, "application/json", raw)
    assert isinstance(err, UpstreamCaptchaError)
    status, _, payload = to_openai(err)
    assert status == 503
    assert "browser" in payload["error"]["message"]
    assert "x5secdata" not in json.dumps(payload) and "punish" not in json.dumps(payload)


def test_real_internal_error_sample_is_a_502(samples_dir: Path) -> None:
    """The captured Internal_Server_Error envelope gives a 502 upstream error."""
    raw = (samples_dir / "error_internal_server_error_2025-10-10.json").read_bytes()
    err = classify_response(200, "application/json", raw)
    assert type(err) is UpstreamError
    assert to_openai(err)[0] == 502


@pytest.mark.parametrize(
    ("status", "ctype", "body", "kind", "http"),
    [
        (
            200,
            "application/json",
            b'{"success":false,"data":{"code":"Unauthorized","details":"401"}}',
            UpstreamUnauthorizedError,
            401,
        ),
        (
            200,
            "application/json",
            b'{"success":false,"data":{"code":"Bad_Request","details":"Internal error"}}',
            UpstreamBadRequestError,
            502,
        ),
        (
            200,
            "application/json",
            b'{"success":false,"data":{"code":"Bad_Request",'
            b'"details":"content more than 131072 characters"}}',
            UpstreamBadRequestError,
            400,
        ),
        (
            200,
            "text/html",
            b"<html><title>Access Verification</title>_____tmd_____</html>",
            UpstreamCaptchaError,
            503,
        ),
        (200, "text/html", b"<html>maintenance</html>", UpstreamProtocolError, 502),
        (401, "text/plain", b"Token has expired", UpstreamUnauthorizedError, 401),
        (200, "text/plain", b"Token has expired", UpstreamUnauthorizedError, 401),
        (500, "text/plain", b"oops", UpstreamUnavailableError, 502),
        (504, "text/plain", b"", UpstreamTimeoutError, 504),
        (
            404,
            "application/json",
            b'{"error":{"type":"replay_miss","message":"closest t2t_answer differs in text"}}',
            UpstreamReplayMissError,
            404,
        ),
        (200, "application/json", b'{"unexpected":true}', UpstreamProtocolError, 502),
    ],
)
def test_classification_table(
    status: int, ctype: str, body: bytes, kind: type[UpstreamError], http: int
) -> None:
    """Each kind of failed answer maps to its error class and HTTP status."""
    err = classify_response(status, ctype, body)
    assert isinstance(err, kind)
    assert to_openai(err)[0] == http


def test_success_objects_are_not_errors() -> None:
    """Success envelopes and ordinary frames report no error."""
    assert envelope_error({"success": True, "data": {"id": "x"}}) is None
    assert envelope_error({"choices": [], "code": "x"}) is None
    assert envelope_error({"data": []}) is None


def test_secrets_in_upstream_details_are_scrubbed() -> None:
    """A JWT or e-mail quoted in upstream details never reaches the client message."""
    jwt = fake_jwt("envelope")
    body = json.dumps(
        {"success": False, "data": {"code": "Odd", "details": f"bad {jwt} for a@b.example"}}
    ).encode()
    message = to_openai(classify_response(200, "application/json", body))[2]["error"]["message"]
    assert jwt not in message and "a@b.example" not in message
