"""Spare chats (``spare_chats``, :mod:`proxy.spares`): the next chat is made ahead.

Unit tests drive :class:`SpareChats` with a fake ``create`` and a manual clock; the integration
tests run the gateway against the independent fake site (``tests/fake_site.py``) and look at
which chat each completion went to and when it was created.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import structlog
from fake_site import FakeQwen
from test_integration_fake import chat, make_rig, user

from proxy.app import make_app
from proxy.config import Settings
from proxy.errors import UpstreamRateLimitedError
from proxy.spares import SPARE_CHAT_TYPES, SpareChats
from proxy.state import SERVICE

ROOT = Path(__file__).resolve().parents[1]


def _route(model: str = "qwen3-max", chat_type: str = "t2t") -> Any:
    return SimpleNamespace(model=model, chat_type=chat_type)


def _account(label: str) -> Any:
    return SimpleNamespace(label=label)


class _Rig:
    """A SpareChats whose ``create`` hands out ``chat-1``, ``chat-2``… (or raises ``fail``)
    and whose background tasks are kept to be awaited."""

    def __init__(self, **kw: Any) -> None:
        self.now = 100.0
        self.made: list[tuple[str, str]] = []  # (account label, chat id)
        self.fail: Exception | None = None
        self.gate = asyncio.Event()  # creations finish once it is set
        self.gate.set()
        self.tasks: list[asyncio.Task[None]] = []
        kw.setdefault("depth", 1)
        self.spares = SpareChats(self.create, self.spawn, clock=lambda: self.now, **kw)

    async def create(self, account: Any, route: Any) -> str:
        await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        chat_id = f"chat-{len(self.made) + 1}"
        self.made.append((account.label, chat_id))
        return chat_id

    def spawn(self, coro: Any, name: str) -> None:
        assert name == "spare-chat"
        self.tasks.append(asyncio.get_running_loop().create_task(coro))

    async def settle(self) -> None:
        while self.tasks:  # a finished fill may start the next one (depth > 1)
            tasks, self.tasks = self.tasks, []
            await asyncio.gather(*tasks)


async def test_a_spare_asked_for_is_handed_out_once() -> None:
    rig = _Rig(max_age_s=60)
    alpha = _account("alpha")
    assert await rig.spares.take(alpha, _route()) is None  # none yet: the caller makes one
    assert rig.tasks == []  # taking asks for nothing (the relay asks after the first byte)
    rig.spares.want(alpha, _route())
    await rig.settle()
    assert rig.made == [("alpha", "chat-1")]
    assert await rig.spares.take(alpha, _route()) == "chat-1"
    assert await rig.spares.take(alpha, _route()) is None  # handed out once
    rig.spares.want(alpha, _route())
    await rig.settle()
    assert await rig.spares.take(alpha, _route()) == "chat-2"


async def test_spares_are_kept_apart_by_account_model_and_chat_type() -> None:
    rig = _Rig(max_age_s=60)
    alpha, beta = _account("alpha"), _account("beta")
    rig.spares.want(alpha, _route())
    await rig.settle()
    assert await rig.spares.take(beta, _route()) is None
    assert await rig.spares.take(alpha, _route(model="qwen-plus")) is None
    assert await rig.spares.take(alpha, _route(chat_type="search")) is None
    assert await rig.spares.take(alpha, _route()) == "chat-1"
    rig.spares.want(alpha, _route())
    await rig.settle()
    again = _account("alpha")  # the account configured anew under the same label
    assert await rig.spares.take(again, _route()) is None  # the old object's spare stays out


async def test_only_one_spare_per_kind_is_made_at_a_time() -> None:
    rig = _Rig(max_age_s=60)
    alpha = _account("alpha")
    for _ in range(5):
        rig.spares.want(alpha, _route())
    assert len(rig.tasks) == 1
    await rig.settle()
    rig.spares.want(alpha, _route())  # one is ready: nothing more
    assert rig.tasks == []
    assert len(rig.made) == 1


async def test_two_spares_are_kept_and_made_one_at_a_time() -> None:
    """With the default depth of two, back-to-back requests each find one ready."""
    rig = _Rig(max_age_s=60, depth=2)
    alpha = _account("alpha")
    rig.spares.want(alpha, _route())
    assert len(rig.tasks) == 1  # one at a time
    await rig.settle()
    assert rig.made == [("alpha", "chat-1"), ("alpha", "chat-2")]
    assert await rig.spares.take(alpha, _route()) == "chat-1"  # the oldest first
    rig.spares.want(alpha, _route())
    assert await rig.spares.take(alpha, _route()) == "chat-2"  # ready while chat-3 is made
    await rig.settle()
    assert [c for _, c in rig.made] == ["chat-1", "chat-2", "chat-3", "chat-4"]
    rig.spares.want(alpha, _route())  # two ready: nothing more
    assert rig.tasks == []


async def test_a_request_waits_for_the_spare_on_its_way() -> None:
    """A request that finds the spare still being made gets that one (sooner than making its
    own); a second request at the same time makes its own."""
    rig = _Rig(max_age_s=60)
    alpha = _account("alpha")
    rig.gate.clear()  # the spare is on its way
    rig.spares.want(alpha, _route())
    first = asyncio.ensure_future(rig.spares.take(alpha, _route()))
    await asyncio.sleep(0)  # let it start waiting (one loop turn, not a delay)
    assert not first.done()
    assert await rig.spares.take(alpha, _route()) is None  # claimed by the first
    rig.gate.set()
    await rig.settle()
    assert await first == "chat-1"
    assert await rig.spares.take(alpha, _route()) is None  # handed to the waiter, not kept


async def test_a_waiter_that_leaves_leaves_the_chat_as_a_spare() -> None:
    rig = _Rig(max_age_s=60)
    alpha = _account("alpha")
    rig.gate.clear()
    rig.spares.want(alpha, _route())
    waiter = asyncio.ensure_future(rig.spares.take(alpha, _route()))
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    rig.gate.set()
    await rig.settle()
    assert await rig.spares.take(alpha, _route()) == "chat-1"


async def test_a_failed_spare_on_its_way_gives_its_waiter_none() -> None:
    rig = _Rig(max_age_s=60)
    alpha = _account("alpha")
    rig.fail = UpstreamRateLimitedError("too many chats")
    rig.gate.clear()
    rig.spares.want(alpha, _route())
    waiter = asyncio.ensure_future(rig.spares.take(alpha, _route()))
    await asyncio.sleep(0)
    assert not waiter.done()
    rig.gate.set()
    await rig.settle()
    assert await waiter is None  # the caller makes its own (and meets the error itself)


async def test_an_old_spare_is_not_used() -> None:
    rig = _Rig(max_age_s=60)
    alpha = _account("alpha")
    rig.spares.want(alpha, _route())
    await rig.settle()
    rig.now += 60
    assert await rig.spares.take(alpha, _route()) is None  # too old: dropped
    rig.spares.want(alpha, _route())
    await rig.settle()
    rig.now += 59
    assert await rig.spares.take(alpha, _route()) == "chat-2"


async def test_a_failed_creation_pauses_spares_of_that_kind() -> None:
    rig = _Rig(max_age_s=60, retry_s=30)
    alpha = _account("alpha")
    rig.fail = UpstreamRateLimitedError("too many chats")
    rig.spares.want(alpha, _route())
    await rig.settle()  # the error is logged, not raised
    rig.fail = None
    rig.spares.want(alpha, _route())
    assert rig.tasks == []  # within retry_s: not asked again
    rig.now += 29.9
    rig.spares.want(alpha, _route())
    assert rig.tasks == []
    rig.now += 0.1
    rig.spares.want(alpha, _route())
    await rig.settle()
    assert await rig.spares.take(alpha, _route()) == "chat-1"
    rig.spares.want(alpha, _route(model="qwen-plus"))  # another kind was never paused
    assert len(rig.tasks) == 1


async def test_a_failed_spare_is_logged_and_retried_after_30_s_by_default() -> None:
    rig = _Rig(max_age_s=60)  # retry_s left at its default
    alpha = _account("alpha")
    rig.fail = UpstreamRateLimitedError("too many chats")
    with structlog.testing.capture_logs() as logs:
        rig.spares.want(alpha, _route())
        await rig.settle()
    assert logs == [
        {
            "event": "spare_chat_failed",
            "account": "alpha",
            "error": "rate_limit_exceeded",
            "log_level": "info",
        }
    ]
    rig.fail = None
    rig.now += 29.9
    rig.spares.want(alpha, _route())
    assert rig.tasks == []
    rig.now += 0.1
    rig.spares.want(alpha, _route())
    assert len(rig.tasks) == 1


async def test_drain_hands_back_the_unused_spares() -> None:
    rig = _Rig(max_age_s=60)
    alpha, beta = _account("alpha"), _account("beta")
    rig.spares.want(alpha, _route())
    rig.spares.want(beta, _route())
    await rig.settle()
    left = rig.spares.drain()
    assert sorted((a.label, c) for a, c in left) == [("alpha", "chat-1"), ("beta", "chat-2")]
    assert rig.spares.drain() == []
    assert await rig.spares.take(alpha, _route()) is None


def test_only_text_turns_get_spares() -> None:
    assert SPARE_CHAT_TYPES == {"t2t", "search"}
    for chat_type in ("t2t", "search"):
        assert SpareChats.wanted(_route(chat_type=chat_type))
    for chat_type in ("t2i", "image_edit", "t2v"):
        assert not SpareChats.wanted(_route(chat_type=chat_type))


# -- the gateway against the fake site --------------------------------------------------------


async def test_the_second_request_streams_in_a_chat_made_before_it(aiohttp_server: Any) -> None:
    fake = FakeQwen(["tok-alpha"])
    rig = await make_rig(aiohttp_server, fake, spare_chats=True, conversations="flatten")
    service = rig.gateway.app[SERVICE]
    first = await chat(rig, True, messages=user("hello one"))
    assert first["content"].startswith("Echo")
    await service.settle()
    made_before = set(fake.chats)
    assert len(made_before) == 3  # the first request's chat and two spares
    second = await chat(rig, True, messages=user("hello two"))
    assert second["content"].startswith("Echo") and "two" in second["content"]
    used = [b["chat_id"] for b in fake.completions()]
    assert used[1] in made_before and used[1] != used[0]
    await service.settle()
    assert len(fake.chats) == 4  # the spare taken is made again
    assert fake.violations == []


async def test_unused_spares_are_deleted_at_shutdown(aiohttp_server: Any) -> None:
    fake = FakeQwen(["tok-alpha"])
    rig = await make_rig(aiohttp_server, fake, spare_chats=True, conversations="flatten")
    await chat(rig, False, messages=user("hello"))
    await rig.settle()  # ChatService.close: background work, then the spares
    (used,) = {b["chat_id"] for b in fake.completions()}
    deleted = {c.id for c in fake.chats.values() if c.deleted}
    assert len(fake.chats) == 3 and deleted == set(fake.chats) - {used}


async def test_keep_mode_leaves_the_spare(aiohttp_server: Any) -> None:
    fake = FakeQwen(["tok-alpha"])
    rig = await make_rig(aiohttp_server, fake, spare_chats=True, chat_cleanup="keep")
    await chat(rig, False, messages=user("hello"))
    await rig.settle()
    assert len(fake.chats) == 3 and not any(c.deleted for c in fake.chats.values())


async def test_a_continued_conversation_does_not_take_a_spare(aiohttp_server: Any) -> None:
    fake = FakeQwen(["tok-alpha"])
    rig = await make_rig(aiohttp_server, fake, spare_chats=True)
    service = rig.gateway.app[SERVICE]
    first = await chat(rig, True, messages=user("remember 7"))
    await service.settle()
    history = [
        *user("remember 7"),
        {"role": "assistant", "content": first["content"]},
        *user("what was it?"),
    ]
    await chat(rig, True, messages=history)
    chats = [b["chat_id"] for b in fake.completions()]
    assert chats[0] == chats[1]  # native multi-turn: the same chat
    await service.settle()
    assert len(fake.chats) == 3  # that chat and the two spares, still unused
    assert fake.violations == []


async def test_spares_are_off_by_default_and_in_replay_mode(aiohttp_client: Any) -> None:
    assert Settings().spare_chats is False
    app = make_app(Settings(replay=[ROOT / "cassettes"], spare_chats=True))
    await aiohttp_client(app)
    assert app[SERVICE].spares is None
    assert app[SERVICE].settings.spare_chats is False


@pytest.mark.parametrize("stream", [False, True])
async def test_a_spare_chat_gets_the_whole_answer(aiohttp_server: Any, stream: bool) -> None:
    fake = FakeQwen(["tok-alpha"])
    rig = await make_rig(aiohttp_server, fake, spare_chats=True, conversations="flatten")
    service = rig.gateway.app[SERVICE]
    await chat(rig, stream, messages=user("warm up"))
    await service.settle()
    out = await chat(rig, stream, messages=user("say something long " * 20))
    plain = await chat(rig, stream, messages=user("say something long " * 20))
    assert out["content"] == plain["content"] and out["finish"] == "stop"
