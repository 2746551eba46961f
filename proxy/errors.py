"""The proxy's one exception tree, and its one mapping to OpenAI error objects.

Every failure the proxy reports to a client is one of these, and :func:`to_openai` is the only
place that turns it into an HTTP status, headers and an OpenAI-style body
``{"error": {"message", "type", "param", "code"}}``. Messages are written for the user and never
carry secrets: no tokens, cookies, anti-bot values or signed URLs (callers pass them through
:func:`scrub` when they quote upstream text).

::

    ProxyError                         500 server_error
    ├── ClientRequestError             400 invalid_request_error
    │   ├── InvalidJSONError           400 invalid_json / invalid_encoding
    │   ├── UnsupportedContentError    400 unsupported_content
    │   ├── ModelNotFoundError         404 model_not_found
    │   ├── HTTPStatusError            404 not_found / 405 method_not_allowed / http_error
    │   ├── ForbiddenRequestError      403 forbidden_host / forbidden_origin (§2 of the README)
    │   ├── RequestTimeoutError        408 request_timeout          (body not sent in time)
    │   ├── UnsupportedMediaTypeError  415 unsupported_media_type   (POST body content type)
    │   ├── HeadersTooLargeError       431 headers_too_large        (refused by the HTTP parser)
    │   ├── URITooLongError            414 uri_too_long             (refused by the HTTP parser)
    │   ├── MalformedHTTPError         400 malformed_http           (refused by the HTTP parser)
    │   ├── ResponseNotFoundError      404 response_not_found       (GET /v1/responses/{id})
    │   ├── PreviousResponseNotFoundError 400 previous_response_not_found
    │   ├── BodyTooLargeError          413 request_too_large
    │   │   └── MediaTooLargeError     413 media_too_large          (a file/URL/data: URI input)
    │   └── MediaFetchError            400 media_fetch_failed       (a client-given URL, §7)
    │       └── MediaURLRefusedError   400 media_url_refused        (scheme, private address)
    ├── AuthenticationError            401 invalid_api_key          (the client's key)
    ├── KeyRateLimitedError            429 rate_limit_exceeded      (a per-key limit, + Retry-After)
    ├── AccountsBusyError              429 accounts_busy            (every account at its limit)
    ├── NoUpstreamTokenError           503 no_upstream_account
    ├── MediaFetchTimeoutError         504 media_fetch_timeout      (a client-given URL)
    └── UpstreamError                  502 upstream_error           (chat.qwen.ai failed)
        ├── UpstreamRateLimitedError   429 rate_limit_exceeded      (+ Retry-After, seconds)
        ├── UpstreamUnauthorizedError  401 upstream_unauthorized
        ├── UpstreamBadRequestError    400 / 502 upstream_bad_request
        ├── UpstreamCaptchaError       503 upstream_captcha         (WAF / baxia slider)
        ├── UpstreamEmptyError         502 upstream_empty
        ├── UpstreamTruncatedError     502 upstream_truncated
        ├── UpstreamProtocolError      502 upstream_protocol_error
        ├── UpstreamReplayMissError    404 replay_miss              (offline mode only)
        ├── UpstreamNoMediaError       502 upstream_no_media        (no image/video URL, §6.4)
        ├── UpstreamBadMediaError      502 upstream_bad_media       (captcha link, off-CDN URL)
        ├── UpstreamTaskFailedError    502 upstream_task_failed     (t2v task failed, §6.3)
        ├── UpstreamUnavailableError   502 upstream_unavailable     (connection failed, 5xx;
        │                              503 + Retry-After: a 503 that named its wait)
        └── UpstreamTimeoutError       504 upstream_timeout         (also a TimeoutError)
            └── UpstreamTaskTimeoutError 504 upstream_task_timeout  (t2v past its deadline)

Sources for the upstream cases: docs/protocol.md §10 (error catalogue) and §5.7 (errors in streams);
for media: §6.3 (tasks), §6.4 (why proxies answered ``![image](null)``) and §7 (uploads).
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

__all__ = [
    "AccountsBusyError",
    "AuthenticationError",
    "BodyTooLargeError",
    "ClientRequestError",
    "ForbiddenRequestError",
    "HTTPStatusError",
    "HeadersTooLargeError",
    "InvalidJSONError",
    "KeyRateLimitedError",
    "MalformedHTTPError",
    "MediaFetchError",
    "MediaFetchTimeoutError",
    "MediaTooLargeError",
    "MediaURLRefusedError",
    "ModelNotFoundError",
    "NoUpstreamTokenError",
    "PreviousResponseNotFoundError",
    "ProxyError",
    "RequestTimeoutError",
    "ResponseNotFoundError",
    "URITooLongError",
    "UnsupportedContentError",
    "UnsupportedMediaTypeError",
    "UpstreamBadMediaError",
    "UpstreamBadRequestError",
    "UpstreamCaptchaError",
    "UpstreamEmptyError",
    "UpstreamError",
    "UpstreamNoMediaError",
    "UpstreamProtocolError",
    "UpstreamRateLimitedError",
    "UpstreamReplayMissError",
    "UpstreamTaskFailedError",
    "UpstreamTaskTimeoutError",
    "UpstreamTimeoutError",
    "UpstreamTruncatedError",
    "UpstreamUnauthorizedError",
    "UpstreamUnavailableError",
    "clip",
    "error_body",
    "quote",
    "scrub",
    "to_openai",
]


class ProxyError(Exception):
    """Base of every error the proxy reports. ``message`` is safe to show to the client."""

    status: ClassVar[int] = 500
    type: ClassVar[str] = "server_error"
    code: ClassVar[str] = "internal_error"

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param

    def http_status(self) -> int:
        """The HTTP status the client gets."""
        return self.status

    def headers(self) -> dict[str, str]:
        """Extra response headers (e.g. ``Retry-After``)."""
        return {}

    def error_code(self) -> str:
        """The ``error.code`` string."""
        return self.code


class ClientRequestError(ProxyError):
    """The client's request is malformed or asks for something impossible."""

    status = 400
    type = "invalid_request_error"
    code = "invalid_request"


class InvalidJSONError(ClientRequestError):
    """The body is not UTF-8 JSON. ``encoding_error`` marks a charset problem."""

    code = "invalid_json"

    def __init__(self, message: str, *, encoding_error: bool = False) -> None:
        super().__init__(message)
        self.encoding_error = encoding_error

    def error_code(self) -> str:
        return "invalid_encoding" if self.encoding_error else self.code


class UnsupportedContentError(ClientRequestError):
    """A message part this proxy cannot carry upstream (yet)."""

    code = "unsupported_content"


class ModelNotFoundError(ClientRequestError):
    """The requested model is not offered by the upstream."""

    status = 404
    code = "model_not_found"


class HTTPStatusError(ClientRequestError):
    """The router refused the request: unknown path (404 ``not_found``), method not allowed
    (405 ``method_not_allowed``), or another HTTP status (``http_error``)."""

    def __init__(self, message: str, *, status: int, code: str) -> None:
        super().__init__(message)
        self._status = status
        self._code = code

    def http_status(self) -> int:
        """The router's status."""
        return self._status

    def error_code(self) -> str:
        """``not_found``, ``method_not_allowed`` or ``http_error``."""
        return self._code


class ForbiddenRequestError(ClientRequestError):
    """A request a web page could have forged: a foreign ``Host`` (DNS rebinding) or a browser
    ``Origin`` not in ``cors_origins`` while no API key is configured."""

    status = 403
    code = "forbidden"

    def __init__(self, message: str, *, code: str = "forbidden") -> None:
        super().__init__(message)
        self._code = code

    def error_code(self) -> str:
        return self._code


class RequestTimeoutError(ClientRequestError):
    """The client did not send its whole request body within ``body_timeout_s``."""

    status = 408
    code = "request_timeout"


class UnsupportedMediaTypeError(ClientRequestError):
    """A POST body in a content type the route does not take (``application/json``, or
    ``multipart/form-data`` where documented)."""

    status = 415
    code = "unsupported_media_type"


class MalformedHTTPError(ClientRequestError):
    """The HTTP request itself was refused by the server's parser (bad request line, invalid
    characters, bad framing). The message never quotes the offending bytes."""

    code = "malformed_http"


class HeadersTooLargeError(MalformedHTTPError):
    """A header line (or the request line) is longer than the parser allows, or there are too
    many headers (RFC 6585 §5)."""

    status = 431
    code = "headers_too_large"


class URITooLongError(MalformedHTTPError):
    """The request line's target is longer than the parser allows (RFC 9110 §15.5.15)."""

    status = 414
    code = "uri_too_long"


class ResponseNotFoundError(ClientRequestError):
    """No stored Responses API answer has this id (never stored, expired, or ``store: false``)."""

    status = 404
    code = "response_not_found"


class PreviousResponseNotFoundError(ClientRequestError):
    """``previous_response_id`` names no stored response (400, ``param: previous_response_id``)."""

    code = "previous_response_not_found"


class BodyTooLargeError(ClientRequestError):
    """The request body exceeds the configured limit (bytes)."""

    status = 413
    code = "request_too_large"


class MediaTooLargeError(BodyTooLargeError):
    """An input file (upload, client-given URL or ``data:`` URI) exceeds its kind's limit."""

    code = "media_too_large"


class MediaFetchError(ClientRequestError):
    """A client-given media URL could not be used: unreachable, not 200, wrong content type."""

    code = "media_fetch_failed"


class MediaURLRefusedError(MediaFetchError):
    """A client-given URL is not fetched: not http(s), or a loopback/private/reserved address."""

    code = "media_url_refused"


class MediaFetchTimeoutError(ProxyError, TimeoutError):
    """Fetching a client-given media URL took longer than ``media_fetch_timeout_s``."""

    status = 504
    type = "invalid_request_error"
    code = "media_fetch_timeout"


class AuthenticationError(ProxyError):
    """The client's API key is missing or wrong."""

    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class KeyRateLimitedError(ProxyError):
    """The client's API key is over one of its limits (requests per minute, streams at once).

    ``retry_after_s`` (seconds, rounded up) becomes ``Retry-After``.
    """

    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = max(1, retry_after_s)

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class AccountsBusyError(ProxyError):
    """Every usable upstream account already has ``max_inflight_per_account`` answers in
    flight. ``Retry-After`` is a short wait: answers finish within seconds."""

    status = 429
    type = "rate_limit_error"
    code = "accounts_busy"

    def __init__(self, message: str, *, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = max(1, retry_after_s)

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class NoUpstreamTokenError(ProxyError):
    """Every upstream account is parked (rate-limited or blocked) or none is configured."""

    status = 503
    type = "server_error"
    code = "no_upstream_account"

    def __init__(self, message: str, *, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)} if self.retry_after_s else {}


class UpstreamError(ProxyError):
    """chat.qwen.ai answered with a failure, or not at all (docs/protocol.md §10)."""

    status = 502
    type = "upstream_error"
    code = "upstream_error"


class UpstreamRateLimitedError(UpstreamError):
    """The account's quota is used up (``RateLimited``; ``num`` is hours to wait), or it is
    answering too much at once (``ParallelLimited``, ``Too_Many_Requests``, ``quotaLimited``,
    ``ExceedLimit``, ``quota_exhausted``: docs/protocol.md §13.3). ``upstream_code`` is the code
    chat.qwen.ai sent (``None`` for a bare HTTP 429), used to choose how long the account rests.
    """

    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"

    def __init__(
        self, message: str, *, retry_after_s: int | None = None, upstream_code: str | None = None
    ) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.upstream_code = upstream_code

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)} if self.retry_after_s else {}


class UpstreamUnauthorizedError(UpstreamError):
    """The upstream token is invalid or expired."""

    status = 401
    type = "authentication_error"
    code = "upstream_unauthorized"


class UpstreamBadRequestError(UpstreamError):
    """``Bad_Request``: 400 when the client's input caused it, else 502 (ours was refused)."""

    code = "upstream_bad_request"

    def __init__(self, message: str, *, client_fault: bool = False) -> None:
        super().__init__(message)
        self.client_fault = client_fault

    def http_status(self) -> int:
        return 400 if self.client_fault else 502


class UpstreamCaptchaError(UpstreamError):
    """The Aliyun/baxia WAF answered with a captcha instead of the model (docs/protocol.md §10)."""

    status = 503
    code = "upstream_captcha"

    def headers(self) -> dict[str, str]:
        return {"Retry-After": "600"}


class UpstreamEmptyError(UpstreamError):
    """The stream ended without any answer text (docs/protocol.md §5.7, silent cut-off)."""

    code = "upstream_empty"


class UpstreamTruncatedError(UpstreamError):
    """The stream broke off before the answer finished."""

    code = "upstream_truncated"


class UpstreamProtocolError(UpstreamError):
    """The upstream answered in a shape this proxy does not understand."""

    code = "upstream_protocol_error"


class UpstreamReplayMissError(UpstreamError):
    """Offline mode: no recorded interaction matches the request."""

    status = 404
    type = "invalid_request_error"
    code = "replay_miss"


class UpstreamNoMediaError(UpstreamError):
    """An image or video was asked for and the answer held no usable URL (docs/protocol.md §6.4)."""

    code = "upstream_no_media"


class UpstreamBadMediaError(UpstreamError):
    """The upstream's media URL is not one to hand out: a captcha (punish) link, a host off the
    CDN allow-list, or bytes that are not an image (docs/protocol.md §6.4 item 4)."""

    code = "upstream_bad_media"


class UpstreamTaskFailedError(UpstreamError):
    """The generation task (t2v) ended in ``failed``/``error`` (docs/protocol.md §6.3)."""

    code = "upstream_task_failed"


class UpstreamUnavailableError(UpstreamError):
    """The upstream could not be reached, or answered with a server error: 502; or it answered
    503 with a ``Retry-After`` (``retry_after_s``, seconds): 503 passing that wait on
    (docs/protocol.md §10)."""

    code = "upstream_unavailable"

    def __init__(self, message: str, *, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    def http_status(self) -> int:
        return 503 if self.retry_after_s else 502

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)} if self.retry_after_s else {}


class UpstreamTimeoutError(UpstreamError, TimeoutError):
    """The upstream did not answer in time."""

    status = 504
    code = "upstream_timeout"


class UpstreamTaskTimeoutError(UpstreamTimeoutError):
    """The generation task did not finish before ``video_deadline_s`` (docs/protocol.md §6.3)."""

    code = "upstream_task_timeout"


_SECRET_PATTERNS = (
    # JWTs, whole or one segment at a time, with "." possibly percent- or JSON-encoded: a JSON
    # object encoded in base64url always starts "eyJ", so any long run starting so is a secret
    re.compile(r"eyJ[A-Za-z0-9_-]{8,}(?:(?:\.|%2[Ee]|\\u002[Ee])[A-Za-z0-9_-]*)*"),
    re.compile(r"(?i)([?&](?:x5secdata|key|token|signature|security-token)=)[^&\s\"']+"),
    re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"),  # e-mail addresses
    # credentials quoted in text ("Authorization: Bearer …")
    re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=%-]{8,}"),
)


def clip(value: object, limit: int = 80) -> str:
    """``value`` as text for quoting in a message or log line, at most ``limit`` characters
    (the last one an ellipsis when cut). Use for anything the client sent: model names, paths."""
    text = value if isinstance(value, str) else str(value)
    if len(text) > limit:
        return text[: limit - 1] + "…"
    return text


def quote(value: object, limit: int = 80) -> str:
    """``value`` quoted for a message (``'gpt-x'``, ``{'a': 1}``), cut like :func:`clip` so at
    most ``limit`` characters of it are repeated. Use instead of ``{value!r}`` for anything the
    client sent: an unsupported type, an unknown name, an id that was not found."""
    if isinstance(value, str):
        return repr(clip(value, limit))
    return clip(repr(value), limit)


def scrub(text: str, limit: int = 300) -> str:
    """Remove secrets from upstream text and cap its length at ``limit`` characters.

    Removed: JWTs and any single JWT segment (also when the dots are ``%2E``- or
    ``\\u002e``-encoded), signed-URL query keys, e-mail addresses and ``Bearer``/``Basic``
    credentials. Secrets known by value (configured tokens, cookies, API keys) are masked at the
    output boundaries by :class:`proxy.secrets.SecretMasker`.
    """
    text = _SECRET_PATTERNS[0].sub("<redacted>", text)
    text = _SECRET_PATTERNS[1].sub(r"\1<redacted>", text)
    text = _SECRET_PATTERNS[2].sub("<redacted>", text)
    text = _SECRET_PATTERNS[3].sub(r"\1 <redacted>", text)
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text


def error_body(exc: ProxyError) -> dict[str, Any]:
    """The OpenAI error object for ``exc``: ``{"error": {message, type, param, code}}``."""
    return {
        "error": {
            "message": exc.message,
            "type": exc.type,
            "param": exc.param,
            "code": exc.error_code(),
        }
    }


def to_openai(exc: BaseException) -> tuple[int, dict[str, str], dict[str, Any]]:
    """Map any exception to ``(status, headers, body)``. Unknown exceptions become a bare 500."""
    if not isinstance(exc, ProxyError):
        exc = ProxyError("internal error in the proxy; see its log")
    return exc.http_status(), exc.headers(), error_body(exc)
