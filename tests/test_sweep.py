"""The sweeper: one timer for the watches of every request in flight (client hang-ups, upstream
silences, the deadline until an answer's headers, the request body's deadline)."""

from __future__ import annotations

import asyncio
from itertools import pairwise
from types import SimpleNamespace
from typing import Any

import pytest
import structlog
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from helpers import stream_reader

from proxy.guard import with_body_deadline
from proxy.hangup import HangupWatch
from proxy.sweep import MAX_INTERVAL_S, Deadline, Sweeper, sweep_interval

WAIT = 5.0  # seconds: a broken sweeper fails the test instead of hanging it


class Probe:
    """A watch that counts its checks and lets go after ``n`` of them."""

    def __init__(self, n: int) -> None:
        self.times: list[float] = []
        self.n = n
        self.done = asyncio.get_running_loop().create_future()

    def check(self, now: float) -> bool:
        self.times.append(now)
        if len(self.times) < self.n:
            return True
        self.done.set_result(None)
        return False


def test_the_interval_is_a_quarter_of_a_short_timeout_and_at_most_a_quarter_second() -> None:
    assert sweep_interval(60) == MAX_INTERVAL_S == 0.25
    assert sweep_interval(0.2) == pytest.approx(0.05)
    with pytest.raises(ValueError):
        Sweeper(0)


async def test_watches_are_checked_every_tick_until_they_let_go() -> None:
    sweeper = Sweeper(0.01)
    a, b = Probe(2), Probe(4)
    sweeper.add(a)
    sweeper.add(b)
    async with asyncio.timeout(WAIT):
        await a.done
        await b.done
    assert len(a.times) == 2 and len(b.times) == 4
    assert a.times == b.times[:2]  # one tick checks every watch
    assert all(later - earlier >= 0.009 for earlier, later in pairwise(b.times))
    assert len(sweeper) == 0
    c = Probe(1)
    sweeper.add(c)  # the timer starts again
    async with asyncio.timeout(WAIT):
        await c.done


async def test_the_timer_lingers_a_few_idle_ticks_then_stops() -> None:
    """Requests one after the other do not start a timer each: after the last watch went the
    timer ticks ``linger`` more times, then stops (an idle gateway has no timer)."""
    sweeper = Sweeper(60, linger=3)  # ticks driven by hand below
    probe = Probe(10)
    sweeper.add(probe)

    def tick() -> None:
        assert sweeper._handle is not None
        sweeper._handle.cancel()
        sweeper._tick()

    tick()
    assert len(probe.times) == 1 and sweeper._handle is not None
    sweeper.discard(probe)
    for _ in range(3):
        tick()
        assert sweeper._handle is not None  # lingering
    tick()
    assert sweeper._handle is None  # stopped
    sweeper.add(probe)
    assert sweeper._handle is not None  # started again
    tick()
    sweeper.discard(probe)
    for _ in range(3):
        tick()  # the count of idle ticks starts over after a busy one
    assert sweeper._handle is not None
    sweeper.close()
    assert sweeper._handle is None and len(probe.times) == 2


async def test_a_fresh_sweeper_lingers_eight_idle_ticks_by_default() -> None:
    sweeper = Sweeper(60)  # ticks driven by hand
    probe = Probe(1)
    sweeper.add(probe)
    sweeper.discard(probe)  # gone before the first tick
    ticks = 0
    while sweeper._handle is not None:
        sweeper._handle.cancel()
        sweeper._tick()
        ticks += 1
    assert ticks == 9  # eight that linger, and the one that stops
    assert probe.times == []


async def test_a_discarded_watch_is_not_checked_and_a_failing_one_is_dropped() -> None:
    sweeper = Sweeper(0.01)
    gone = Probe(10)
    sweeper.add(gone)
    sweeper.discard(gone)
    sweeper.discard(gone)  # twice is fine

    class Broken:
        calls = 0

        def check(self, now: float) -> bool:
            Broken.calls += 1
            raise RuntimeError("broken watch")

    sweeper.add(Broken())
    other = Probe(3)
    sweeper.add(other)
    with structlog.testing.capture_logs() as logs:
        async with asyncio.timeout(WAIT):
            await other.done
    assert gone.times == []
    assert Broken.calls == 1  # dropped after it raised; the others went on
    assert [(e["event"], e["watch"]) for e in logs] == [("watch_failed", "Broken")]
    sweeper.add(Probe(100))
    sweeper.close()
    assert len(sweeper) == 0 and sweeper._handle is None


async def _wait_forever(sweeper: Sweeper, seconds: float, box: list[Deadline]) -> str:
    with Deadline(sweeper, seconds) as deadline:
        box.append(deadline)
        await asyncio.Event().wait()
    return "unreachable"


async def test_a_deadline_ends_its_block_with_a_timeout_error() -> None:
    loop = asyncio.get_running_loop()
    sweeper = Sweeper(0.01)
    box: list[Deadline] = []
    task = asyncio.ensure_future(_wait_forever(sweeper, 0.03, box))
    t0 = loop.time()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(WAIT):
            await task
    assert loop.time() - t0 >= 0.03
    assert box[0].fired and task.cancelling() == 0  # the cancellation was withdrawn
    assert len(sweeper) == 0


async def test_a_block_done_in_time_leaves_nothing_watched() -> None:
    sweeper = Sweeper(0.01)
    with Deadline(sweeper, 60) as deadline:
        assert len(sweeper) == 1
        await asyncio.sleep(0)
    assert len(sweeper) == 0 and not deadline.fired


def test_a_deadline_needs_a_task() -> None:
    with pytest.raises(RuntimeError), Deadline(Sweeper(1), 1):
        pass


async def test_another_cancellation_is_not_a_timeout() -> None:
    loop = asyncio.get_running_loop()
    sweeper = Sweeper(60)  # no tick during the test: checks are called by hand
    box: list[Deadline] = []
    task = asyncio.ensure_future(_wait_forever(sweeper, 60, box))
    await asyncio.sleep(0)  # the task waits
    assert box[0].check(loop.time()) is True  # not due
    task.cancel()  # someone else
    with pytest.raises(asyncio.CancelledError):
        await task
    assert box[0].fired is False

    box.clear()
    task = asyncio.ensure_future(_wait_forever(sweeper, 1, box))
    await asyncio.sleep(0)
    assert box[0].check(box[0]._at - 1e-6) is True
    assert box[0].check(box[0]._at) is False  # due (at the deadline itself): cancels the task
    task.cancel()  # and someone else too: the cancellation goes on
    with pytest.raises(asyncio.CancelledError):
        await task
    assert box[0].fired
    sweeper.close()


async def test_a_hangup_watch_cancels_the_handler_once_the_client_is_gone() -> None:
    sweeper = Sweeper(0.01)
    transport = SimpleNamespace(closing=False)
    transport.is_closing = lambda: transport.closing  # type: ignore[attr-defined]
    transport.get_write_buffer_size = lambda: 0  # type: ignore[attr-defined]
    request: Any = SimpleNamespace(transport=transport)
    task = asyncio.ensure_future(asyncio.Event().wait())
    watch = HangupWatch(request, task, sweeper, 60.0)  # type: ignore[arg-type]
    probe = Probe(3)
    sweeper.add(probe)
    async with asyncio.timeout(WAIT):
        await probe.done  # a few ticks with the client there
    assert not task.done() and not watch.fired
    transport.closing = True
    with pytest.raises(asyncio.CancelledError) as info:
        async with asyncio.timeout(WAIT):
            await task
    assert info.value.args == ("client disconnected",)  # what the handler's unwinding says
    assert watch.fired and not watch.stalled and len(sweeper) == 0

    quiet = asyncio.ensure_future(asyncio.Event().wait())
    watch = HangupWatch(request, quiet, sweeper, 60.0)  # type: ignore[arg-type]
    watch.disarm()  # the handler is done: no more checks
    probe = Probe(3)
    sweeper.add(probe)
    async with asyncio.timeout(WAIT):
        await probe.done
    assert not quiet.done() and not watch.fired
    quiet.cancel()


def test_a_timer_taken_by_a_loop_that_stopped_is_armed_again_in_the_next() -> None:
    sweeper = Sweeper(0.01)

    async def watch_then_stop() -> None:
        sweeper.add(Probe(10**6))
        asyncio.get_running_loop().stop()

    old = asyncio.new_event_loop()
    task = old.create_task(watch_then_stop())
    old.run_forever()
    assert task.done()
    old.close()

    async def watch_in_a_new_loop() -> int:
        probe = Probe(2)
        sweeper.add(probe)
        async with asyncio.timeout(WAIT):
            await probe.done
        sweeper.close()
        return len(probe.times)

    assert asyncio.run(watch_in_a_new_loop()) == 2


class _Transport:
    """A client connection whose unsent bytes the test sets."""

    def __init__(self) -> None:
        self.pending = 0
        self.aborted = False

    def is_closing(self) -> bool:
        return self.aborted

    def get_write_buffer_size(self) -> int:
        return self.pending

    def abort(self) -> None:
        self.aborted = True


def _stall_rig(stall_s: float) -> tuple[_Transport, asyncio.Future[None], HangupWatch]:
    transport = _Transport()
    task: Any = asyncio.get_running_loop().create_future()
    sweeper: Any = SimpleNamespace(add=lambda w: None, discard=lambda w: None)
    watch = HangupWatch(SimpleNamespace(transport=transport), task, sweeper, stall_s)  # type: ignore[arg-type]
    return transport, task, watch


async def test_a_client_that_reads_nothing_for_the_stall_time_is_dropped() -> None:
    transport, task, watch = _stall_rig(stall_s=5.0)
    assert watch.check(100.0)  # nothing waits
    transport.pending = 1000
    assert watch.check(101.0)  # bytes wait from now on
    transport.pending = 1500  # more written, none taken
    assert watch.check(105.9)
    assert not task.cancelled() and not transport.aborted and not watch.stalled
    with structlog.testing.capture_logs() as logs:
        assert not watch.check(106.0)  # 5 s without the buffer shrinking
    assert transport.aborted and task.cancelled()
    with pytest.raises(asyncio.CancelledError) as info:
        await task
    assert info.value.args == ("client stopped reading",)
    assert watch.fired and watch.stalled
    assert logs == [
        {
            "event": "client_too_slow",
            "during": "answer",
            "unsent_bytes": 1500,
            "timeout_s": 5.0,
            "log_level": "info",
        }
    ]


async def test_a_client_that_reads_slowly_or_catches_up_is_kept() -> None:
    transport, task, watch = _stall_rig(stall_s=5.0)
    for i, pending in enumerate([9000, 8000, 9500, 7000, 6000, 8000, 5000]):
        transport.pending = pending  # it shrinks now and then: the client reads
        assert watch.check(100.0 + 4.0 * i)
    transport.pending = 0  # all taken
    assert watch.check(200.0)
    transport.pending = 10
    assert watch.check(201.0) and watch.check(205.9)  # a new wait starts at 201
    assert not task.cancelled() and not transport.aborted and not watch.fired


async def test_a_deadline_with_until_lets_go_of_a_whole_body_and_cancels_a_late_one() -> None:
    """The request body's deadline: ``Deadline(..., until=content.is_eof)``."""
    loop = asyncio.get_running_loop()
    sweeper = Sweeper(MAX_INTERVAL_S)

    async def upload(deadline: Deadline, entered: asyncio.Event) -> None:
        with deadline:
            entered.set()
            await asyncio.Event().wait()

    async def started(content: Any) -> tuple[Deadline, asyncio.Task[None]]:
        deadline = Deadline(sweeper, 10.0, until=content.is_eof)
        entered = asyncio.Event()
        task = loop.create_task(upload(deadline, entered))
        await entered.wait()
        return deadline, task

    try:
        content = stream_reader()
        whole, task = await started(content)
        # before the deadline, body still arriving: keep watching
        assert whole.check(loop.time() + 9.0) is True
        assert not task.cancelling() and not whole.fired
        content.feed_eof()
        # the whole body is in: let go, past the deadline or not
        assert whole.check(loop.time() + 10.5) is False
        assert not task.cancelling() and not whole.fired
        task.cancel()
        with pytest.raises(asyncio.CancelledError):  # cancelled for another reason: as it is
            await task

        late, task = await started(stream_reader())
        # the deadline passed without the body: cancel, let go
        assert late.check(loop.time() + 10.5) is False
        assert late.fired and task.cancelling() == 1
        with pytest.raises(TimeoutError):
            await task
    finally:
        sweeper.close()


async def test_a_request_body_is_watched_by_the_sweeper_only_while_it_arrives() -> None:
    sweeper = Sweeper(MAX_INTERVAL_S)
    content = stream_reader()
    request = make_mocked_request("POST", "/v1/chat/completions", payload=content)
    held: list[int] = []

    async def handler(req: web.Request) -> web.StreamResponse:
        held.append(len(sweeper))  # the body is still arriving: watched
        content.feed_data(b"{}")
        content.feed_eof()
        await req.read()
        return web.Response(text="ok")

    try:
        response = await with_body_deadline(request, handler, 30.0, sweeper)
        assert response.status == 200
        assert held == [1]
        assert len(sweeper) == 0  # let go with the answer
        # a body already whole when the handler starts is not watched at all
        held.clear()
        done = stream_reader()
        done.feed_eof()
        whole = make_mocked_request("POST", "/", payload=done)
        await with_body_deadline(whole, lambda r: _answer(held, sweeper), 30.0, sweeper)
        assert held == [0]
    finally:
        sweeper.close()


async def _answer(held: list[int], sweeper: Sweeper) -> web.StreamResponse:
    held.append(len(sweeper))
    return web.Response(text="ok")
