"""The chat service: model catalog cache, account choice and the v2 flow, per app.

One :class:`ChatService` lives in the app state (created in ``cleanup_ctx``). Handlers ask it to
:meth:`~ChatService.open_chat` and get back an :class:`OpenChat`: the upstream response positioned
at the first SSE byte, plus the timing the proxy spent waiting on chat.qwen.ai.

Media (PROTOCOL.md §6, §7): media parts of the messages are fetched or decoded
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
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any

import aiohttp
import structlog

from proxy.accounts import Account, AccountPool
from proxy.config import Settings
from proxy.conversation import Conversation
from proxy.errors import (
    ClientRequestError,
    UpstreamBadMediaError,
    UpstreamError,
    UpstreamNoMediaError,
    UpstreamTaskFailedError,
    UpstreamTaskTimeoutError,
    scrub,
)
from proxy.fetch import ingest
from proxy.qwen.client import QwenClient, network_failure
from proxy.qwen.files import Blob, file_entry, filetype_of, oss_put_request
from proxy.qwen.media import MediaPolicy, aspect_ratio, find_task_id, task_state
from proxy.qwen.models import Catalog, parse_models
from proxy.qwen.request import (
    MAX_PROMPT_CHARS,
    ModelRoute,
    chats_new_body,
    completion_body,
    flatten_messages,
    media_parts,
)
from proxy.qwen.sse import SSEDecoder
from proxy.qwen.translate import Failure, Media, OutEvent, Translator

__all__ = ["ChatService", "OpenChat", "VideoTask"]

#: OpenAI model names that mean "the default image/video model" on the media endpoints.
OPENAI_MEDIA_MODELS = ("dall-e", "gpt-image", "sora")

log = structlog.get_logger("proxy.service")


@dataclass(slots=True)
class OpenChat:
    """A completion stream that chat.qwen.ai accepted.

    ``upstream_wait_s`` is the time (seconds) spent waiting on chat.qwen.ai for the chat id and
    the stream's headers (and the uploads). ``policy`` says which image URLs are answers;
    ``expect_image`` is true for t2i and image edit (the answer must be an image).
    """

    response: aiohttp.ClientResponse
    route: ModelRoute
    account: Account
    chat_id: str
    upstream_wait_s: float
    policy: MediaPolicy = field(default_factory=MediaPolicy)
    expect_image: bool = False
    upstream: str = "chat.qwen.ai"  # how messages name the upstream (QwenClient.label)

    def translator(self, reasoning: Any = "field") -> Translator:
        """A :class:`Translator` set up for this turn (reasoning mode, media policy)."""
        return Translator(reasoning=reasoning, media=self.policy, expect_image=self.expect_image)


@dataclass(frozen=True, slots=True)
class VideoTask:
    """A t2v task chat.qwen.ai accepted: its ``task_id``, the ``account`` that owns it."""

    task_id: str
    account: Account
    chat_id: str


class ChatService:
    """Holds the per-app upstream state: accounts, the cached catalog and the client."""

    def __init__(self, session: aiohttp.ClientSession, settings: Settings) -> None:
        self.settings = settings
        self.session = session
        self.client = QwenClient(session, settings)
        self.pool = AccountPool(settings.tokens, cooldown_s=settings.account_cooldown_s)
        self._catalog: Catalog | None = None
        self._catalog_at = 0.0
        self._catalog_lock = asyncio.Lock()

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
            account = self.pool.acquire()
            try:
                payload = await self.client.fetch_models(account)
            except UpstreamError as exc:
                self.pool.report(account, exc)
                if self._catalog is not None:
                    log.warning("models_refresh_failed", error=exc.message, account=account.label)
                    return self._catalog  # serve the stale list rather than fail
                raise
            self._catalog = Catalog(parse_models(payload))
            self._catalog_at = time.monotonic()
            log.debug("models_loaded", count=len(self._catalog.models))
            return self._catalog

    def policy(self, exclude: Sequence[str] = ()) -> MediaPolicy:
        """The media-URL policy of this app (CDN allow-list, offline rewrite), ``exclude``-ing the
        given source URLs."""
        return MediaPolicy(
            allowed_hosts=tuple(self.settings.media_hosts),
            exclude=frozenset(exclude),
            rewrite_to=self.settings.media_base_url,
        )

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

    async def ingest_parts(self, conv: Conversation) -> list[Blob]:
        """Fetch or decode the conversation's media parts (before any account is used). Raises
        the :mod:`proxy.fetch` errors and :class:`ClientRequestError` for too many parts."""
        parts = media_parts(conv.turns)
        if len(parts) > self.settings.max_files_per_request:
            raise ClientRequestError(
                f"the messages hold {len(parts)} media parts; at most "
                f"{self.settings.max_files_per_request} are uploaded per request",
                param="messages",
            )
        return [await ingest(self.session, p, self.settings) for p in parts]

    @asynccontextmanager
    async def open_chat(
        self, conv: Conversation, *, route: ModelRoute | None = None
    ) -> AsyncIterator[OpenChat]:
        """Resolve the model, upload the media parts, create the chat and open the stream
        (PROTOCOL.md §3, §4, §7).

        Raises :class:`~proxy.errors.ClientRequestError` for bad input and
        :class:`~proxy.errors.UpstreamError` when chat.qwen.ai refuses; the account that drew a
        quota, captcha or token error is rested (:class:`AccountPool`). ``conv.size`` (a Qwen
        extension of the chat request) is the aspect ratio of ``-image`` answers.
        """
        blobs = await self.ingest_parts(conv)
        prompt = flatten_messages(conv.turns, allow_empty=bool(blobs))
        if route is None:
            route = await self.route_for(conv)
        if route.chat_type == "image_edit" and not any(b.kind == "image" for b in blobs):
            raise ClientRequestError(
                "an -image-edit model needs the image to edit as an image_url part",
                param="messages",
            )
        size = aspect_ratio(conv.size) if route.chat_type in ("t2i", "image_edit") else None
        async with self.open_turn(route, prompt, size=size, blobs=blobs) as chat:
            yield chat

    @asynccontextmanager
    async def open_turn(
        self,
        route: ModelRoute,
        prompt: str,
        *,
        size: str | None = None,
        blobs: Sequence[Blob] = (),
    ) -> AsyncIterator[OpenChat]:
        """One streamed turn: account, uploads, ``chats/new``, completion (§3, §4, §7).

        Raises :class:`~proxy.errors.UpstreamError` (the account is reported to the pool).
        """
        if len(prompt) > MAX_PROMPT_CHARS:
            raise ClientRequestError(
                f"the conversation is {len(prompt)} characters long once flattened; chat.qwen.ai "
                f"accepts at most {MAX_PROMPT_CHARS}",
                param="messages",
            )
        t0 = time.perf_counter()
        account = self.pool.acquire()
        try:
            files = [await self.upload(account, b) for b in blobs]
            chat_id = await self.client.new_chat(
                account, chats_new_body(route, now_ms=int(time.time() * 1000))
            )
            body = completion_body(
                route,
                chat_id=chat_id,
                prompt=prompt,
                now_s=int(time.time()),
                size=size,
                files=files,
            )
            async with self.client.completion(account, chat_id, body) as resp:
                wait = time.perf_counter() - t0
                log.debug(
                    "upstream_stream_open",
                    model=route.model,
                    chat_type=route.chat_type,
                    thinking=route.thinking,
                    account=account.label,
                    files=len(files),
                    wait_ms=round(wait * 1000, 2),
                )
                yield OpenChat(
                    resp,
                    route,
                    account,
                    chat_id,
                    wait,
                    policy=self.policy([f["url"] for f in files]),
                    expect_image=route.chat_type in ("t2i", "image_edit"),
                    upstream=self.client.label,
                )
        except UpstreamError as exc:
            self.pool.report(account, exc)
            raise

    # -- images (§6.1, §6.2) ---------------------------------------------------------------------

    async def generate_images(
        self,
        route: ModelRoute,
        prompt: str,
        *,
        n: int = 1,
        size: str | None = None,
        blobs: Sequence[Blob] = (),
    ) -> list[Media]:
        """``n`` images, one upstream turn each (one image per turn, §6.1), run one after another.

        ``blobs`` (image edit) are uploaded in every turn and their URLs never count as the
        answer. Raises :class:`UpstreamError`: never returns an empty list or a null URL.
        """
        out: list[Media] = []
        for _ in range(n):
            async with self.open_turn(route, prompt, size=size, blobs=blobs) as chat:
                events = await drain(chat.response, chat.translator())
            failure = next((e for e in events if isinstance(e, Failure)), None)
            if failure is not None:
                self.pool.report(chat.account, failure.error)
                raise failure.error
            media = [e for e in events if isinstance(e, Media)]
            if not media:  # the translator fails instead; kept as a guard against null answers
                raise UpstreamNoMediaError("chat.qwen.ai ended the image request without an image")
            out.append(media[0])
        return out

    async def download_image(self, media: Media) -> tuple[bytes, str]:
        """The bytes and media type of a generated image (for ``b64_json``). Raises
        :class:`UpstreamBadMediaError` (not an image, too large) or :class:`UpstreamError`."""
        return await self.client.fetch_media(
            media.url,
            limit=self.settings.max_image_bytes,
            timeout_s=self.settings.media_fetch_timeout_s,
        )

    # -- video (§6.3) ----------------------------------------------------------------------------

    async def start_video(self, route: ModelRoute, prompt: str, *, size: str | None) -> VideoTask:
        """Send the t2v turn (``stream: false``, JSON answer) and return its task.

        Raises :class:`UpstreamError`: an error envelope (quota: 429), a WAF page, or an answer
        without a task id (502 ``upstream_no_media``).
        """
        account = self.pool.acquire()
        try:
            chat_id = await self.client.new_chat(
                account, chats_new_body(route, now_ms=int(time.time() * 1000))
            )
            body = completion_body(
                route, chat_id=chat_id, prompt=prompt, now_s=int(time.time()), size=size
            )
            payload = await self.client.completion_json(account, chat_id, body)
            task_id = find_task_id(payload)
            if task_id is None:
                raise UpstreamNoMediaError(
                    "chat.qwen.ai accepted the video request but returned no task id"
                )
        except UpstreamError as exc:
            self.pool.report(account, exc)
            raise
        log.info("video_task_started", account=account.label, model=route.model)
        return VideoTask(task_id, account, chat_id)

    async def wait_video(
        self, task: VideoTask, *, on_wait: Callable[[], Awaitable[None]] | None = None
    ) -> Media:
        """Poll ``/api/v1/tasks/status/<id>`` until the video is ready (§6.3).

        Waits ``video_poll_interval_s`` seconds, times ``video_poll_backoff`` after each poll, at
        most ``video_poll_max_interval_s``; ``on_wait`` runs before each wait (keep-alives).
        Raises :class:`UpstreamTaskFailedError` (502) for a failed task,
        :class:`UpstreamTaskTimeoutError` (504) past ``video_deadline_s`` seconds,
        :class:`UpstreamBadMediaError`/:class:`UpstreamNoMediaError` for a missing or unusable URL.
        """
        s = self.settings
        deadline = time.monotonic() + s.video_deadline_s
        interval = s.video_poll_interval_s
        polls = 0
        while True:
            state = task_state(await self.client.task_status(task.account, task.task_id))
            polls += 1
            if state.state == "success":
                return self._video_media(state.url)
            if state.state == "failed":
                detail = f": {scrub(state.detail)}" if state.detail else ""
                raise UpstreamTaskFailedError(
                    f"chat.qwen.ai's video task failed (status {state.raw_status!r}){detail}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise UpstreamTaskTimeoutError(
                    f"the video was not ready within {s.video_deadline_s:g} s ({polls} polls, last "
                    f"status {state.raw_status or 'none'!r}); videos take 30-120 s upstream, "
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


async def drain(response: aiohttp.ClientResponse, translator: Translator) -> list[OutEvent]:
    """Read a whole upstream stream through ``translator``; returns every event, the closing one
    included. A broken connection becomes the translator's truncation failure."""
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
            events.extend(translator.abort(network_failure(exc)))
            break
        for event in decoder.feed(chunk):
            events.extend(translator.feed(event.data))
            if translator.done:
                break
    return events
