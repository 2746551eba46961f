"""The chat service: model catalog cache, account choice and the v2 flow, per app.

One :class:`ChatService` lives in the app state (created in ``cleanup_ctx``). Handlers ask it to
:meth:`~ChatService.open_chat` and get back an :class:`OpenChat`: the upstream response positioned
at the first SSE byte, plus the timing the proxy spent waiting on chat.qwen.ai.

Media (docs/protocol.md §6, §7): media parts of the messages are fetched or decoded
(:mod:`proxy.fetch`) before an account is taken, then uploaded with that account (STS grant,
signed PutObject) and referenced in ``messages[0].files``. :meth:`ChatService.generate_images`
runs t2i/image-edit turns to their image URLs; :meth:`ChatService.start_video` and
:meth:`ChatService.wait_video` run a t2v task (JSON answer, then polling with backoff until
``video_deadline_s``).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any, cast

import aiohttp
import structlog

from proxy import continuation
from proxy.accounts import Account, AccountPool
from proxy.batch import IterationBatch
from proxy.config import Settings
from proxy.conversation import Conversation, Turn
from proxy.errors import (
    AccountsBusyError,
    ClientRequestError,
    NoUpstreamTokenError,
    UpstreamBadMediaError,
    UpstreamCaptchaError,
    UpstreamError,
    UpstreamNoMediaError,
    UpstreamRateLimitedError,
    UpstreamTaskFailedError,
    UpstreamTaskTimeoutError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
    scrub,
)
from proxy.fetch import ingest
from proxy.metrics import Metrics
from proxy.qwen.client import QwenClient, ReadWatch, network_failure
from proxy.qwen.envelope import classify_response
from proxy.qwen.files import Blob, file_entry, filetype_of, oss_put_request
from proxy.qwen.media import MediaPolicy, aspect_ratio, find_task_id, task_state
from proxy.qwen.models import Catalog, parse_models
from proxy.qwen.request import (
    MAX_PROMPT_CHARS,
    ModelRoute,
    chats_new_body,
    completion_body,
    media_parts,
)
from proxy.qwen.sse import SSEDecoder
from proxy.qwen.translate import Failure, Media, OutEvent, Translator
from proxy.secrets import SecretMasker
from proxy.spares import SpareChats
from proxy.store import MemoryStore, StateStore
from proxy.sweep import Sweeper
from proxy.tools.prompt import build_prompt

__all__ = ["ChatService", "OpenChat", "VideoTask"]

#: Chat types whose turns can continue a chat natively (media turns always get a new chat).
NATIVE_CHAT_TYPES = frozenset({"t2t", "search"})

#: Bytes of a continuation's stream read, at most, to see whether the site accepted it.
PEEK_LIMIT = 256 * 1024

#: What is read, at most, after a finished answer's last frame before its connection is
#: released (bytes, seconds): normally only the end of the chunked body, already on its way.
DRAIN_LIMIT = 64 * 1024
DRAIN_S = 1.0

#: ``OpenChat.response`` until the stream is open (:meth:`ChatService._open_turn`)
_NOT_OPEN = cast(aiohttp.ClientResponse, None)
#: How many video status polls in a row may fail on the way (a 5xx, a reset, a timeout, a 429)
#: before the wait gives up: the task goes on upstream whatever one poll met.
_VIDEO_POLL_FAILURES = 3
_POLL_AGAIN = (UpstreamUnavailableError, UpstreamTimeoutError, UpstreamRateLimitedError)

#: OpenAI model names that mean "the default image/video model" on the media endpoints.
OPENAI_MEDIA_MODELS = ("dall-e", "gpt-image", "sora")

log = structlog.get_logger("proxy.service")


@dataclass(slots=True)
class OpenChat:
    """A completion stream that chat.qwen.ai accepted.

    ``upstream_wait_s`` is the time (seconds) spent waiting on chat.qwen.ai for the chat id and
    the stream's headers (and the uploads). ``policy`` says which image URLs are answers;
    ``expect_image`` is true for t2i and image edit (the answer must be an image).
    ``read_watch`` bounds the silences of the body (``read_timeout_s``); a reader sets its
    ``waiting`` while it waits for the body.
    ``response``, ``read_watch``, ``upstream_wait_s`` and ``prelude`` are set once the stream is
    open (the record is made while its headers are on their way, for ``open_chat``'s ``warm``).
    ``continued`` is true when the turn continues an earlier chat natively (§4.1 (a)); then
    ``prelude`` holds the first chunks, already read to check that the site accepted it: a
    reader takes them first, then ``response.content`` (as :class:`proxy.relay._Pump` does).
    """

    response: aiohttp.ClientResponse
    route: ModelRoute
    account: Account
    chat_id: str
    upstream_wait_s: float
    policy: MediaPolicy = field(default_factory=MediaPolicy)
    expect_image: bool = False
    upstream: str = "chat.qwen.ai"  # how messages name the upstream (QwenClient.label)
    masker: SecretMasker | None = None
    continued: bool = False
    prelude: list[bytes] = field(default_factory=list)
    read_watch: ReadWatch | None = None
    on_answer: Callable[[Translator, str, tuple[Any, ...]], None] | None = None
    #: called (once) when the client's answer is committed: its first byte is out
    after_commit: Callable[[], None] | None = None
    _translator: Translator | None = None

    def committed(self) -> None:
        """The answer's first byte is out (or the answer is complete): run
        :attr:`after_commit` once (the next spare chat is asked for, :mod:`proxy.spares`)."""
        hook, self.after_commit = self.after_commit, None
        if hook is not None:
            hook()

    def translator(
        self, reasoning: Any = "field", *, native_tools: bool = False, record: bool = True
    ) -> Translator:
        """A :class:`Translator` set up for this turn (reasoning mode, media policy; native
        ``local_tool`` calls when the request offers tools).

        The service keeps a reference to it: when the turn's block ends before the translator
        is :attr:`~Translator.done` (the client left), the site's stop call is sent; when the
        answer finishes, the conversation map learns it (native multi-turn). ``record=False``:
        the caller reports the answer itself (:attr:`on_answer`), as the tool stage does, since
        the client's answer (calls, no markup) is not the translator's text.
        """
        self._translator = Translator(
            reasoning=reasoning,
            media=self.policy,
            expect_image=self.expect_image,
            native_tools=native_tools,
            mask=self.masker.mask if self.masker else None,
            on_answer=self.on_answer if record else None,
        )
        return self._translator

    @property
    def finished(self) -> bool:
        """True once the upstream answer ended (finished or failed), as far as it was read."""
        return self._translator is not None and self._translator.done

    @property
    def response_id(self) -> str | None:
        """The upstream ``response_id`` from ``response.created`` (§5.2), once read."""
        return self._translator.response_id if self._translator is not None else None


@dataclass(slots=True)
class _Answer:
    """A finished answer to store as a conversation (:meth:`ChatService._store`)."""

    plan: continuation.Plan
    chat_id: str
    account: str  # label
    model: str
    response_id: str
    text: str
    calls: tuple[Any, ...]


class _TurnBlock:
    """The ``async with`` block of :meth:`ChatService.open_chat` / :meth:`ChatService.open_turn`:
    entering awaits the opening coroutine (the :class:`OpenChat`), leaving runs
    :meth:`ChatService._close_turn` with the block's exception. One object per turn instead of
    nested generator-based context managers (part of every stream's fixed cost)."""

    __slots__ = ("_chat", "_opening", "_service")

    def __init__(self, service: ChatService, opening: Coroutine[Any, Any, OpenChat]) -> None:
        self._service = service
        self._opening = opening
        self._chat: OpenChat | None = None

    async def __aenter__(self) -> OpenChat:
        self._chat = await self._opening
        return self._chat

    async def __aexit__(self, _type: object, exc: BaseException | None, _tb: object) -> None:
        assert self._chat is not None
        await self._service._close_turn(self._chat, exc)


class ContinuationFailedError(Exception):
    """A native continuation was refused before any text (PARENT_NOT_FOUND, a deleted chat, any
    error): the caller falls back to the flattened history in a new chat. ``error`` is the
    upstream error (its message is secret-free)."""

    def __init__(self, error: UpstreamError) -> None:
        super().__init__(error.message)
        self.error = error


@dataclass(frozen=True, slots=True)
class _Resume:
    """Where a continuation goes: the stored chat, its account, the answer it follows."""

    key: str
    chat_id: str
    account: Account
    parent_id: str


@dataclass(frozen=True, slots=True)
class VideoTask:
    """A t2v task chat.qwen.ai accepted: its ``task_id``, the ``account`` that owns it."""

    task_id: str
    account: Account
    chat_id: str


class ChatService:
    """Holds the per-app upstream state: accounts, the cached catalog and the client."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        settings: Settings,
        store: StateStore | None = None,
        *,
        metrics: Metrics | None = None,
        sweeper: Sweeper | None = None,
    ) -> None:
        self.settings = settings
        self.session = session
        self.store: StateStore = store if store is not None else MemoryStore()
        self.client = QwenClient(session, settings, sweeper)
        self.pool = AccountPool(
            settings.tokens,
            self.store,
            cooldown_s=settings.account_cooldown_s,
            max_inflight=settings.max_inflight_per_account,
            on_error=metrics.upstream_error if metrics is not None else None,
        )
        self.metrics = metrics
        self.masker = SecretMasker(settings.secret_values())
        self._catalog: Catalog | None = None
        self._catalog_at = 0.0
        self._catalog_lock = asyncio.Lock()
        self._background: set[asyncio.Task[None]] = set()
        #: finished answers to store as conversations, at the end of the loop's iteration
        self._answers: IterationBatch[_Answer] = IterationBatch(self._store)
        self._policy: MediaPolicy | None = None
        #: chats created ahead (``spare_chats``; :mod:`proxy.spares`), or ``None``
        self.spares: SpareChats | None = (
            SpareChats(
                self._create_chat,
                self.spawn,
                max_age_s=min(300.0, settings.conversation_ttl_s / 2),
            )
            if settings.spare_chats
            else None
        )

    async def catalog(self) -> Catalog:
        """The model catalog, fetched from ``/api/models`` at most every ``models_ttl_s``."""
        now = time.monotonic()
        if self._catalog is not None and now - self._catalog_at < self.settings.models_ttl_s:
            return self._catalog
        async with self._catalog_lock:
            if self._catalog is not None and time.monotonic() - self._catalog_at < (
                self.settings.models_ttl_s
            ):
                return self._catalog
            try:
                async with self.pool.lease(rotate=False, admit=False) as account:
                    try:
                        payload = await self.client.fetch_models(account)
                    except UpstreamError as exc:
                        await self.pool.report(account, exc)
                        raise
            except (UpstreamError, NoUpstreamTokenError, AccountsBusyError) as exc:
                if self._catalog is not None:
                    log.warning("models_refresh_failed", error=exc.message)
                    return self._catalog  # serve the stale list rather than fail
                raise
            self._catalog = Catalog(parse_models(payload))
            self._catalog_at = time.monotonic()
            log.debug("models_loaded", count=len(self._catalog.models))
            return self._catalog

    def policy(self, exclude: Sequence[str] = ()) -> MediaPolicy:
        """The media-URL policy of this app (CDN allow-list, offline rewrite), ``exclude``-ing the
        given source URLs."""
        if not exclude and self._policy is not None:
            return self._policy  # immutable: one per app for the usual turn without uploads
        policy = MediaPolicy(
            allowed_hosts=tuple(self.settings.media_hosts),
            exclude=frozenset(exclude),
            rewrite_to=self.settings.media_base_url,
        )
        if not exclude:
            self._policy = policy
        return policy

    async def route_for(self, conv: Conversation) -> ModelRoute:
        """Resolve the conversation's model (suffix variants included). Raises
        :class:`~proxy.errors.ModelNotFoundError`."""
        return (await self.catalog()).route(conv.model, enable_thinking=conv.thinking)

    async def media_route(self, name: str | None, chat_type: str) -> ModelRoute:
        """The route for a media endpoint (``chat_type`` ``t2i``, ``image_edit`` or ``t2v``).

        ``name`` may be a plain model (``qwen3-max``), its media variant (``qwen3-max-image``),
        or ``None``/an OpenAI name (``dall-e-3``, ``gpt-image-1``, ``sora-2``): then the
        ``image_model`` setting is used. Raises :class:`~proxy.errors.ModelNotFoundError` or
        :class:`ClientRequestError` (a variant of another media kind).
        """
        if not name or name.lower().startswith(OPENAI_MEDIA_MODELS):
            name = self.settings.image_model
        catalog = await self.catalog()
        suffix = {"t2i": "image", "image_edit": "image-edit", "t2v": "video"}[chat_type]
        route = catalog.route(name)
        if route.chat_type in ("t2t", "search") and not route.thinking:
            route = catalog.route(f"{route.model}-{suffix}")
        if route.chat_type != chat_type:
            raise ClientRequestError(
                f"the model `{name}` is not a {suffix} model; use `<model>-{suffix}`",
                param="model",
            )
        return route

    async def upload(self, account: Account, blob: Blob) -> dict[str, Any]:
        """Upload ``blob`` with ``account`` (§7.1 STS grant, §7.2 signed PutObject) and return
        its §7.4 file entry. Raises :class:`UpstreamError`."""
        grant = await self.client.sts_token(
            account, blob.filename, len(blob.data), filetype_of(blob.kind)
        )
        put = oss_put_request(
            grant,
            blob,
            date=formatdate(usegmt=True),
            object_store_url=self.settings.object_store_url,
        )
        await self.client.put_object(put, blob.data)
        log.debug("uploaded", kind=blob.kind, size=len(blob.data), account=account.label)
        return file_entry(
            grant,
            blob,
            now_ms=int(time.time() * 1000),
            item_id=str(uuid.uuid4()),
            task_id=str(uuid.uuid4()),
        )

    async def ingest_parts(self, turns: Sequence[Turn], *, param: str = "messages") -> list[Blob]:
        """Fetch or decode the media parts of ``turns`` (before any account is used), all at
        once; the blobs come in the parts' order. Raises the :mod:`proxy.fetch` errors (the
        first part's that fails, naming the part; the other fetches are then cancelled) and
        :class:`ClientRequestError` for too many parts (naming ``param``, the turns' field)."""
        parts = media_parts(turns)
        if len(parts) > self.settings.max_files_per_request:
            raise ClientRequestError(
                f"the messages hold {len(parts)} media parts; at most "
                f"{self.settings.max_files_per_request} are uploaded per request",
                param=param,
            )
        if not parts:
            return []
        return await _Parallel(
            [ingest(self.session, p, self.settings) for p in parts], "media-fetch"
        ).results()

    def open_chat(
        self,
        conv: Conversation,
        *,
        route: ModelRoute | None = None,
        scope: str | None = None,
        warm: Callable[[OpenChat], object] | None = None,
    ) -> _TurnBlock:
        """Resolve the model, upload the media parts, create the chat and open the stream
        (docs/protocol.md §3, §4, §7).

        With ``conversations = "native"`` (t2t and search), a history whose messages up to the
        last assistant turn match an answer this gateway gave (:mod:`proxy.continuation`)
        continues that chat: only the newer messages (and their media) are sent, with
        ``parent_id`` = that answer's ``response_id``. If the site refuses the continuation
        before any text, the whole history is flattened into a new chat instead, transparently.
        Every answer is remembered for the next turn. ``scope`` (default:
        ``conv.metadata[SCOPE_KEY]``, which the routes set from the API key) keeps clients apart.

        ``warm``: called with the turn's :class:`OpenChat` while the completion's headers are on
        their way (the request is sent; the record's ``response``, ``read_watch``,
        ``upstream_wait_s`` and ``prelude`` are not set yet), if the turn gets that far: the
        caller builds there what it needs for the first token (:class:`proxy.relay.StreamStart`),
        so that work is off the first token's path. It may be called again, with the record of
        the new chat, when a refused continuation falls back to one; an error it raises is the
        request's.

        Raises :class:`~proxy.errors.ClientRequestError` for bad input and
        :class:`~proxy.errors.UpstreamError` when chat.qwen.ai refuses; the account that drew a
        quota, captcha or token error is rested (:class:`AccountPool`). ``conv.size`` (a Qwen
        extension of the chat request) is the aspect ratio of ``-image`` answers.
        """
        return _TurnBlock(self, self._open_chat(conv, route, scope, warm))

    async def _open_chat(
        self,
        conv: Conversation,
        route: ModelRoute | None,
        scope: str | None,
        warm: Callable[[OpenChat], object] | None = None,
    ) -> OpenChat:
        """The entry of :meth:`open_chat`: the opened turn (its exit is :meth:`_close_turn`)."""
        if route is None:
            route = await self.route_for(conv)
        size = aspect_ratio(conv.size) if route.chat_type in ("t2i", "image_edit") else None
        native = self.settings.conversations == "native" and route.chat_type in NATIVE_CHAT_TYPES
        if scope is None:
            scope = str(conv.metadata.get(continuation.SCOPE_KEY, ""))
        scope += continuation.tools_scope(conv.tools)
        plan = continuation.plan(conv.turns, scope) if native else None
        resume = await self._resume(plan) if plan is not None and plan.key is not None else None
        if resume is not None and plan is not None:
            tail = conv.turns[plan.tail_start :]
            blobs = await self.ingest_parts(tail, param=conv.turns_param)
            prompt = build_prompt(conv, start=plan.tail_start, allow_empty=bool(blobs))
            try:
                return await self._open_turn(
                    route,
                    prompt,
                    size=None,
                    blobs=blobs,
                    resume=resume,
                    plan=plan,
                    turns_param=conv.turns_param,
                )
            except ContinuationFailedError as exc:
                log.info(
                    "conversation_fallback",
                    account=resume.account.label,
                    error=exc.error.error_code(),
                )
                await self.store.delete_conversation(resume.key)
        blobs = await self.ingest_parts(conv.turns, param=conv.turns_param)
        prompt = build_prompt(conv, allow_empty=bool(blobs))
        if route.chat_type == "image_edit" and not any(b.kind == "image" for b in blobs):
            raise ClientRequestError(
                "an -image-edit model needs the image to edit as an image_url part",
                param=conv.turns_param,
            )
        return await self._open_turn(
            route,
            prompt,
            size=size,
            blobs=blobs,
            resume=None,
            plan=plan,
            warm=warm,
            turns_param=conv.turns_param,
        )

    async def _resume(self, plan: continuation.Plan) -> _Resume | None:
        """The stored chat ``plan`` continues (its ``key`` is set), if it can be continued
        now."""
        assert plan.key is not None
        entry = await self.store.get_conversation(plan.key)
        if entry is None or not continuation.usable_entry(entry, plan.digests[: plan.tail_start]):
            return None
        account = self.pool.by_label(entry["account"])
        if account is None:  # resting, or no longer configured: start over elsewhere
            return None
        return _Resume(plan.key, entry["chat_id"], account, entry["parent_id"])

    def open_turn(
        self,
        route: ModelRoute,
        prompt: str,
        *,
        size: str | None = None,
        blobs: Sequence[Blob] = (),
        resume: _Resume | None = None,
        plan: continuation.Plan | None = None,
    ) -> _TurnBlock:
        """One streamed turn: account, uploads, ``chats/new``, completion (§3, §4, §7).

        ``resume`` continues a stored chat instead of creating one (§4.1 (a)); ``plan`` (the
        request's message digests) makes the finished answer a stored conversation.
        Raises :class:`~proxy.errors.UpstreamError` (the account is reported to the pool) and,
        with ``resume``, :class:`ContinuationFailedError` for any refusal before text.
        """
        opening = self._open_turn(route, prompt, size=size, blobs=blobs, resume=resume, plan=plan)
        return _TurnBlock(self, opening)

    async def _open_turn(
        self,
        route: ModelRoute,
        prompt: str,
        *,
        size: str | None,
        blobs: Sequence[Blob],
        resume: _Resume | None,
        plan: continuation.Plan | None,
        warm: Callable[[OpenChat], object] | None = None,
        turns_param: str = "messages",
    ) -> OpenChat:
        """The entry of :meth:`open_turn`. Whatever fails here undoes what was taken: the
        stream is released, a client gone while the site was asked gets the stop call sent,
        an upstream error is reported to the pool, the account is released.

        The media uploads (§7) are sent all at once and together with ``chats/new``: a turn
        with an image waits for the longer of the two, not their sum. If an upload fails, the
        chat made meanwhile stays unused (with ``chat_cleanup = "delete"`` it is tracked, and
        deleted once idle); if ``chats/new`` fails, the uploads still on their way are
        cancelled.

        The completion request is sent from an eager task (it runs at once, up to the wait for
        the answer's headers); what the turn needs next, and ``warm``, are done during that
        wait instead of after it: the first token's packet often arrives right behind the
        headers, so work done after them delays it. The task's end wakes this coroutine one
        loop iteration later, in which the loop reads that packet too: the relay's first read
        then often gets the first frames together (bench/README.md, "2026-11-29, late").

        A prompt over :data:`MAX_PROMPT_CHARS` is a 400 naming ``turns_param`` (the field of the
        turns it was made from).
        """
        if len(prompt) > MAX_PROMPT_CHARS:
            raise ClientRequestError(
                f"the conversation is {len(prompt)} characters long once flattened; chat.qwen.ai "
                f"accepts at most {MAX_PROMPT_CHARS}",
                param=turns_param,
            )
        t0 = time.perf_counter()
        if resume is not None:
            taken = await self.pool.acquire_label(resume.account.label)
            if taken is None:  # resting or at its limit now: the history goes to a new chat
                raise ContinuationFailedError(
                    UpstreamError(f"{resume.account.label} is resting or busy")
                )
            account = taken
        else:
            account = await self.pool.acquire()
        try:
            # The uploads and the chat at once: neither needs the other (the file entries go
            # in the completion's body), and each is a round trip to the site.
            uploads = _Parallel([self.upload(account, b) for b in blobs], "upload")
            try:
                if resume is not None:
                    chat_id = resume.chat_id
                    await self._touch(chat_id)
                else:
                    chat_id = await self.new_chat(account, route)
            except BaseException:
                uploads.cancel()
                raise
            files = await uploads.results() if blobs else []
            body = completion_body(
                route,
                chat_id=chat_id,
                prompt=prompt,
                now_s=int(time.time()),
                size=size,
                files=files,
                parent_id=resume.parent_id if resume is not None else None,
                chat_mode=self._chat_mode,
            )
            try:
                # Sent from an eager task (it runs at once, up to the wait for the answer's
                # headers): what the turn needs next, and `warm`, are done during that wait.
                # (The client encodes the body; it is not kept alive for the whole stream.)
                opening = asyncio.Task(
                    self.client.open_stream(account, chat_id, body),
                    loop=asyncio.get_running_loop(),
                    name="completion-open",
                    eager_start=True,
                )
                del body
                try:
                    # the turn's record, but for its stream (set below, once it is open)
                    opened = OpenChat(
                        _NOT_OPEN,
                        route,
                        account,
                        chat_id,
                        0.0,
                        policy=self.policy([f["url"] for f in files]),
                        expect_image=route.chat_type in ("t2i", "image_edit"),
                        upstream=self.client.label,
                        masker=self.masker,
                        continued=resume is not None,
                        on_answer=self._remember(plan, chat_id, account, route)
                        if plan is not None
                        else None,
                        after_commit=self._refill(account, route) if resume is None else None,
                    )
                    if warm is not None:
                        warm(opened)
                    resp, read_watch = await opening
                except BaseException:
                    _abandon(opening)
                    raise
                try:
                    opened.prelude = await _peek(resp) if resume is not None else []
                    wait = time.perf_counter() - t0
                    opened.response = resp
                    opened.read_watch = read_watch
                    opened.upstream_wait_s = wait
                    log.debug(
                        "upstream_stream_open",
                        model=route.model,
                        chat_type=route.chat_type,
                        thinking=route.thinking,
                        account=account.label,
                        files=len(files),
                        continued=resume is not None,
                        wait_ms=round(wait * 1000, 2),
                    )
                except BaseException:
                    read_watch.cancel()
                    resp.release()
                    raise
            except asyncio.CancelledError:  # gone while the site was being asked
                self.stop_later(account, chat_id, None)
                raise
            self.pool.succeeded()
            if self.metrics is not None:
                self.metrics.stream_opened()
            return opened
        except BaseException as exc:
            try:
                if isinstance(exc, UpstreamError):
                    await self.pool.report(account, exc)
                    if resume is not None and _may_fall_back(exc):
                        raise ContinuationFailedError(exc) from exc
                raise
            finally:
                await self.pool.release(account)

    async def _close_turn(self, opened: OpenChat, exc: BaseException | None) -> None:
        """The exit of :meth:`open_turn` / :meth:`open_chat`, with the block's exception
        (``None`` when it ended normally).

        A failure after the answer began (sent as an error event, not raised) is reported to
        the pool; an answer nobody finished reading gets the site's stop call (§13.1); the
        stream is released; a raised :class:`UpstreamError` is reported; the chat's idle
        deadline (``chat_cleanup = "delete"``) is moved to ``conversation_ttl_s`` from now; the
        account is released, whatever happens."""
        account = opened.account
        try:
            try:
                try:
                    if exc is None:
                        opened.committed()  # non-stream answers: the next spare now
                        translator = opened._translator
                        late = translator.failure if translator is not None else None
                        if late is not None:
                            await self.pool.report(account, late)
                finally:
                    if self.metrics is not None:
                        self.metrics.stream_closed()
                    if not opened.finished:  # the client left: free the account (§13.1)
                        self.stop_later(account, opened.chat_id, opened.response_id)
            finally:
                if opened.read_watch is not None:
                    opened.read_watch.cancel()
                resp = opened.response
                if exc is None and opened.finished and not resp.content.is_eof():
                    # in the background: the account is not held while the end comes
                    self.spawn(_drain_and_release(resp), name="drain", eager=True)
                else:
                    resp.release()
            if isinstance(exc, UpstreamError):
                await self.pool.report(account, exc)
        finally:
            try:
                if self.cleans_up:  # the chat is idle from the answer's end, not its start
                    await self._touch(opened.chat_id)
            finally:
                await self.pool.release(account)

    async def new_chat(self, account: Account, route: ModelRoute) -> str:
        """A new chat for one turn of ``route`` on ``account``: a spare one made ahead when
        ``spare_chats`` has one ready or on its way (:mod:`proxy.spares`; its idle deadline is
        moved to now), else ``chats/new`` now (:meth:`_create_chat`). The next spare is asked
        for once the turn's first byte is out (``OpenChat.after_commit``). Raises
        :class:`UpstreamError`."""
        spares = self.spares
        if spares is None or not spares.wanted(route):
            return await self._create_chat(account, route)
        chat_id = await spares.take(account, route)
        if chat_id is None:
            return await self._create_chat(account, route)
        if self.cleans_up:
            self.spawn(self._touch(chat_id), name="chat-touch", eager=True)
        return chat_id

    def _refill(self, account: Account, route: ModelRoute) -> Callable[[], None] | None:
        """What asks for the next spare chat of this kind, if it gets spares."""
        spares = self.spares
        if spares is None or not spares.wanted(route):
            return None
        return lambda: spares.want(account, route)

    async def _create_chat(self, account: Account, route: ModelRoute) -> str:
        """``chats/new`` (§3) titled with ``chat_title_prefix``; the chat is tracked for deletion
        when ``chat_cleanup`` is ``delete``. Raises :class:`UpstreamError`."""
        body = chats_new_body(
            route,
            now_ms=int(time.time() * 1000),
            title=self.settings.chat_title_prefix,
            chat_mode=self._chat_mode,
        )
        chat_id = await self.client.new_chat(account, body)
        if self.cleans_up:
            deadline = time.time() + self.settings.conversation_ttl_s
            await self.store.track_chat(chat_id, account.label, deadline)
        return chat_id

    @property
    def _chat_mode(self) -> str:
        return "local" if self.settings.chat_cleanup == "temporary" else "normal"

    @property
    def cleans_up(self) -> bool:
        """True when the chats made are tracked for deletion: ``chat_cleanup = "delete"`` and
        accounts with tokens (guest chats have no chat list to keep clean)."""
        return self.settings.chat_cleanup == "delete" and bool(self.settings.tokens)

    async def _touch(self, chat_id: str) -> None:
        if self.cleans_up:
            await self.store.touch_chat(chat_id, time.time() + self.settings.conversation_ttl_s)

    def _remember(
        self, plan: continuation.Plan, chat_id: str, account: Account, route: ModelRoute
    ) -> Callable[[Translator, str, tuple[Any, ...]], None]:
        """The callback that stores a finished answer as a conversation (ids and hashes)."""

        answers = self._answers

        def on_answer(translator: Translator, text: str, calls: tuple[Any, ...]) -> None:
            response_id = translator.response_id
            if not response_id:
                return  # nothing to hang the next turn on
            label, model = account.label, route.model
            answers.add(_Answer(plan, chat_id, label, model, response_id, text, calls))

        return on_answer

    def _store(self, answers: list[_Answer]) -> None:
        """Store finished answers as conversations (:attr:`_answers`, end of the iteration). A
        failure is logged; the answers after it are still stored."""
        for answer in answers:
            try:
                self._store_one(answer)
            except Exception:
                log.exception("conversation_store_failed", account=answer.account)

    def _store_one(self, answer: _Answer) -> None:
        plan = answer.plan
        digests = (*plan.digests, continuation.answer_digest(answer.text, answer.calls))
        entry = continuation.conversation_entry(
            chat_id=answer.chat_id,
            account=answer.account,
            parent_id=answer.response_id,
            model=answer.model,
            digests=digests,
            now=time.time(),
        )
        self.spawn(
            self._store_answer(
                continuation.conversation_key(digests, plan.scope),
                entry,
                self.settings.conversation_ttl_s,
                plan.stale_key,
            ),
            name="conversation",
            eager=True,
        )

    async def _store_answer(
        self, key: str, entry: dict[str, Any], ttl_s: float, stale_key: str | None
    ) -> None:
        """Store an answer's entry and drop the one two answers back (bounded memory)."""
        await self.store.put_conversation(key, entry, ttl_s)
        if stale_key is not None and stale_key != key:
            await self.store.delete_conversation(stale_key)

    # -- background work -------------------------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, None], name: str, *, eager: bool = False) -> None:
        """Run ``coro`` in the background; :meth:`close` waits for it. Never raises.

        ``eager``: start it now, in the caller's turn of the loop (``asyncio.Task``'s
        ``eager_start``): work that never waits (the in-process store) is done at once, without
        a task to schedule, and work that waits (a Redis write) is already on its way."""
        loop = asyncio.get_running_loop()
        if eager:
            task = asyncio.Task(coro, loop=loop, name=name, eager_start=True)
            if task.done():
                return
        else:
            task = loop.create_task(coro, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def stop_later(self, account: Account, chat_id: str, response_id: str | None) -> None:
        """Send the site's stop call for an answer nobody reads (docs/protocol.md §13.1), in the
        background so the handler that is unwinding is not delayed."""
        self.spawn(self._stop(account, chat_id, response_id), name="qwen-stop")

    async def _stop(self, account: Account, chat_id: str, response_id: str | None) -> None:
        try:
            async with asyncio.timeout(self.settings.connect_timeout_s + 5):
                await self.client.stop(account, chat_id, response_id)
        except (UpstreamError, TimeoutError) as exc:
            log.info("upstream_stop_failed", account=account.label, error=type(exc).__name__)
        else:
            log.info("upstream_stopped", account=account.label)

    async def close(self, timeout_s: float = 5.0) -> None:
        """Wait up to ``timeout_s`` seconds for background work (stop calls, spare chats), then
        cancel it; then delete the unused spare chats (``chat_cleanup = "delete"``), again
        waiting up to ``timeout_s`` seconds."""
        await self.settle(timeout_s)
        left = self.spares.drain() if self.spares is not None else []
        if left and self.cleans_up:
            for account, chat_id in left:
                self.spawn(self._drop_chat(account, chat_id), name="spare-delete")
            await self.settle(timeout_s)

    async def settle(self, timeout_s: float = 5.0) -> None:
        """Wait up to ``timeout_s`` seconds for the background work (stop calls, conversation
        entries, spare chats, and what they start in turn); cancel what is still running
        then."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        self._answers.flush()
        while pending := set(self._background):
            left = deadline - asyncio.get_running_loop().time()
            _, late = await asyncio.wait(pending, timeout=max(0.0, left))
            if late:
                for task in late:
                    task.cancel()
                await asyncio.wait(late)
                return

    async def _drop_chat(self, account: Account, chat_id: str) -> None:
        """Delete an unused chat of the gateway's and forget it; a failure is logged (the chat
        stays tracked, so the cleanup of a later run deletes it)."""
        try:
            async with asyncio.timeout(self.settings.connect_timeout_s + 5):
                await self.client.delete_chat(account, chat_id)
        except (UpstreamError, TimeoutError) as exc:
            code = exc.error_code() if isinstance(exc, UpstreamError) else "timeout"
            log.info("chat_delete_failed", account=account.label, chat_id=chat_id, error=code)
            return
        await self.store.forget_chat(chat_id)
        log.info("chat_deleted", account=account.label, chat_id=chat_id, reason="spare")

    # -- images (§6.1, §6.2) ---------------------------------------------------------------------

    async def generate_images(
        self,
        route: ModelRoute,
        prompt: str,
        *,
        n: int = 1,
        size: str | None = None,
        blobs: Sequence[Blob] = (),
    ) -> list[tuple[Media, str]]:
        """``n`` images, one upstream turn each (one image per turn, §6.1), run one after another,
        each with the label of the account whose turn made it (``account-1``, for the log).

        ``blobs`` (image edit) are uploaded in every turn and their URLs never count as the
        answer. Raises :class:`UpstreamError`: never returns an empty list or a null URL.
        """
        out: list[tuple[Media, str]] = []
        for _ in range(n):
            async with self.open_turn(route, prompt, size=size, blobs=blobs) as chat:
                events = await drain(chat.response, chat.translator())
            failure = next((e for e in events if isinstance(e, Failure)), None)
            if failure is not None:  # open_turn already reported it to the pool
                raise failure.error
            media = [e for e in events if isinstance(e, Media)]
            if not media:  # the translator fails instead; kept as a guard against null answers
                raise UpstreamNoMediaError("chat.qwen.ai ended the image request without an image")
            out.append((media[0], chat.account.label))
        return out

    async def download_image(self, media: Media) -> tuple[bytes, str]:
        """The bytes and media type of a generated image (for ``b64_json``). Raises
        :class:`UpstreamBadMediaError` (not an image, too large) or :class:`UpstreamError`."""
        return await self.client.fetch_media(
            media.url,
            limit=self.settings.max_image_bytes,
            timeout_s=self.settings.media_fetch_timeout_s,
        )

    async def download_images(self, media: Sequence[Media]) -> list[tuple[bytes, str]]:
        """:meth:`download_image` of each, all at once; in ``media``'s order. Raises the first
        failure in that order (the other downloads are then cancelled)."""
        return await _Parallel([self.download_image(m) for m in media], "image-download").results()

    # -- video (§6.3) ----------------------------------------------------------------------------

    async def start_video(self, route: ModelRoute, prompt: str, *, size: str | None) -> VideoTask:
        """Send the t2v turn (``stream: false``, JSON answer) and return its task.

        Raises :class:`UpstreamError`: an error envelope (quota: 429), a WAF page, or an answer
        without a task id (502 ``upstream_no_media``).
        """
        account = await self.pool.acquire()
        try:
            chat_id = await self.new_chat(account, route)
            body = completion_body(
                route,
                chat_id=chat_id,
                prompt=prompt,
                now_s=int(time.time()),
                size=size,
                chat_mode=self._chat_mode,
            )
            payload = await self.client.completion_json(account, chat_id, body)
            task_id = find_task_id(payload)
            if task_id is None:
                raise UpstreamNoMediaError(
                    "chat.qwen.ai accepted the video request but returned no task id"
                )
        except UpstreamError as exc:
            await self.pool.report(account, exc)
            raise
        finally:
            await self.pool.release(account)
        # (the request's line, with the account, is written once the video is ready or not)
        log.debug("video_task_started", account=account.label, model=route.model)
        return VideoTask(task_id, account, chat_id)

    async def wait_video(
        self, task: VideoTask, *, on_wait: Callable[[], Awaitable[None]] | None = None
    ) -> Media:
        """Poll ``/api/v1/tasks/status/<id>`` until the video is ready (§6.3).

        Waits ``video_poll_interval_s`` seconds, times ``video_poll_backoff`` after each poll, at
        most ``video_poll_max_interval_s``; ``on_wait`` runs before each wait (keep-alives).
        A poll that fails on the way (HTTP 5xx, a reset, a timeout, a 429) is polled again, up to
        ``_VIDEO_POLL_FAILURES`` in a row (logged ``video_poll_failed``); its error is raised
        after that, or once the deadline has passed.
        Raises :class:`UpstreamTaskFailedError` (502) for a failed task,
        :class:`UpstreamTaskTimeoutError` (504) past ``video_deadline_s`` seconds,
        :class:`UpstreamBadMediaError`/:class:`UpstreamNoMediaError` for a missing or unusable URL.
        """
        s = self.settings
        deadline = time.monotonic() + s.video_deadline_s
        interval = s.video_poll_interval_s
        polls = failed = 0
        while True:
            try:
                state = task_state(await self.client.task_status(task.account, task.task_id))
            except _POLL_AGAIN as exc:
                # a poll that failed on the way (a 5xx, a reset, a slow answer, a 429) says
                # nothing of the task, which goes on upstream with its quota spent: poll again,
                # up to _VIDEO_POLL_FAILURES times in a row, within the deadline
                failed += 1
                if failed >= _VIDEO_POLL_FAILURES or time.monotonic() >= deadline:
                    raise
                log.info("video_poll_failed", task=task.task_id, error=exc.error_code())
                state = None
            else:
                failed = 0
            polls += 1
            if state is not None and state.state == "success":
                return self._video_media(state.url)
            if state is not None and state.state == "failed":
                detail = f": {scrub(state.detail)}" if state.detail else ""
                raise UpstreamTaskFailedError(
                    f"chat.qwen.ai's video task failed (status {state.raw_status!r}){detail}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                last = state.raw_status if state is not None else None
                raise UpstreamTaskTimeoutError(
                    f"the video was not ready within {s.video_deadline_s:g} s ({polls} polls, last "
                    f"status {last or 'none'!r}); videos take 30-120 s upstream, "
                    "raise video_deadline_s if needed"
                )
            if on_wait is not None:
                await on_wait()
            await asyncio.sleep(min(interval, remaining))
            interval = min(interval * s.video_poll_backoff, s.video_poll_max_interval_s)

    def _video_media(self, url: str | None) -> Media:
        if not url:
            raise UpstreamNoMediaError("chat.qwen.ai reported the video done but gave no URL")
        policy = self.policy()
        verdict = policy.check(url)
        if verdict != "ok":
            raise UpstreamBadMediaError(f"chat.qwen.ai's video URL is unusable: {verdict}")
        return Media("video", policy.public(url), url)


class _Parallel[T]:
    """Coroutines run at once, each in an eager task (it runs at once, up to its first wait).

    :meth:`results` gives their results in order, or raises the first failure in that order
    and cancels the others; :meth:`cancel` gives them all up. Either way, no task is left
    running and no exception unretrieved. (``asyncio.gather`` leaves the others running after
    a failure; ``asyncio.TaskGroup`` raises an ``ExceptionGroup``, where the error middleware
    maps one :class:`~proxy.errors.ProxyError`.)"""

    def __init__(self, coros: Sequence[Coroutine[Any, Any, T]], name: str) -> None:
        loop = asyncio.get_running_loop() if coros else None
        self._tasks = [asyncio.Task(c, loop=loop, name=name, eager_start=True) for c in coros]

    async def results(self) -> list[T]:
        try:
            return [await task for task in self._tasks]
        except BaseException:
            self.cancel()
            raise

    def cancel(self) -> None:
        for task in self._tasks:
            if task.done():
                if not task.cancelled():
                    task.exception()  # retrieved (the caller raises its own)
            else:
                task.cancel()
                task.add_done_callback(_retrieve)


def _retrieve(task: asyncio.Task[Any]) -> None:
    """A done callback: the task's exception counts as retrieved (it was given up)."""
    if not task.cancelled():
        task.exception()


def _abandon(opening: asyncio.Task[tuple[aiohttp.ClientResponse, ReadWatch]]) -> None:
    """Give up an opening completion stream (its turn was cancelled or failed meanwhile):
    cancel the request if it is still on its way; release the stream if it opened (its result
    set, not taken yet). A failed opening's exception counts as retrieved."""
    if not opening.done():
        opening.cancel()
        return
    if opening.cancelled() or opening.exception() is not None:
        return
    resp, watch = opening.result()
    watch.cancel()
    resp.release()


def _may_fall_back(exc: UpstreamError) -> bool:
    """Whether a refused continuation is retried as a new chat: any error except a captcha
    (retrying a challenged account makes the WAF worse, §11.8) and a timeout (it would double
    the client's wait)."""
    return not isinstance(exc, (UpstreamCaptchaError, UpstreamTimeoutError))


async def _drain_and_release(resp: aiohttp.ClientResponse) -> None:
    """:func:`_drain`, then release the response (its connection goes back to the pool if the
    body's end came)."""
    try:
        await _drain(resp.content)
    finally:
        resp.release()


async def _drain(content: aiohttp.StreamReader) -> None:
    """Read the rest of a finished answer's body (at most :data:`DRAIN_LIMIT` bytes for
    :data:`DRAIN_S` seconds): the site's last frame often arrives before the end of the chunked
    body, and a response released before its end closes its connection. Drained, the
    connection goes back to the pool: one TCP and TLS handshake less for the next request.
    Run in the background, after the account is released (:meth:`ChatService._close_turn`)."""
    if content.is_eof():
        return
    left = DRAIN_LIMIT
    try:
        async with asyncio.timeout(DRAIN_S):
            while left > 0 and not content.is_eof():
                chunk = await content.readany()
                if not chunk:
                    return
                left -= len(chunk)
    except (TimeoutError, aiohttp.ClientError):
        pass  # released (and closed) by the caller


async def _peek(resp: aiohttp.ClientResponse) -> list[bytes]:
    """Read a continuation's stream until its first event; return the chunks read.

    Raises the :class:`UpstreamError` the site answered instead of text (an error frame or
    envelope, an empty or broken stream): the caller then falls back to a new chat. Reads at
    most :data:`PEEK_LIMIT` bytes.
    """
    decoder = SSEDecoder()
    translator = Translator(native_tools=True)  # a native tool call counts as an answer
    chunks: list[bytes] = []
    size = 0
    seen_event = False
    it = resp.content.iter_any().__aiter__()
    while size < PEEK_LIMIT:
        try:
            chunk = await anext(it)
        except StopAsyncIteration:
            break
        except (TimeoutError, aiohttp.ClientError) as exc:
            broken = next(e for e in _abort(translator, exc) if isinstance(e, Failure))
            raise broken.error from None
        chunks.append(chunk)
        size += len(chunk)
        out: list[OutEvent] = []
        for event in decoder.feed(chunk):
            seen_event = True
            out.extend(translator.feed(event.data))
        if out:
            if isinstance(out[0], Failure):
                raise out[0].error
            return chunks
    else:
        return chunks
    for event in decoder.close():
        seen_event = True
        translator.feed(event.data)
    body = b"".join(chunks)
    if not seen_event and body.strip():
        raise classify_response(200, resp.headers.get("Content-Type", "").lower(), body)
    events = translator.close()
    failure = next((e for e in events if isinstance(e, Failure)), None)
    if failure is not None:
        raise failure.error
    return chunks


def _abort(translator: Translator, exc: BaseException) -> list[OutEvent]:
    """``translator``'s closing events for a stream whose read failed with ``exc``: a silence
    past ``read_timeout_s`` (:class:`proxy.qwen.client.ReadWatch`) is a timeout, anything
    else a broken connection."""
    if isinstance(exc, TimeoutError):
        return translator.abort("no data within the read timeout", timed_out=True)
    return translator.abort(network_failure(exc))


async def drain(response: aiohttp.ClientResponse, translator: Translator) -> list[OutEvent]:
    """Read a whole upstream stream through ``translator``; returns every event, the closing one
    included. A broken connection becomes the translator's truncation failure, a silence past
    the read timeout its timeout failure (:func:`_abort`)."""
    decoder = SSEDecoder()
    events: list[OutEvent] = []
    it = response.content.iter_any().__aiter__()
    while not translator.done:
        try:
            chunk = await anext(it)
        except StopAsyncIteration:
            for event in decoder.close():
                events.extend(translator.feed(event.data))
            events.extend(translator.close())
            break
        except (TimeoutError, aiohttp.ClientError) as exc:
            events.extend(_abort(translator, exc))
            break
        for event in decoder.feed(chunk):
            events.extend(translator.feed(event.data))
            if translator.done:
                break
    return events
