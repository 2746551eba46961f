"""The aiohttp application factory: routes, middlewares and the app's lifecycle.

Resources live in ``cleanup_ctx``: the shared state store (:mod:`proxy.store`), one
``aiohttp.ClientSession`` per app (and, in offline mode, the in-process replay server it talks
to). One front middleware, :func:`gateway_middleware`: timing, the hang-up watch
(:mod:`proxy.hangup`), client API-key checking (constant-time), the guard (:mod:`proxy.guard`),
the single error mapping (every failure becomes the error object of the request's front door,
with its status: OpenAI's :func:`proxy.errors.to_openai` unless the route says otherwise, see
:func:`front_door_of`), ``Server-Timing``, the request metrics and the request's one log line
(:func:`log_request` when nothing else logged it); then, only when API keys carry limits,
:func:`limits_middleware`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import hmac
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import orjson
import structlog
from aiohttp import web
from aiohttp.http_exceptions import ContentEncodingError

from proxy.accounts import ADMISSION, Admission
from proxy.cleanup import ChatJanitor
from proxy.config import Settings
from proxy.errors import (
    AuthenticationError,
    BodyTooLargeError,
    HTTPStatusError,
    MalformedHTTPError,
    ProxyError,
    clip,
)
from proxy.frontdoors import OPENAI, FrontDoor, door_for_path
from proxy.frontdoors.anthropic import ANTHROPIC
from proxy.frontdoors.openai_chat import OPENAI_CHAT
from proxy.frontdoors.responses import RESPONSES
from proxy.guard import (
    discard_input,
    expect_continue,
    guard_check,
    log_path,
    with_body_deadline,
)
from proxy.hangup import HangupWatch
from proxy.metrics import MODEL_KEY, Metrics, route_template, total_timing
from proxy.qwen.client import upstream_connector
from proxy.routes.admin import admin_accounts, metrics
from proxy.routes.chat import chat_completions
from proxy.routes.health import healthz
from proxy.routes.images import images_edits, images_generations
from proxy.routes.messages import messages, messages_count_tokens
from proxy.routes.models import get_model, list_models
from proxy.routes.responses import (
    create_response,
    delete_response,
    get_response,
    list_input_items,
)
from proxy.routes.videos import videos_generations
from proxy.secrets import SecretMasker
from proxy.service import ChatService
from proxy.state import (
    FRONT_DOOR,
    FRONT_DOORS,
    JANITOR,
    KEY_RULE,
    LOGGED,
    MASKER,
    METRICS,
    RESPONSES_IN_FLIGHT,
    SERVICE,
    SETTINGS,
    START_KEY,
    STORE,
    SWEEPER,
    TOOL_COUNTERS,
    KeyRule,
)
from proxy.store import MemoryStore, StateStore
from proxy.sweep import Sweeper, sweep_interval
from proxy.tools.stage import ToolCounters

__all__ = ["front_door_of", "gateway_middleware", "log_request", "make_app"]

log = structlog.get_logger("proxy.app")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_OPEN_PATHS = frozenset({"/healthz", "/"})
_PROBE_PATHS = frozenset({"/healthz", "/metrics"})  # their `request` lines are debug lines
REPLAY_URL = web.AppKey("replay_url", str)
#: Masks every configured secret (tokens, cookie values, API keys) in error bodies and logs.


def front_door_of(request: web.Request) -> FrontDoor:
    """The front door whose error shape ``request`` gets: the one its handler set
    (:data:`~proxy.state.FRONT_DOOR`), else the one registered for its route's path
    (:data:`~proxy.state.FRONT_DOORS`, for failures before the handler runs), else OpenAI."""
    door = request.get(FRONT_DOOR)
    if door is not None:
        return door
    doors = request.app.get(FRONT_DOORS)
    if doors:
        resource = request.match_info.route.resource
        found = doors.get(resource.canonical) if resource is not None else None
        if found is None and request.match_info.http_exception is not None:
            # Unknown path or method (GET /v1/messages): the API of that path or prefix, if any.
            found = door_for_path(doors, request.path)
        if found is not None:
            return found
    return OPENAI


def _error_response(request: web.Request, exc: ProxyError) -> web.Response:
    """The front door's error answer for ``exc``, logged as the request's line
    (``request_failed``) unless its line already reported ``exc`` (:data:`LOGGED`: a non-stream
    answer's ``chat_completion`` names its failure). A failure after a line that did not report
    it (a corrective turn that could not be opened, a store that failed after the answer's line)
    gets its ``request_failed`` line too: it is news."""
    masker = request.app[MASKER]
    message = exc.message
    exc.message = masker.mask(clip(message, 2000))
    status, headers, body = front_door_of(request).render_error(exc)
    if request.get(LOGGED) is not exc:
        request[LOGGED] = exc
        log.info(
            "request_failed",
            method=request.method,
            path=log_path(request),
            status=status,
            code=exc.error_code(),
            message=masker.mask(clip(message, 500)),
        )
    resp = web.Response(
        status=status, body=orjson.dumps(body), content_type="application/json", headers=headers
    )
    if status in (408, 413):  # the rest of the body may never come, or is not worth reading
        resp.force_close()
    return resp


def _failure_response(request: web.Request, exc: Exception) -> web.StreamResponse:
    """The front door's error answer for ``exc`` (the one mapping of failures to error
    objects); re-raises an :class:`aiohttp.web.HTTPException` below 400 (a redirect)."""
    if isinstance(exc, ProxyError):
        return _error_response(request, exc)
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        limit = request.app[SETTINGS].max_body_bytes
        return _error_response(
            request,
            BodyTooLargeError(f"the request body is larger than the limit of {limit} bytes"),
        )
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            raise exc
        path = clip(request.path)
        if exc.status == 404:
            err = HTTPStatusError(f"unknown path {path}", status=404, code="not_found")
        elif exc.status == 405:
            err = HTTPStatusError(
                f"method {clip(request.method, 20)} is not allowed on {path}",
                status=405,
                code="method_not_allowed",
            )
        else:
            err = HTTPStatusError(clip(exc.reason), status=exc.status, code="http_error")
        return _error_response(request, err)
    if isinstance(exc, web.RequestPayloadError):  # the body broke while being read
        # The rest of the body is unreadable: nothing is left for aiohttp to drain (its
        # drain would meet the same error and log a traceback) and the connection closes.
        request.content.feed_eof()
        response = _failure_response(request, _payload_error(exc))
        response.force_close()
        return response
    # called while handling `exc`; the traceback is the request's line
    log.exception("unhandled_error", method=request.method, path=log_path(request), status=500)
    internal = ProxyError("internal error in the proxy; see its log")
    request[LOGGED] = internal
    return _error_response(request, internal)


def _drop_compressed_body(request: web.Request, response: web.StreamResponse) -> None:
    """An error answered before a compressed body was read: the body is not decompressed just
    to be thrown away (aiohttp drains an unread body after the answer, and one that is not
    what its ``Content-Encoding`` says would log a traceback there); the connection closes."""
    if "Content-Encoding" in request.headers and not request.content.is_eof():
        request.content.feed_eof()
        response.force_close()
        discard_input(request)  # the rest is read and dropped, so the client gets the answer


def _payload_error(exc: web.RequestPayloadError) -> MalformedHTTPError:
    """What was wrong with a request body aiohttp could not read (its data, not a header value,
    is never quoted)."""
    if isinstance(exc.__cause__, ContentEncodingError):
        return MalformedHTTPError(
            "the request body could not be decompressed: it does not match its "
            "`Content-Encoding` (send it uncompressed, or compressed as the header says)"
        )
    return MalformedHTTPError(
        "the request body could not be read: its framing is broken (a `Content-Length` or "
        "chunked encoding that does not match the data)"
    )


KeyCheck = Callable[[web.Request], None]


def _key_check(keys: list[tuple[bytes, KeyRule | None]], open_paths: frozenset[str]) -> KeyCheck:
    """Require a configured key for every API path, as ``Authorization: Bearer <key>`` or
    ``x-api-key: <key>``; a key with limits is noted in ``request[KEY_RULE]``.

    With both headers, the request passes when either holds a valid key (the limits are those
    of the ``Authorization`` key when both do): Anthropic clients send ``x-api-key``, and some
    wrappers add an ``Authorization`` of their own. Two ``Authorization`` headers, or two
    ``x-api-key`` headers, are refused whatever they hold: which one counts would depend on
    their order. Each value given is compared with every key, in constant time per key.
    Raises :class:`AuthenticationError` (401)."""

    def check(request: web.Request) -> None:
        if request.path in open_paths or request.path.startswith("/admin/"):
            return
        headers = request.headers
        auths = headers.getall("Authorization", _NO_VALUES)
        x_keys = headers.getall("x-api-key", _NO_VALUES)
        if len(auths) > 1 or len(x_keys) > 1:
            raise AuthenticationError(
                "Ambiguous credentials: the request carries more than one `Authorization` "
                "header, or more than one `x-api-key` header; send the key once."
            )
        ok = given = False
        rule: KeyRule | None = None
        for value in (_bearer(auths[0]) if auths else "", x_keys[0] if x_keys else ""):
            if not value:
                continue
            given = True
            supplied = value.encode("utf-8", "surrogateescape")
            valid = False
            value_rule: KeyRule | None = None
            for key, key_rule in keys:  # compare against every key, in constant time per key
                match = hmac.compare_digest(supplied, key)
                valid |= match
                if match and key_rule is not None:
                    value_rule = key_rule
            if valid and not ok:  # the first valid value's limits (Authorization's)
                rule = value_rule
            ok |= valid
        if rule is not None:
            request[KEY_RULE] = rule
        if not ok:
            raise AuthenticationError(
                "Incorrect API key provided."
                if given
                else "Missing API key: send `Authorization: Bearer <key>` or `x-api-key: <key>`."
            )

    return check


def gateway_middleware(
    settings: Settings, key_check: KeyCheck | None, sweeper: Sweeper
) -> Callable[..., Awaitable[web.StreamResponse]]:
    """The app's one front middleware (one layer per request: part of every stream's fixed
    cost), in order:

    1. notes the request's start (``request[START_KEY]``, ``perf_counter`` seconds);
    2. watches the client's connection and cancels the handler once it is gone, or has left
       the answer unread for ``write_timeout_s`` (:class:`proxy.hangup.HangupWatch`, on the
       ticks of ``sweeper``);
    3. the API-key check (``key_check``, when keys are configured), then
       :func:`proxy.guard.guard_check` (Host, Origin, Content-Type) and the body deadline;
    4. maps every failure to the error object of the request's front door, with its status,
       in this one place (:func:`front_door_of`);
    5. ``Server-Timing: total;dur=<ms>`` on every answer that carries none (streamed answers
       set their own when they commit: ``proxy;dur=…, upstream;dur=…``);
    6. counts the request by route template, status and model, and times it (a client that
       left counts as 499);
    7. one log line per request: a request for which neither its handler nor the guard wrote
       one (:data:`~proxy.state.LOGGED` is not set; a failure's ``request_failed`` line is
       written in step 4) and that the watch did not drop (its ``client_too_slow`` line) gets
       the generic one of :func:`log_request`.
    """
    guard = guard_check(settings)
    body_timeout_s = settings.body_timeout_s
    write_timeout_s = settings.write_timeout_s

    @web.middleware
    async def gateway(request: web.Request, handler: Handler) -> web.StreamResponse:
        t0 = time.perf_counter()
        request[START_KEY] = t0
        task = asyncio.current_task()
        assert task is not None  # aiohttp always runs handlers in a task
        watch = HangupWatch(request, task, sweeper, write_timeout_s)
        status = 500
        try:
            try:
                if key_check is not None:
                    key_check(request)
                if guard(request):
                    response = await with_body_deadline(request, handler, body_timeout_s, sweeper)
                else:
                    response = await handler(request)
            except asyncio.CancelledError:
                status = 499  # the client went away (logged below, unless already)
                raise
            except ConnectionError:  # the client went away while it was written to
                status = 499
                raise
            except web.HTTPException as exc:
                status = exc.status  # kept if it is re-raised (below 400)
                response = _failure_response(request, exc)
                _drop_compressed_body(request, response)
            except Exception as exc:
                response = _failure_response(request, exc)
                _drop_compressed_body(request, response)
            status = response.status
            if not response.prepared and "Server-Timing" not in response.headers:
                response.headers["Server-Timing"] = total_timing(t0)
            return response
        finally:
            watch.disarm()
            elapsed_s = time.perf_counter() - t0
            model = request.get(MODEL_KEY, "")
            request.app[METRICS].request_done(route_template(request), status, model, elapsed_s)
            # (a chat completion has logged its line; a client that stopped reading was
            # logged by the watch, as `client_too_slow`)
            if LOGGED not in request and not watch.stalled:
                log_request(request, status, model, elapsed_s)

    return gateway


def log_request(request: web.Request, status: int, model: str, elapsed_s: float) -> None:
    """Write the generic line of a request no handler logged a line for, and note it
    (:data:`~proxy.state.LOGGED`): ``request`` with ``method``, ``path`` (clipped, secrets
    masked), ``status``, ``duration_ms`` and ``model`` (when known); ``client_disconnected``
    instead when the client left (``status`` 499). At debug level for the probes'
    ``/healthz`` and ``/metrics`` (polled every few seconds), at info level otherwise."""
    request[LOGGED] = True
    fields: dict[str, object] = {
        "method": request.method,
        "path": log_path(request),
        "status": status,
        "duration_ms": round(elapsed_s * 1000, 2),
    }
    if model:
        fields["model"] = model
    if status == 499:
        log.info("client_disconnected", **fields)
    elif request.path in _PROBE_PATHS:
        log.debug("request", **fields)
    else:
        log.info("request", **fields)


_NO_VALUES: list[str] = []  # (never changed)


def _bearer(authorization: str) -> str:
    """The key of an ``Authorization: Bearer <key>`` value; ``""`` for any other scheme."""
    scheme, _, value = authorization.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


@web.middleware
async def limits_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Per-key limits (requests per minute, answers at once) on POST requests, shared through
    the store. The request is counted with its first account slot, in the same store step
    (:data:`proxy.accounts.ADMISSION`); beyond a limit that step raises
    :class:`~proxy.errors.KeyRateLimitedError` (429 + ``Retry-After``). Requests that never
    reach chat.qwen.ai (refused input, unknown model) are not counted."""
    rule = request.get(KEY_RULE)
    if rule is None or request.method != "POST":
        return await handler(request)
    admission = Admission(rule.key_id, rule.name, rule.requests_per_minute, rule.max_streams)
    token = ADMISSION.set(admission)
    try:
        return await handler(request)
    finally:
        ADMISSION.reset(token)
        if admission.consumed and admission.streams > 0:
            await request.app[STORE].release_stream(rule.key_id)


def _key_rules(settings: Settings) -> list[tuple[bytes, KeyRule | None]]:
    keys: list[tuple[bytes, KeyRule | None]] = [
        (k.get_secret_value().encode("utf-8"), None) for k in settings.api_keys
    ]
    for i, limits in enumerate(settings.keys):
        secret = limits.key.get_secret_value()
        rule = KeyRule(
            key_id=hashlib.sha256(secret.encode("utf-8")).hexdigest()[:24],
            name=limits.name or f"key-{i + 1}",
            requests_per_minute=limits.requests_per_minute,
            max_streams=limits.max_streams,
        )
        has_limits = rule.requests_per_minute > 0 or rule.max_streams > 0
        keys.append((secret.encode("utf-8"), rule if has_limits else None))
    return keys


def _install_cors(app: web.Application, origins: list[str]) -> None:
    """CORS for the configured browser origins: preflights answered, every response labelled.

    Headers are added in ``on_response_prepare``, so streamed responses get them too.
    """
    allow_any = "*" in origins

    def allowed(request: web.Request) -> str | None:
        origin = request.headers.get("Origin")
        if origin is None or not (allow_any or origin in origins):
            return None
        return "*" if allow_any else origin

    @web.middleware
    async def preflight(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method == "OPTIONS" and allowed(request) is not None:
            t0 = time.perf_counter()
            resp = web.Response(
                status=204,
                headers={
                    "Access-Control-Allow-Methods": "GET, POST, DELETE, OPTIONS",
                    "Access-Control-Allow-Headers": request.headers.get(
                        "Access-Control-Request-Headers", "Authorization, Content-Type"
                    ),
                    "Access-Control-Max-Age": "600",
                },
            )
            log_request(request, 204, "", time.perf_counter() - t0)  # (no front middleware)
            return resp
        return await handler(request)

    async def label(request: web.Request, response: web.StreamResponse) -> None:
        origin = allowed(request)
        if origin is not None:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Expose-Headers"] = "Server-Timing, Retry-After"
            if origin != "*":
                response.headers["Vary"] = "Origin"

    app.middlewares.insert(0, preflight)
    app.on_response_prepare.append(label)


async def _replay_ctx(app: web.Application) -> AsyncIterator[None]:
    """Offline mode: serve the cassettes on a loopback port and use it as the upstream."""
    settings = app[SETTINGS]
    if not settings.replay:
        yield
        return
    from recorder.cassette import load_all
    from recorder.replay import make_replay_app

    cassettes = load_all(settings.replay)
    runner = web.AppRunner(make_replay_app(cassettes, speed=1.0), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    app[REPLAY_URL] = f"http://127.0.0.1:{port}"
    log.info(
        "offline_mode",
        cassettes=len(cassettes),
        interactions=sum(len(c.interactions) for c in cassettes),
        replay_url=app[REPLAY_URL],
    )
    try:
        yield
    finally:
        await runner.cleanup()


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    """The app's :class:`~proxy.store.StateStore`: Redis when ``redis_url`` is set (checked
    once at start; an unreachable Redis is logged and the app serves from memory), else
    in-process. Closed on shutdown."""
    settings = app[SETTINGS]
    store: StateStore
    if settings.redis_url is not None:
        from proxy.store.redis import RedisStore

        redis_store = RedisStore(
            settings.redis_url.get_secret_value(),
            prefix=settings.redis_prefix,
            timeout_s=settings.redis_timeout_s,
        )
        ok = await redis_store.ping()
        log.info("state_store", backend="redis", redis=redis_store.target, reachable=ok)
        store = redis_store
    else:
        store = MemoryStore()
    app[STORE] = store
    try:
        yield
    finally:
        await store.close()


async def _client_ctx(app: web.Application) -> AsyncIterator[None]:
    """One ClientSession for the whole app, closed on shutdown."""
    settings = app[SETTINGS]
    if REPLAY_URL in app:
        # Offline: the replay server is the site, the CDN (media URLs handed out and fetched
        # are rewritten to it) and the object store (uploads land in it).
        url = app[REPLAY_URL]
        settings = settings.model_copy(
            update={
                "upstream_url": url,
                "media_base_url": settings.media_base_url or url,
                "object_store_url": settings.object_store_url or url,
                "spare_chats": False,  # a cassette holds the chats/new calls it recorded
            }
        )
    elif not settings.tokens:
        log.warning(
            "no_upstream_token",
            hint="set QWEN_PROXY_TOKENS (the `token` cookie of a signed-in chat.qwen.ai browser "
            "session); without it chat.qwen.ai refuses most requests",
        )
    connector = upstream_connector(limit=0, ttl_dns_cache=300, enable_cleanup_closed=True)
    async with aiohttp.ClientSession(
        connector=connector,
        auto_decompress=True,
        # No cookie jar: a cookie the site sets (the WAF's `acw_tc`, a refreshed `token`)
        # would ride on every later request, whatever its account. Each request carries
        # exactly its account's credentials (QwenClient.headers); a jar lookup per request
        # is saved too.
        cookie_jar=aiohttp.DummyCookieJar(),
        trust_env=False,  # True costs a thread-pool hop per request; use `upstream_proxy`
        json_serialize=lambda o: orjson.dumps(o).decode(),
    ) as session:
        service = ChatService(
            session, settings, app[STORE], metrics=app[METRICS], sweeper=app[SWEEPER]
        )
        app[SERVICE] = service
        try:
            yield
        finally:
            await service.close()  # stop calls still on their way
            app[SWEEPER].close()


async def _janitor_ctx(app: web.Application) -> AsyncIterator[None]:
    """Delete the gateway's idle and leftover chats in the background (docs/landscape.md §3.12)."""
    service = app[SERVICE]
    if not service.cleans_up:
        yield
        return
    janitor = ChatJanitor(service)
    app[JANITOR] = janitor
    task = asyncio.get_running_loop().create_task(janitor.run(), name="chat-janitor")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def make_app(settings: Settings) -> web.Application:
    """Build the proxy app for ``settings``. Nothing is started until the app runs."""
    keys = _key_rules(settings)
    key_check = None
    if keys:
        open_paths = _OPEN_PATHS | ({"/metrics"} if settings.metrics_key else set())
        key_check = _key_check(keys, open_paths)
    sweeper = Sweeper(sweep_interval(min(settings.read_timeout_s, settings.body_timeout_s)))
    middlewares: list[Callable[..., Awaitable[web.StreamResponse]]] = [
        gateway_middleware(settings, key_check, sweeper)
    ]
    if any(rule is not None for _, rule in keys):
        middlewares.append(limits_middleware)  # after the key and guard checks: no quota spent
    app = web.Application(client_max_size=settings.max_body_bytes, middlewares=middlewares)
    app[SETTINGS] = settings
    app[SWEEPER] = sweeper
    app[FRONT_DOORS] = {}
    app[RESPONSES_IN_FLIGHT] = {}
    app[TOOL_COUNTERS] = ToolCounters()
    app[METRICS] = Metrics()
    app[METRICS].watch_tools(app[TOOL_COUNTERS])
    app[MASKER] = SecretMasker(settings.secret_values())
    if settings.cors_origins:
        _install_cors(app, settings.cors_origins)
    app.cleanup_ctx.append(_store_ctx)
    app.cleanup_ctx.append(_replay_ctx)
    app.cleanup_ctx.append(_client_ctx)
    app.cleanup_ctx.append(_janitor_ctx)
    # every route answers `Expect` with the guard's handler (100-continue, else a 417 error
    # object from the guard instead of aiohttp's plain-text answer)
    get = functools.partial(app.router.add_get, expect_handler=expect_continue)
    post = functools.partial(app.router.add_post, expect_handler=expect_continue)
    delete = functools.partial(app.router.add_delete, expect_handler=expect_continue)
    for prefix in ("/v1", ""):
        post(f"{prefix}/chat/completions", chat_completions)
        app[FRONT_DOORS][f"{prefix}/chat/completions"] = OPENAI_CHAT
        post(f"{prefix}/images/generations", images_generations)
        post(f"{prefix}/images/edits", images_edits)
        post(f"{prefix}/videos/generations", videos_generations)
        post(f"{prefix}/responses", create_response)
        app[FRONT_DOORS][f"{prefix}/responses"] = RESPONSES
        get(f"{prefix}/responses/{{response_id}}", get_response)
        delete(f"{prefix}/responses/{{response_id}}", delete_response)
        get(f"{prefix}/responses/{{response_id}}/input_items", list_input_items)
        get(f"{prefix}/models", list_models)
        get(f"{prefix}/models/{{model}}", get_model)
        post(f"{prefix}/messages", messages)
        post(f"{prefix}/messages/count_tokens", messages_count_tokens)
        app[FRONT_DOORS][f"{prefix}/messages"] = ANTHROPIC
        app[FRONT_DOORS][f"{prefix}/messages/count_tokens"] = ANTHROPIC
    get("/healthz", healthz)
    get("/metrics", metrics)
    get("/admin/accounts", admin_accounts)
    return app
