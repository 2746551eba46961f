"""The exception tree's mapping to OpenAI error objects, and secret scrubbing."""

from __future__ import annotations

import pytest
from helpers import fake_jwt

from proxy import errors as E
from proxy.errors import ClientRequestError, scrub, to_openai


def test_client_error_maps_to_400_with_param() -> None:
    """A client error keeps its ``param`` and gets the invalid_request_error type."""
    status, headers, body = to_openai(ClientRequestError("bad", param="temperature"))
    assert status == 400 and headers == {}
    assert body == {
        "error": {
            "message": "bad",
            "type": "invalid_request_error",
            "param": "temperature",
            "code": "invalid_request",
        }
    }


def test_scrub_caps_length() -> None:
    """Upstream text is capped at ``limit`` characters, the last one an ellipsis."""
    out = scrub("x" * 1000, limit=10)
    assert out == "x" * 9 + "…"
    assert scrub("x" * 10, limit=10) == "x" * 10


TREE = [
    (E.ProxyError, 500, "server_error", "internal_error"),
    (E.ClientRequestError, 400, "invalid_request_error", "invalid_request"),
    (E.InvalidJSONError, 400, "invalid_request_error", "invalid_json"),
    (E.UnsupportedContentError, 400, "invalid_request_error", "unsupported_content"),
    (E.ModelNotFoundError, 404, "invalid_request_error", "model_not_found"),
    (E.ForbiddenRequestError, 403, "invalid_request_error", "forbidden"),
    (E.RequestTimeoutError, 408, "invalid_request_error", "request_timeout"),
    (E.UnsupportedMediaTypeError, 415, "invalid_request_error", "unsupported_media_type"),
    (E.MalformedHTTPError, 400, "invalid_request_error", "malformed_http"),
    (E.HeadersTooLargeError, 431, "invalid_request_error", "headers_too_large"),
    (E.URITooLongError, 414, "invalid_request_error", "uri_too_long"),
    (E.ResponseNotFoundError, 404, "invalid_request_error", "response_not_found"),
    (E.PreviousResponseNotFoundError, 400, "invalid_request_error", "previous_response_not_found"),
    (E.BodyTooLargeError, 413, "invalid_request_error", "request_too_large"),
    (E.MediaTooLargeError, 413, "invalid_request_error", "media_too_large"),
    (E.MediaFetchError, 400, "invalid_request_error", "media_fetch_failed"),
    (E.MediaURLRefusedError, 400, "invalid_request_error", "media_url_refused"),
    (E.MediaFetchTimeoutError, 504, "invalid_request_error", "media_fetch_timeout"),
    (E.AuthenticationError, 401, "authentication_error", "invalid_api_key"),
    (E.NoUpstreamTokenError, 503, "server_error", "no_upstream_account"),
    (E.UpstreamError, 502, "upstream_error", "upstream_error"),
    (E.UpstreamRateLimitedError, 429, "rate_limit_error", "rate_limit_exceeded"),
    (E.UpstreamUnauthorizedError, 401, "authentication_error", "upstream_unauthorized"),
    (E.UpstreamBadRequestError, 502, "upstream_error", "upstream_bad_request"),
    (E.UpstreamCaptchaError, 503, "upstream_error", "upstream_captcha"),
    (E.UpstreamEmptyError, 502, "upstream_error", "upstream_empty"),
    (E.UpstreamTruncatedError, 502, "upstream_error", "upstream_truncated"),
    (E.UpstreamProtocolError, 502, "upstream_error", "upstream_protocol_error"),
    (E.UpstreamReplayMissError, 404, "invalid_request_error", "replay_miss"),
    (E.UpstreamNoMediaError, 502, "upstream_error", "upstream_no_media"),
    (E.UpstreamBadMediaError, 502, "upstream_error", "upstream_bad_media"),
    (E.UpstreamTaskFailedError, 502, "upstream_error", "upstream_task_failed"),
    (E.UpstreamUnavailableError, 502, "upstream_error", "upstream_unavailable"),
    (E.UpstreamTimeoutError, 504, "upstream_error", "upstream_timeout"),
    (E.UpstreamTaskTimeoutError, 504, "upstream_error", "upstream_task_timeout"),
    (E.KeyRateLimitedError, 429, "rate_limit_error", "rate_limit_exceeded"),
    (E.AccountsBusyError, 429, "rate_limit_error", "accounts_busy"),
]
_HEADERS = {
    E.UpstreamCaptchaError: {"Retry-After": "600"},
    E.KeyRateLimitedError: {"Retry-After": "1"},
    E.AccountsBusyError: {"Retry-After": "1"},
}


@pytest.mark.parametrize(
    ("cls", "status", "type_", "code"), TREE, ids=lambda v: getattr(v, "__name__", str(v))
)
def test_each_error_class_maps_to_its_status_type_and_code(
    cls: type[E.ProxyError], status: int, type_: str, code: str
) -> None:
    """Every class of the tree: HTTP status, error type, code, message and param kept."""
    exc = cls("msg")
    exc.param = "p"
    got_status, headers, body = to_openai(exc)
    assert got_status == status
    assert body == {"error": {"message": "msg", "type": type_, "param": "p", "code": code}}
    assert exc.http_status() == status and exc.error_code() == code
    assert headers == _HEADERS.get(cls, {})


def test_http_status_error_takes_the_routers_status() -> None:
    """HTTPStatusError carries the router's status and code."""
    exc = E.HTTPStatusError("m", status=405, code="method_not_allowed")
    status, _, body = to_openai(exc)
    assert status == 405 and body["error"]["code"] == "method_not_allowed"
    assert body["error"]["type"] == "invalid_request_error"


def test_tree_is_covered() -> None:
    """Every ProxyError subclass defined in proxy.errors has its row above (HTTPStatusError,
    whose status is per instance, has its own test)."""
    defined = {c for c in vars(E).values() if isinstance(c, type) and issubclass(c, E.ProxyError)}
    assert defined == {row[0] for row in TREE} | {E.HTTPStatusError}


def test_timeout_classes_are_timeouts() -> None:
    """Timeouts are also ``TimeoutError`` (callers catch them as such)."""
    assert issubclass(E.UpstreamTimeoutError, TimeoutError)
    assert issubclass(E.MediaFetchTimeoutError, TimeoutError)
    assert not issubclass(E.UpstreamError, TimeoutError)


def test_unknown_exception_is_a_bare_500() -> None:
    """Anything that is not a ProxyError becomes an internal error that says nothing more."""
    status, headers, body = to_openai(ValueError("secret detail"))
    assert status == 500 and headers == {}
    assert body["error"]["message"] == "internal error in the proxy; see its log"
    assert body["error"]["code"] == "internal_error" and body["error"]["param"] is None


@pytest.mark.parametrize("cls", [E.NoUpstreamTokenError, E.UpstreamRateLimitedError])
@pytest.mark.parametrize(("retry", "header"), [(120, {"Retry-After": "120"}), (None, {}), (0, {})])
def test_retry_after_header(
    cls: type[E.ProxyError], retry: int | None, header: dict[str, str]
) -> None:
    """Retry-After is sent only for a positive number of seconds, never as ``None``/``0``."""
    exc = cls("m", retry_after_s=retry)  # type: ignore[call-arg]
    assert exc.headers() == header
    assert to_openai(exc)[1] == header


def test_bad_request_client_fault_is_400() -> None:
    """UpstreamBadRequestError: 400 when the client caused it, 502 when not."""
    assert E.UpstreamBadRequestError("m", client_fault=True).http_status() == 400
    assert E.UpstreamBadRequestError("m").http_status() == 502


def test_invalid_json_encoding_code() -> None:
    """A charset problem has its own code."""
    assert E.InvalidJSONError("m", encoding_error=True).error_code() == "invalid_encoding"
    assert E.InvalidJSONError("m").error_code() == "invalid_json"


def test_forbidden_codes() -> None:
    """ForbiddenRequestError names which check refused the request."""
    assert E.ForbiddenRequestError("m", code="forbidden_host").error_code() == "forbidden_host"


def test_param_defaults_to_none() -> None:
    """Without ``param`` the body says null."""
    assert to_openai(E.ClientRequestError("m"))[2]["error"]["param"] is None


_JWT = fake_jwt("scrub")  # built at run time: no token-like literal in the repository
_HEADER, _CLAIMS, _ = _JWT.split(".")


@pytest.mark.parametrize(
    ("text", "kept", "gone"),
    [
        (f"a {_JWT} b", "a <redacted> b", "eyJ"),
        (f"seg {_CLAIMS} end", "seg <redacted> end", "eyJ"),
        (f"p {_HEADER}%2E{_CLAIMS} q", "p <redacted> q", "%2E"),
        (f"u {_HEADER}\\u002e{_CLAIMS} v", "u <redacted> v", "u002e"),
        ("https://x/a?key=SECRET&b=1", "?key=<redacted>&b=1", "SECRET"),
        ("https://x/a?x5secdata=SECRET", "x5secdata=<redacted>", "SECRET"),
        ("https://x/a?token=SECRET", "token=<redacted>", "SECRET"),
        ("https://x/a?signature=SECRET", "signature=<redacted>", "SECRET"),
        ("https://x/a?security-token=SECRET", "security-token=<redacted>", "SECRET"),
        ("HTTPS://X/A?KEY=SECRET", "KEY=<redacted>", "SECRET"),
        ("mail me at a.b@c.example now", "at <redacted> now", "a.b@"),
        ("Authorization: Bearer sk-abcdefgh12 ok", "Bearer <redacted> ok", "sk-abc"),
        ("basic dXNlcjpwYXNzd29yZA== x", "basic <redacted> x", "dXNlcj"),
    ],
)
def test_scrub_each_pattern(text: str, kept: str, gone: str) -> None:
    """Each secret pattern of ``scrub`` alone."""
    out = scrub(text)
    assert kept in out and gone not in out


def test_scrub_leaves_ordinary_text() -> None:
    """Ordinary text, short eyJ-looking words and a bearer word without a credential stay."""
    for text in ("hello world", "eyJshort", "the bearer of news", "key=value without query"):
        assert scrub(text) == text


def test_scrub_default_limit_is_300() -> None:
    """The default cap is 300 characters."""
    assert scrub("y" * 300) == "y" * 300
    assert scrub("y" * 301) == "y" * 299 + "…"


def test_clip() -> None:
    """``clip`` caps any value's text at ``limit`` characters (80 by default)."""
    assert E.clip("z" * 80) == "z" * 80
    assert E.clip("z" * 81) == "z" * 79 + "…"
    assert E.clip(12345, limit=3) == "12…"
    assert E.clip("abc", limit=3) == "abc"


def test_quote() -> None:
    """``quote`` is ``{value!r}`` of at most 80 characters of the value."""
    assert E.quote("gpt-x") == "'gpt-x'"
    assert E.quote("z" * 81) == repr("z" * 79 + "…")
    assert E.quote(None) == "None"
    assert E.quote({"k": "v" * 200}) == repr({"k": "v" * 200})[:79] + "…"


def test_exception_text_is_the_message() -> None:
    """``str(exc)`` is the message (what tracebacks and logs show)."""
    assert str(E.ClientRequestError("the message")) == "the message"
    assert str(E.HTTPStatusError("gone", status=404, code="not_found")) == "gone"
    assert str(E.UpstreamRateLimitedError("slow", retry_after_s=3)) == "slow"
