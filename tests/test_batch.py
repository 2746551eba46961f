"""IterationBatch: items handled together at the end of the event loop's iteration, in order;
at once without a running loop. The service's conversation entries go through one."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
import structlog

from proxy import continuation
from proxy.batch import IterationBatch
from proxy.config import Settings
from proxy.service import ChatService
from proxy.store import MemoryStore


async def _next_iteration() -> None:
    """Return once the loop has run the callbacks scheduled before this call."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    loop.call_soon(done.set_result, None)
    await done


def test_without_a_running_loop_an_item_is_handled_at_once() -> None:
    seen: list[list[int]] = []
    batch = IterationBatch(seen.append)
    batch.add(1)
    assert seen == [[1]] and len(batch) == 0


def _count_passes(monkeypatch: pytest.MonkeyPatch, batch: IterationBatch[int]) -> list[int]:
    """The number of items each scheduled pass of ``batch`` found (``loop.call_soon`` spied)."""
    loop = asyncio.get_running_loop()
    passes: list[int] = []
    real = loop.call_soon

    def call_soon(callback, *args, **kw):  # type: ignore[no-untyped-def]
        if callback == batch.flush:

            def counted() -> None:
                passes.append(len(batch))
                batch.flush()

            return real(counted, *args, **kw)
        return real(callback, *args, **kw)

    monkeypatch.setattr(loop, "call_soon", call_soon)
    return passes


async def test_items_of_one_iteration_are_handled_at_its_end_in_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[list[int]] = []
    batch = IterationBatch(seen.append)
    passes = _count_passes(monkeypatch, batch)
    for i in range(3):
        batch.add(i)
    assert seen == [] and len(batch) == 3  # not yet
    await _next_iteration()
    assert seen == [[0, 1, 2]]  # one call for the iteration's three items
    assert passes == [3]
    batch.add(3)
    await _next_iteration()
    assert seen == [[0, 1, 2], [3]] and passes == [3, 1]


async def test_flush_handles_what_waits_now_and_the_scheduled_pass_finds_nothing() -> None:
    seen: list[list[str]] = []
    batch = IterationBatch(seen.append)
    batch.add("a")
    batch.flush()
    assert seen == [["a"]]
    await _next_iteration()
    assert seen == [["a"]]


async def test_an_item_added_while_the_batch_runs_gets_a_pass_of_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[int] = []

    def handle(items: list[int]) -> None:
        seen.extend(items)
        if 0 in items:
            batch.add(100)  # scheduled anew, not lost

    batch = IterationBatch(handle)
    passes = _count_passes(monkeypatch, batch)
    batch.add(0)
    batch.add(1)
    await _next_iteration()
    await _next_iteration()
    assert seen == [0, 1, 100]
    assert passes == [2, 1]


async def test_a_finished_answer_is_stored_at_the_end_of_its_iteration_and_settle_waits() -> None:
    """The service's conversation entries go through an IterationBatch: stored at the end of
    the iteration the answer finished in, and ``settle()`` (shutdown) stores what waits."""

    class SlowStore(MemoryStore):
        async def put_conversation(self, key: str, entry: dict[str, Any], ttl_s: float) -> None:
            await _next_iteration()  # a store that waits (Redis)
            await super().put_conversation(key, entry, ttl_s)

    store = SlowStore()
    async with aiohttp.ClientSession() as session:
        service = ChatService(session, Settings(upstream_url="http://127.0.0.1:9"), store)
        plan = continuation.plan([SimpleNamespace(role="user", content="hi")])
        on_answer = service._remember(
            plan, "chat-1", SimpleNamespace(label="acct"), SimpleNamespace(model="qwen-x")
        )
        on_answer(SimpleNamespace(response_id="resp-1"), "Hello there", ())
        key = continuation.conversation_key(
            (*plan.digests, continuation.answer_digest("Hello there")), plan.scope
        )
        assert await store.get_conversation(key) is None  # not during the iteration
        await service.settle()
        entry = await store.get_conversation(key)
        assert entry is not None
        assert (entry["chat_id"], entry["account"], entry["parent_id"], entry["model"]) == (
            "chat-1",
            "acct",
            "resp-1",
            "qwen-x",
        )
        on_answer(SimpleNamespace(response_id=None), "no id", ())  # nothing to continue from
        await service.settle()
        assert len(store._conversations) == 1


class _BrokenCall:
    name = "lookup"

    @property
    def arguments(self) -> str:
        raise RuntimeError("unreadable arguments")


async def test_a_conversation_entry_that_fails_is_logged_and_the_others_are_stored() -> None:
    store = MemoryStore()
    async with aiohttp.ClientSession() as session:
        service = ChatService(session, Settings(upstream_url="http://127.0.0.1:9"), store)
        plan = continuation.plan([SimpleNamespace(role="user", content="hi")])
        route = SimpleNamespace(model="qwen-x")
        on_answer = service._remember(plan, "chat-1", SimpleNamespace(label="a"), route)
        with structlog.testing.capture_logs() as logs:
            on_answer(SimpleNamespace(response_id="r1"), "first", ())
            on_answer(SimpleNamespace(response_id="r2"), "second", (_BrokenCall(),))
            on_answer(SimpleNamespace(response_id="r3"), "third", ())
            await service.settle()
        assert [e["event"] for e in logs] == ["conversation_store_failed"]
        stored = sorted(entry["parent_id"] for _, entry in store._conversations.values())
        assert stored == ["r1", "r3"]


def test_items_left_by_a_loop_that_stopped_are_handled_by_the_next_add() -> None:
    """A loop that stops before its pass runs leaves the items waiting: the next add (in
    another loop, or without one) schedules or runs them, nothing is stuck."""
    seen: list[list[int]] = []
    batch = IterationBatch(seen.append)

    async def add_then_stop(item: int) -> None:
        batch.add(item)
        asyncio.get_running_loop().stop()  # the pass scheduled now never runs in this loop

    for later in ("another loop", "no loop"):
        seen.clear()
        old = asyncio.new_event_loop()
        task = old.create_task(add_then_stop(1))
        old.run_forever()
        assert task.done()
        old.close()
        assert seen == [] and len(batch) == 1  # left waiting
        if later == "no loop":
            batch.add(2)
            assert seen == [[1], [2]]
        else:

            async def add_in_a_new_loop() -> None:
                batch.add(2)
                await _next_iteration()

            asyncio.run(add_in_a_new_loop())
            assert seen == [[1, 2]]
