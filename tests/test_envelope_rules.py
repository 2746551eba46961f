"""Every rule of the envelope classifier, one test per table entry (the tests must
catch a single rule broken: a marker dropped, a comparison flipped, a field ignored)."""

from __future__ import annotations

import json
from typing import Any

import pytest

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
)
from proxy.qwen import envelope
from proxy.qwen.envelope import (
    CAPTCHA_ADVICE,
    RETRY_AFTER_MAX_S,
    classify_response,
    envelope_error,
    looks_like_waf,
    retry_after_s,
)


def _body(obj: Any) -> bytes:
    return json.dumps(obj).encode()


# -- the WAF markers ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "marker",
    [
        b"_____tmd_____",
        b"x5secdata",
        b"aliyun_waf",
        b"FAIL_SYS_USER_VALIDATE",
        b"RGV587",
        b"/punish",
        b"Access Verification",
        b"action=captcha",
    ],
)
def test_each_waf_marker_alone_is_a_captcha(marker: bytes) -> None:
    """A body carrying just one marker is recognised, and classified as a 503 captcha."""
    assert marker in envelope._WAF_MARKERS
    body = b"<html><body>see " + marker + b" here</body></html>"
    assert looks_like_waf(body)
    err = classify_response(200, "text/html", body)
    assert type(err) is UpstreamCaptchaError
    assert err.message == CAPTCHA_ADVICE


def test_markers_table_is_covered() -> None:
    """The table holds exactly the markers tested above (a new one needs its own test)."""
    assert len(envelope._WAF_MARKERS) == 8


def test_marker_past_the_first_64_kib_is_not_looked_at() -> None:
    """Only the first 65536 bytes are searched: a marker starting at byte 65536 is not seen,
    one ending at byte 65536 is."""
    marker = b"RGV587"
    assert not looks_like_waf(b"a" * 65536 + marker)
    assert looks_like_waf(b"a" * (65536 - len(marker)) + marker)
    assert not looks_like_waf(b"a" * (65537 - len(marker)) + marker)
    assert not looks_like_waf(b"<html>fine</html>")


# -- the baxia "ret" body ---------------------------------------------------------------------


@pytest.mark.parametrize("ret", ["FAIL_SYS_USER_VALIDATE", "RGV587_ERROR::SM", "x::RGV587"])
def test_each_ret_marker_alone_is_a_captcha(ret: str) -> None:
    """Either ret marker alone (without any other marker in the object) makes a captcha."""
    err = envelope_error({"ret": ["SUCCESS::ok", ret]})
    assert type(err) is UpstreamCaptchaError


@pytest.mark.parametrize("ret", [["SUCCESS::调用成功"], [], [7], "FAIL_SYS_USER_VALIDATE"])
def test_ret_without_markers_is_not_a_captcha(ret: Any) -> None:
    """A ret list without a marker, or a ret that is not a list, is no captcha."""
    assert envelope_error({"ret": ret, "data": {"id": "x"}}) is None


# -- where the error object sits -------------------------------------------------------------


@pytest.mark.parametrize("detail_key", ["details", "message"])
def test_top_level_error_object_dispatches_on_its_code(detail_key: str) -> None:
    """``{"error": {"code": …}}``: the code decides the class; details or message is quoted."""
    err = envelope_error({"error": {"code": "Bad_Request", detail_key: "input too long"}})
    assert type(err) is UpstreamBadRequestError
    assert err.client_fault and err.http_status() == 400
    assert "input too long" in err.message
    err = envelope_error({"error": {"code": "Unauthorized", detail_key: "nope"}})
    assert type(err) is UpstreamUnauthorizedError


def test_top_level_error_details_win_over_message() -> None:
    """When both are present, ``details`` is the text quoted."""
    err = envelope_error({"error": {"code": "X1", "details": "DDD", "message": "MMM"}})
    assert err is not None and "DDD" in err.message and "MMM" not in err.message


def test_top_level_error_string() -> None:
    """``{"error": "text"}`` is an error quoting the text; an empty string is none."""
    err = envelope_error({"error": "rate limited by policy"})
    assert type(err) is UpstreamRateLimitedError
    err = envelope_error({"error": "something odd"})
    assert type(err) is UpstreamError and "something odd" in err.message
    assert envelope_error({"error": ""}) is None


@pytest.mark.parametrize("detail_key", ["details", "message"])
def test_data_error_object(detail_key: str) -> None:
    """``{"data": {"error": {…}}}`` dispatches on the inner code."""
    err = envelope_error({"data": {"error": {"code": "Bad_Request", detail_key: "too large"}}})
    assert type(err) is UpstreamBadRequestError and err.client_fault
    assert envelope_error({"data": {"error": "x"}}) is None  # not an object: not this rule


def test_success_false_with_data_object() -> None:
    """``success: false`` with a data object: the data's code and details."""
    err = envelope_error({"success": False, "data": {"code": "Not_Login", "message": "m"}})
    assert type(err) is UpstreamUnauthorizedError


def test_success_false_without_data_object() -> None:
    """``success: false`` and no data object: the top level's code and message."""
    err = envelope_error({"success": False, "code": "Bad_Request", "message": "exceed limit"})
    assert type(err) is UpstreamBadRequestError and err.client_fault
    err = envelope_error({"success": False, "data": None, "code": "Weird", "message": "m"})
    assert type(err) is UpstreamError and "Weird" in err.message


@pytest.mark.parametrize(
    ("obj", "is_error"),
    [
        ({"code": "RateLimited", "num": 1}, True),
        ({"code": "200"}, False),
        ({"code": "0"}, False),
        ({"code": "success"}, False),
        ({"code": ""}, False),
        ({"code": 5}, False),
        ({"code": "Oops", "choices": []}, False),
        ({"success": True}, False),
        ([], False),
        ("text", False),
    ],
)
def test_bare_code_objects(obj: Any, is_error: bool) -> None:
    """A bare ``{"code": …}`` is an error unless the code means success or it is a frame."""
    assert (envelope_error(obj) is not None) is is_error


# -- codes and details -------------------------------------------------------------------------


def test_rate_limited_retry_after_is_num_hours() -> None:
    """``num`` hours become Retry-After seconds and the message says how long."""
    err = envelope_error({"success": False, "data": {"code": "RateLimited", "num": 2}})
    assert type(err) is UpstreamRateLimitedError
    assert err.retry_after_s == 7200
    assert err.headers() == {"Retry-After": "7200"}
    assert "Try again in 2 hours." in err.message
    half = envelope_error({"success": False, "data": {"code": "RateLimited", "num": 0.5}})
    assert isinstance(half, UpstreamRateLimitedError) and half.retry_after_s == 1800


@pytest.mark.parametrize("num", [0, -1, None, "6", True])
def test_rate_limited_without_usable_hours_has_no_retry_after(num: Any) -> None:
    """Zero, negative or non-numeric ``num``: no Retry-After header and no "Try again"."""
    data: dict[str, Any] = {"code": "RateLimited"}
    if num is not None:
        data["num"] = num
    err = envelope_error({"success": False, "data": data})
    assert type(err) is UpstreamRateLimitedError
    if num is True:  # a bool is an int in Python: one hour
        assert err.retry_after_s == 3600
        return
    assert err.retry_after_s is None
    assert err.headers() == {}
    assert "Try again" not in err.message


@pytest.mark.parametrize(
    "details", ["Rate limit hit", "rate_limit", "RATE LIMIT exceeded", "ratelimited"]
)
def test_rate_limit_in_the_details_alone(details: str) -> None:
    """Without the RateLimited code, "rate limit" in any spelling still makes a 429."""
    err = envelope_error({"success": False, "data": {"code": "Other", "details": details}})
    assert type(err) is UpstreamRateLimitedError
    assert details in err.message


@pytest.mark.parametrize(
    ("code", "details"),
    [
        ("Unauthorized", ""),
        ("Not_Login", ""),
        ("Other", "HTTP 401 returned"),
        ("Other", "Your Token has expired"),
    ],
)
def test_each_unauthorized_rule(code: str, details: str) -> None:
    """Each of the four unauthorized rules alone makes a 401 upstream_unauthorized."""
    err = envelope_error({"success": False, "data": {"code": code, "details": details}})
    assert type(err) is UpstreamUnauthorizedError
    assert err.http_status() == 401
    assert ("Upstream said: " + details in err.message) is bool(details)


@pytest.mark.parametrize(
    "details",
    [
        "input is too long",
        "tokens exceed the limit",
        "content more than 131072 characters",
        "content length invalid",
        "file too large",
        "TOO LONG",
    ],
)
def test_each_client_fault_pattern_is_a_400(details: str) -> None:
    """Each client-fault pattern in a Bad_Request makes it the client's 400."""
    err = envelope_error({"success": False, "data": {"code": "Bad_Request", "details": details}})
    assert type(err) is UpstreamBadRequestError
    assert err.client_fault is True and err.http_status() == 400
    assert f"(Bad_Request: {details})" in err.message


@pytest.mark.parametrize("details", ["Internal error", "more than many characters", ""])
def test_bad_request_without_client_fault_is_a_502(details: str) -> None:
    """A Bad_Request matching no client-fault pattern is ours: 502."""
    err = envelope_error({"success": False, "data": {"code": "Bad_Request", "details": details}})
    assert type(err) is UpstreamBadRequestError
    assert err.client_fault is False and err.http_status() == 502
    if not details:
        assert "no details" in err.message


@pytest.mark.parametrize(
    ("code", "details"), [("Other", "captcha required"), ("X", "FAIL_SYS_USER_VALIDATE now")]
)
def test_captcha_in_code_or_details(code: str, details: str) -> None:
    """ "captcha" or FAIL_SYS_USER_VALIDATE in the details makes a captcha error."""
    err = envelope_error({"success": False, "data": {"code": code, "details": details}})
    assert type(err) is UpstreamCaptchaError


def test_unknown_code_is_a_generic_upstream_error_quoting_code_and_details() -> None:
    """Any other code: a 502 naming the code and the (scrubbed) details."""
    err = envelope_error({"success": False, "data": {"code": "  Weird_Code ", "details": "d1"}})
    assert type(err) is UpstreamError
    assert err.message == "chat.qwen.ai reported an error (Weird_Code: d1)."
    err = envelope_error({"success": False, "data": {"code": None, "details": None}})
    assert type(err) is UpstreamError
    assert err.message == "chat.qwen.ai reported an error (error: no details)."


def test_details_are_capped() -> None:
    """Quoted details are scrubbed and cut to 300 characters."""
    err = envelope_error({"success": False, "data": {"code": "Weird", "details": "x" * 1000}})
    assert err is not None and "x" * 300 not in err.message and "x" * 299 + "…" in err.message


# -- classify_response's own rules -----------------------------------------------------------


def test_replay_miss_needs_404_and_its_type() -> None:
    """A replay miss is recognised only with status 404 and ``type: replay_miss``."""
    body = _body({"error": {"type": "replay_miss", "message": "no match"}})
    err = classify_response(404, "application/json", body)
    assert type(err) is UpstreamReplayMissError
    assert err.message.endswith("no match")
    assert type(classify_response(400, "application/json", body)) is not UpstreamReplayMissError
    other = _body({"error": {"type": "other", "message": "m"}})
    assert type(classify_response(404, "application/json", other)) is not UpstreamReplayMissError


@pytest.mark.parametrize("status", [200, 401, 403])
@pytest.mark.parametrize("text", [b"Token has expired", b"INVALID TOKEN"])
def test_expired_token_text_is_401(status: int, text: bytes) -> None:
    """The token texts with 200, 401 or 403 mean the upstream token was refused."""
    err = classify_response(status, "text/plain", b"<p>" + text + b"</p>")
    assert type(err) is UpstreamUnauthorizedError
    assert "sign in" in err.message


def test_expired_token_text_with_other_status_is_not_401() -> None:
    """With a 500 the text is not trusted: it is a 5xx."""
    assert type(classify_response(500, "text/plain", b"Token has expired")) is (
        UpstreamUnavailableError
    )


@pytest.mark.parametrize("status", [401, 403])
def test_401_and_403_are_unauthorized(status: int) -> None:
    """401 and 403 without a recognisable body name the status."""
    err = classify_response(status, "text/plain", b"no")
    assert type(err) is UpstreamUnauthorizedError
    assert f"HTTP {status}" in err.message


def test_429_is_rate_limited_without_retry_after() -> None:
    """HTTP 429 without a ``Retry-After`` is a 429 with none (the account pool sets its rest)."""
    err = classify_response(429, "text/plain", b"slow down")
    assert type(err) is UpstreamRateLimitedError and err.headers() == {}


# -- Retry-After (docs/protocol.md §10) -----------------------------------------------------

NOW = 1_800_000_000.0  # 2027-01-15 08:00:00 UTC


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (None, None),  # no header
        ("120", 120),  # delay-seconds
        (" 3 ", 3),  # surrounding blanks
        ("0", 1),  # "now": at least a second
        ("86401", RETRY_AFTER_MAX_S),  # more than a day: a day
        ("9" * 5000, RETRY_AFTER_MAX_S),  # too many digits for int(): a day, not a crash
        ("Fri, 15 Jan 2027 08:02:00 GMT", 120),  # an HTTP-date two minutes ahead
        ("Fri, 15 Jan 2027 08:00:00 -0000", 1),  # a date of now, zone unknown: UTC
        ("Fri, 15 Jan 2027 07:00:00 GMT", 1),  # a date past: at least a second
        ("Fri, 15 Jan 9999 08:00:00 GMT", RETRY_AFTER_MAX_S),  # far ahead: a day
        ("", None),  # garbage: the caller's default
        ("-5", None),
        ("1.5", None),
        ("soon", None),
        ("\u00b2", None),  # a digit to str.isdigit, not to HTTP
        ("Fri, 45 Jan 2027 08:00:00 GMT", None),
    ],
    ids=repr,
)
def test_retry_after_values(value: str | None, seconds: int | None) -> None:
    """``Retry-After`` in seconds or as an HTTP-date, between 1 s and a day; anything else is
    ``None`` (the default wait applies)."""
    assert retry_after_s(value, now=NOW) == seconds


def test_a_429_passes_its_retry_after_on() -> None:
    """The site's wait becomes the client's ``Retry-After`` (and the account's rest)."""
    err = classify_response(429, "text/plain", b"slow down", retry_after="120")
    assert type(err) is UpstreamRateLimitedError and err.retry_after_s == 120
    assert err.headers() == {"Retry-After": "120"}
    assert err.message.endswith("It asks to wait 120 s.")


def test_a_429_with_a_garbage_retry_after_has_none() -> None:
    err = classify_response(429, "text/plain", b"slow down", retry_after="soon")
    assert type(err) is UpstreamRateLimitedError and err.retry_after_s is None


def test_a_limit_envelope_without_hours_takes_the_retry_after() -> None:
    """A limit code naming no hours takes the header's wait."""
    body = _body({"success": False, "data": {"code": "ParallelLimited", "details": "busy"}})
    err = classify_response(429, "application/json", body, retry_after="7")
    assert type(err) is UpstreamRateLimitedError and err.retry_after_s == 7


def test_a_limit_envelope_with_hours_keeps_them() -> None:
    """``num`` hours name the wait; a ``Retry-After`` beside them does not shorten it."""
    body = _body({"success": False, "data": {"code": "RateLimited", "details": "q", "num": 2}})
    err = classify_response(429, "application/json", body, retry_after="7")
    assert type(err) is UpstreamRateLimitedError and err.retry_after_s == 7200


def test_a_503_with_retry_after_is_a_503_passing_it_on() -> None:
    err = classify_response(503, "application/json", b'{"detail":"x"}', retry_after="5")
    assert type(err) is UpstreamUnavailableError
    assert (err.http_status(), err.headers()) == (503, {"Retry-After": "5"})
    assert err.error_code() == "upstream_unavailable"
    assert err.message.endswith("HTTP 503 (unavailable). It asks to wait 5 s.")


def test_a_503_without_retry_after_is_a_502() -> None:
    err = classify_response(503, "text/plain", b"down")
    assert type(err) is UpstreamUnavailableError
    assert (err.http_status(), err.headers()) == (502, {})


def test_a_503_with_a_garbage_retry_after_is_a_502() -> None:
    err = classify_response(503, "text/plain", b"down", retry_after="later")
    assert (err.http_status(), err.headers()) == (502, {})


@pytest.mark.parametrize("status", [500, 502])
def test_other_5xx_ignore_retry_after(status: int) -> None:
    """Only a 503 (and a 429) says the wait is the point (RFC 9110 §10.2.3)."""
    err = classify_response(status, "text/plain", b"down", retry_after="5")
    assert type(err) is UpstreamUnavailableError
    assert (err.http_status(), err.headers()) == (502, {})


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (500, UpstreamUnavailableError),
        (502, UpstreamUnavailableError),
        (503, UpstreamUnavailableError),
        (504, UpstreamTimeoutError),
        (599, UpstreamUnavailableError),
    ],
)
def test_server_errors(status: int, kind: type[UpstreamError]) -> None:
    """5xx: 504 is a timeout, every other 5xx unavailable; the status is named."""
    err = classify_response(status, "text/plain", b"")
    assert type(err) is kind
    assert f"HTTP {status}" in err.message


def test_html_page_is_a_protocol_error() -> None:
    """HTML that is not the WAF: a protocol error saying so."""
    err = classify_response(200, "text/html; charset=utf-8", b"<html>down</html>")
    assert type(err) is UpstreamProtocolError
    assert "HTML page (HTTP 200)" in err.message


def test_unknown_json_names_its_keys() -> None:
    """JSON that is no known error names (at most 8 of) its keys, sorted."""
    obj = {f"k{i}": i for i in range(10)}
    err = classify_response(200, "application/json", _body(obj))
    assert type(err) is UpstreamProtocolError
    assert "(keys: k0, k1, k2, k3, k4, k5, k6, k7)" in err.message


def test_unexpected_content_names_the_type() -> None:
    """Anything else names the status and the content type (or "none")."""
    err = classify_response(200, "text/plain", b"hello")
    assert type(err) is UpstreamProtocolError
    assert "HTTP 200 with unexpected content (text/plain)" in err.message
    err = classify_response(200, "", b"hello")
    assert "(none)" in err.message


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2", b"[]", b'"x"'])
def test_bodies_that_do_not_parse_as_objects(body: bytes) -> None:
    """Broken JSON, or JSON that is not an object, falls through to the status rules."""
    err = classify_response(200, "application/json", body)
    assert type(err) is UpstreamProtocolError
    assert "unexpected content" in err.message


def test_json_array_with_error_status() -> None:
    """A JSON array with a 5xx is judged by the status."""
    assert type(classify_response(503, "application/json", b"[1]")) is UpstreamUnavailableError


# -- the limit codes (docs/protocol.md §13.3)
# -------------------------------------------------------


@pytest.mark.parametrize(
    "code",
    [
        "RateLimited",
        "ParallelLimited",
        "Too_Many_Requests",
        "quotaLimited",
        "ExceedLimit",
        "quota_exhausted",
    ],
)
def test_each_limit_code_in_any_spelling(code: str) -> None:
    """Each limit code, also lower-cased and without underscores, is a 429 naming the
    canonical code; a busy code never waits ``num`` hours."""
    assert code in envelope.LIMIT_CODES
    busy = code in ("ParallelLimited", "Too_Many_Requests")
    for spelling in (code, code.lower().replace("_", "")):
        err = envelope_error(
            {"success": False, "data": {"code": spelling, "num": 2, "details": "d"}}
        )
        assert type(err) is UpstreamRateLimitedError
        assert err.upstream_code == code
        if busy:
            assert err.retry_after_s is None and "Try again" not in err.message
            assert "has too many answers in progress (d)" in err.message
        else:
            assert err.retry_after_s == 7200 and "Try again in 2 hours." in err.message
            assert "reached its usage limit (d)" in err.message


def test_limit_codes_table_is_covered() -> None:
    """Each limit code has its case above."""
    assert len(envelope.LIMIT_CODES) == 6


def test_rate_limit_words_without_a_code() -> None:
    """ "rate limit" in the details with no code: the default upstream code, the code in the
    message when there are no details."""
    err = envelope_error({"error": "Rate limit reached"})
    assert type(err) is UpstreamRateLimitedError and err.upstream_code == "RateLimited"
    err = envelope_error({"success": False, "data": {"code": "rate_limit_x"}})
    assert type(err) is UpstreamRateLimitedError
    assert "(rate_limit_x)" in err.message and err.upstream_code == "rate_limit_x"


def test_captcha_errors_carry_the_advice() -> None:
    """Every captcha answer tells the user what to do."""
    for obj in ({"ret": ["RGV587_ERROR::SM"]}, {"error": {"code": "X", "details": "captcha"}}):
        err = envelope_error(obj)
        assert err is not None and err.message == CAPTCHA_ADVICE


@pytest.mark.parametrize("status", [502, 503, 505, 599])
def test_each_5xx_but_504_is_unavailable(status: int) -> None:
    """Every 5xx other than 504 is unavailable, naming the status."""
    err = classify_response(status, "application/json", b"[1]")
    assert type(err) is UpstreamUnavailableError and f"HTTP {status}" in err.message


def test_json_array_bodies_are_parsed() -> None:
    """A body starting with "[" is parsed (a list is no envelope, so the status decides)."""
    assert type(classify_response(200, "application/json", b'["x"]')) is UpstreamProtocolError


def test_replay_miss_message_is_capped_at_600() -> None:
    """The replay server's explanation is kept up to 600 characters."""
    body = _body({"error": {"type": "replay_miss", "message": "m" * 1000}})
    err = classify_response(404, "application/json", body)
    assert "m" * 599 + "…" in err.message and "m" * 600 not in err.message
    err = classify_response(404, "application/json", _body({"error": {"type": "replay_miss"}}))
    assert err.message.endswith("request: ")


def test_unknown_json_keys_are_cut_to_40_characters() -> None:
    """Each key named in the protocol error is cut to 40 characters."""
    err = classify_response(200, "application/json", _body({"k" * 60: 1}))
    assert "k" * 39 + "…" in err.message and "k" * 40 not in err.message


def test_bare_code_uses_message_when_no_details() -> None:
    """A bare code object quotes ``message`` when there are no ``details``."""
    err = envelope_error({"code": "Weird", "message": "the words"})
    assert err is not None and "the words" in err.message
    err = envelope_error({"data": {"error": {"code": "Weird", "message": "inner words"}}})
    assert err is not None and "inner words" in err.message
    err = envelope_error({"success": False, "data": {"code": "Weird", "message": "data words"}})
    assert err is not None and "data words" in err.message


# -- redirects (never followed): one test per kind of target ---------------------------------


@pytest.mark.parametrize(
    ("location", "kind", "shown", "hidden"),
    [
        ("https://chat.qwen.ai/auth?action=signin", UpstreamUnauthorizedError, "/auth", "signin"),
        ("/auth", UpstreamUnauthorizedError, "sign-in page (/auth", ""),
        ("/login?next=/c/1", UpstreamUnauthorizedError, "/login", "next="),
        ("https://chat.qwen.ai/signin", UpstreamUnauthorizedError, "/signin", ""),
        ("https://chat.qwen.ai/sign-in", UpstreamUnauthorizedError, "/sign-in", ""),
        (
            "https://chat.qwen.ai/api/v2/chats/new/_____tmd_____/punish?x5secdata=SIG",
            UpstreamCaptchaError,
            "captcha",
            "SIG",
        ),
        ("https://chat.qwen.ai/x?action=captcha", UpstreamCaptchaError, "slider", ""),
        (
            "https://user:pa55@cdn.example:8443/v2/chats/new?sig=SIGNED",
            UpstreamProtocolError,
            "a redirect to https://cdn.example:8443/v2/chats/new;",
            "pa55",
        ),
        ("https://[::1]:9/x", UpstreamProtocolError, "https://[::1]:9/x", ""),
        ("http://[::1", UpstreamProtocolError, "a redirect to /;", "[::1"),
        ("https://chat.qwen.ai/api/v2/chats/new", UpstreamProtocolError, "upstream_url", ""),
        ("https://cdn.example", UpstreamProtocolError, "a redirect to https://cdn.example/;", ""),
        ("http://:8080/x", UpstreamProtocolError, "a redirect to /x;", ":8080"),
        ("https://x.example/\udcff_____tmd_____", UpstreamCaptchaError, "slider", ""),
    ],
)
def test_a_redirect_is_classified_by_its_target(
    location: str, kind: type[Exception], shown: str, hidden: str
) -> None:
    err = classify_response(302, "text/html", b"", location)
    assert type(err) is kind
    assert shown in str(err)
    if hidden:
        assert hidden not in str(err)
    if kind is UpstreamProtocolError:
        assert "HTTP 302" in str(err)


def test_the_sign_in_redirect_names_its_status() -> None:
    assert "HTTP 307" in str(classify_response(307, "", b"", "/auth"))


def test_a_3xx_without_location_is_unexpected_content() -> None:
    err = classify_response(302, "", b"", None)
    assert type(err) is UpstreamProtocolError
    assert "unexpected content" in str(err)


def test_a_location_outside_a_redirect_is_not_read_as_one() -> None:
    """Only a 3xx is a redirect: a 401 with a Location is still the refused token's error."""
    err = classify_response(401, "", b"", "https://elsewhere.example/")
    assert type(err) is UpstreamUnauthorizedError
    assert "elsewhere" not in str(err)


def test_a_redirect_is_any_3xx_and_only_a_3xx() -> None:
    assert type(classify_response(300, "", b"", "/auth")) is UpstreamUnauthorizedError
    assert type(classify_response(399, "", b"", "/auth")) is UpstreamUnauthorizedError
    assert type(classify_response(400, "", b"", "/auth")) is UpstreamProtocolError
    assert type(classify_response(299, "", b"", "/auth")) is UpstreamProtocolError


def test_a_redirect_target_is_named_in_at_most_120_characters() -> None:
    """The target is clipped like any echoed value: 120 characters, the last an ellipsis."""
    fits = "https://cdn.example/" + "a" * 100  # 120 characters
    assert f"a redirect to {fits};" in str(classify_response(302, "", b"", fits))
    longer = fits + "b"
    assert f"a redirect to {fits[:119]}…;" in str(classify_response(302, "", b"", longer))
