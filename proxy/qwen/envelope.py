"""Classify chat.qwen.ai answers that are not the expected SSE stream or JSON success.

Pure: bytes and parsed JSON in, :class:`~proxy.errors.UpstreamError` out. The endpoint often
answers HTTP 200 with ``application/json`` (an error envelope) or ``text/html`` (the WAF slider)
instead of ``text/event-stream``, so callers branch on the content type first (docs/protocol.md
§4.3) and hand everything that is not a stream to :func:`classify_response`.

Envelope shapes (docs/protocol.md §10, samples ``error_*.json`` and ``waf_*.json``)::

    {"success": false, "request_id": "…", "data": {"code": "RateLimited", "details": "…", "num": 6}}
    {"ret": ["FAIL_SYS_USER_VALIDATE", "RGV587_ERROR::…"], "data": {"url": "…/punish?…"}}
    {"error": {"code": "…", "message" | "details": "…"}}          (mid-stream, §5.7)
"""

from __future__ import annotations

import math
import re
import time
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import orjson

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
    clip,
    scrub,
)

__all__ = [
    "CAPTCHA_ADVICE",
    "LIMIT_CODES",
    "RETRY_AFTER_MAX_S",
    "classify_response",
    "envelope_error",
    "looks_like_waf",
    "retry_after_s",
]

CAPTCHA_ADVICE = (
    "chat.qwen.ai's bot protection (Aliyun WAF) answered with a captcha instead of the model. "
    "Open https://chat.qwen.ai in a browser signed in with this account, solve the slider, "
    "then retry in a few minutes; rapid automatic retries make the block last longer."
)

_WAF_MARKERS = (
    b"_____tmd_____",
    b"x5secdata",
    b"aliyun_waf",  # also the aliyun_waf_aa variant (docs/protocol.md §13.3)
    b"FAIL_SYS_USER_VALIDATE",
    b"RGV587",
    b"/punish",
    b"Access Verification",
    b"action=captcha",  # also action=captchaconnect (§13.3, Rfym21#157)
)
#: Codes that say the account answers too much or its quota is used up (docs/protocol.md §10,
#: §13.3): the account rests and the client gets 429.
LIMIT_CODES = frozenset(
    {
        "RateLimited",
        "ParallelLimited",
        "Too_Many_Requests",
        "quotaLimited",
        "ExceedLimit",
        "quota_exhausted",
    }
)
# the same codes spelt in any case, with or without underscores (quota_limited, QuotaLimited…)
_LIMIT_BY_KEY = {c.replace("_", "").lower(): c for c in LIMIT_CODES}
_WAF_REDIRECT = re.compile(rb"location\.(?:replace|href)\s*[(=][^;]{0,2048}?punish", re.I)
"""The captcha wall as a script redirect, ``window.location.replace(…punish…)`` (§13.3)."""
_CLIENT_FAULT = re.compile(r"(?i)too long|exceed|more than \d+ characters|content length|too large")


RETRY_AFTER_MAX_S = 86400
"""The longest wait taken from an upstream ``Retry-After``, in seconds (a day): a longer one is
cut to it (the account would rest that long, and no client waits longer)."""


def retry_after_s(value: str | None, now: float | None = None) -> int | None:
    """The wait an upstream ``Retry-After`` header asks for, in whole seconds, between 1 and
    :data:`RETRY_AFTER_MAX_S`: ``delay-seconds`` or an HTTP-date (RFC 9110 §10.2.3; a date
    is counted from ``now``, epoch seconds, default the clock). ``None`` when there is no
    header or it is neither form (the caller's default wait applies); docs/protocol.md §10."""
    if value is None:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():
        seconds = int(text) if len(text) <= 9 else RETRY_AFTER_MAX_S
    else:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:  # "-0000": UTC, origin unknown (RFC 5322 §3.3)
            when = when.replace(tzinfo=UTC)
        seconds = math.ceil(when.timestamp() - (time.time() if now is None else now))
    return min(max(1, seconds), RETRY_AFTER_MAX_S)


def looks_like_waf(body: bytes) -> bool:
    """True when ``body`` carries a marker of the Aliyun/baxia captcha (docs/protocol.md §10)."""
    head = body[:65536]
    return any(m in head for m in _WAF_MARKERS) or _WAF_REDIRECT.search(head) is not None


def envelope_error(obj: Any) -> UpstreamError | None:
    """The error an already-parsed JSON object reports, or ``None`` if it reports none.

    Recognises the ``success:false`` envelope, the baxia ``ret`` body, a top-level ``error``
    object and ``data.error`` (docs/protocol.md §5.7, §10).
    """
    if not isinstance(obj, dict):
        return None
    ret = obj.get("ret")
    if isinstance(ret, list) and any(
        isinstance(r, str) and ("FAIL_SYS_USER_VALIDATE" in r or "RGV587" in r) for r in ret
    ):
        return UpstreamCaptchaError(CAPTCHA_ADVICE)
    err = obj.get("error")
    if isinstance(err, dict):
        return _from_code(err.get("code"), err.get("details") or err.get("message"), err)
    if isinstance(err, str) and err:
        return _from_code(None, err, {})
    data = obj.get("data")
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        inner = data["error"]
        return _from_code(inner.get("code"), inner.get("details") or inner.get("message"), inner)
    if obj.get("success") is False:
        if isinstance(data, dict):
            return _from_code(data.get("code"), data.get("details") or data.get("message"), data)
        return _from_code(obj.get("code"), obj.get("message"), obj)
    # A bare {"code": "RateLimited", ...} (as some clients surface the data object alone).
    code = obj.get("code")
    if (
        isinstance(code, str)
        and code
        and code not in ("200", "0", "success")
        and "choices" not in obj
    ):
        return _from_code(code, obj.get("details") or obj.get("message"), obj)
    return None


def _from_code(code: Any, details: Any, data: dict[str, Any]) -> UpstreamError:
    code_s = str(code or "").strip()
    det = scrub(str(details)) if details else ""
    low = f"{code_s} {det}".lower()
    canon = _LIMIT_BY_KEY.get(code_s.replace("_", "").lower())
    if canon is not None or "ratelimit" in low.replace("_", "").replace(" ", ""):
        code_s = canon or code_s
        busy = code_s in ("ParallelLimited", "Too_Many_Requests")
        hours = None if busy else data.get("num")
        retry: int | None = None
        if isinstance(hours, int | float) and hours > 0:
            retry = int(hours * 3600)
        wait = f" Try again in {hours} hours." if retry else ""
        what = "has too many answers in progress" if busy else "reached its usage limit"
        return UpstreamRateLimitedError(
            f"chat.qwen.ai: this account {what} ({det or code_s}).{wait}",
            retry_after_s=retry,
            upstream_code=code_s or "RateLimited",
        )
    if code_s in ("Unauthorized", "Not_Login") or "401" in low or "token has expired" in low:
        return UpstreamUnauthorizedError(
            "chat.qwen.ai refused the upstream token (expired or invalid): sign in at "
            "https://chat.qwen.ai, copy the new token into the proxy's configuration and restart."
            + (f" Upstream said: {det}" if det else "")
        )
    if code_s == "Bad_Request":
        return UpstreamBadRequestError(
            f"chat.qwen.ai rejected the request (Bad_Request: {det or 'no details'}).",
            client_fault=bool(_CLIENT_FAULT.search(det)),
        )
    if "captcha" in low or "fail_sys_user_validate" in low:
        return UpstreamCaptchaError(CAPTCHA_ADVICE)
    what = code_s or "error"
    return UpstreamError(f"chat.qwen.ai reported an error ({what}: {det or 'no details'}).")


def classify_response(
    status: int,
    content_type: str,
    body: bytes,
    location: str | None = None,
    *,
    retry_after: str | None = None,
    upstream: str = "chat.qwen.ai",
) -> UpstreamError:
    """The error for a response that is not a usable answer.

    ``status`` is the HTTP status, ``content_type`` the lower-cased header value, ``body`` the
    (possibly truncated) raw body, ``location`` the ``Location`` header of a redirect (the
    gateway never follows the site's redirects), ``retry_after`` the ``Retry-After`` header
    (:func:`retry_after_s`): the wait of a 429 (also of a limit envelope that named no hours)
    and of a 503, which is then passed on as a 503 (docs/protocol.md §10). ``upstream`` names
    the upstream in the messages about its HTTP answer
    (:func:`proxy.qwen.client.upstream_label`). Always returns an error: callers only ask
    when the answer is not what they expected.
    """
    wait = retry_after_s(retry_after)
    if looks_like_waf(body) or (
        location is not None and looks_like_waf(location.encode("utf-8", "replace"))
    ):
        return UpstreamCaptchaError(CAPTCHA_ADVICE)
    if 300 <= status < 400 and location is not None:
        return _redirect_error(status, location, upstream)
    obj: Any = None
    if body[:1] in (b"{", b"["):
        try:
            obj = orjson.loads(body)
        except orjson.JSONDecodeError:
            obj = None
    if isinstance(obj, dict):
        err = obj.get("error")
        if status == 404 and isinstance(err, dict) and err.get("type") == "replay_miss":
            return UpstreamReplayMissError(
                "offline replay has no recorded answer for this request: "
                + scrub(str(err.get("message", "")), limit=600)
            )
        found = envelope_error(obj)
        if found is not None:
            if wait and isinstance(found, UpstreamRateLimitedError) and not found.retry_after_s:
                found.retry_after_s = wait
            return found
    low = body[:4096].lower()
    if status in (200, 401, 403) and (b"token has expired" in low or b"invalid token" in low):
        return UpstreamUnauthorizedError(
            "chat.qwen.ai refused the upstream token (expired or invalid): sign in at "
            "https://chat.qwen.ai, copy the new token into the proxy's configuration and restart."
        )
    if status in (401, 403):
        return UpstreamUnauthorizedError(
            f"{upstream} answered HTTP {status}: the upstream token is invalid or expired."
        )
    asks = f" It asks to wait {wait} s." if wait else ""
    if status == 429:
        return UpstreamRateLimitedError(
            f"{upstream} answered HTTP 429 (too many requests).{asks}", retry_after_s=wait
        )
    if status in (502, 503, 504) or status >= 500:
        if status == 504:
            return UpstreamTimeoutError(f"{upstream} answered HTTP {status} (gateway timeout).")
        if status == 503 and wait:
            return UpstreamUnavailableError(
                f"{upstream} answered HTTP 503 (unavailable).{asks}", retry_after_s=wait
            )
        return UpstreamUnavailableError(f"{upstream} answered HTTP {status}.")
    if "html" in content_type:
        return UpstreamProtocolError(
            f"{upstream} answered with an HTML page (HTTP {status}) instead of data; "
            "the site may be down or the session may need a browser sign-in."
        )
    if isinstance(obj, dict):
        return UpstreamProtocolError(
            f"{upstream} answered HTTP {status} with JSON this proxy does not understand "
            f"(keys: {scrub(', '.join(clip(k, 40) for k in sorted(map(str, obj))[:8]))})."
        )
    return UpstreamProtocolError(
        f"{upstream} answered HTTP {status} with unexpected content ({content_type or 'none'})."
    )


_SIGN_IN_PATHS = ("/auth", "/login", "/signin", "/sign-in")
"""Path starts of the site's sign-in page: a redirect there means the token was refused."""


def _redirect_error(status: int, location: str, upstream: str) -> UpstreamError:
    """The error for a redirect answer (3xx + ``Location``): to the sign-in page, the token
    was refused (401); anywhere else, the API moved or something in between rewrites it (502).
    The target is named without its query (it may carry signed values). docs/protocol.md §10:
    no source reports a redirect from the API (shown by ``tests/test_upstream_redirects.py``,
    not by a cassette)."""
    try:
        parts = urlsplit(location.strip())
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        if host and parts.port is not None:
            host = f"{host}:{parts.port}"
        path = parts.path or "/"
    except ValueError:  # a malformed URL ("http://[::1", a bad port): named by its path alone
        host, path = "", "/"
    # no user name or password: only what tells the user where it went
    where = clip(f"{parts.scheme}://{host}{path}" if host else path, 120)
    if any(path.lower().startswith(p) for p in _SIGN_IN_PATHS):
        return UpstreamUnauthorizedError(
            f"{upstream} redirected the request to its sign-in page ({scrub(where)}, HTTP "
            f"{status}): the upstream token is invalid or expired."
        )
    return UpstreamProtocolError(
        f"{upstream} answered HTTP {status}, a redirect to {scrub(where)}; the gateway does not "
        "follow redirects of the site's API (check upstream_url: it must be the site's origin, "
        "with https)."
    )
