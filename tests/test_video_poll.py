"""Video status polls that fail on the way (docs/protocol.md §6.3): the task goes on upstream,
with its quota spent, whatever one poll met, so ``ChatService.wait_video`` polls again, up to
three failures in a row, within ``video_deadline_s``."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from proxy.accounts import Account
from proxy.config import Settings
from proxy.errors import (
    UpstreamCaptchaError,
    UpstreamError,
    UpstreamRateLimitedError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
)
from proxy.service import ChatService, VideoTask

DONE = {"task_status": "success", "content": "https://cdn.qwenlm.ai/output/v/video.mp4?key=k"}
RUNNING = {"task_status": "running"}


class Polls:
    """The status endpoint: answers (a payload or an error to raise) in turn."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.calls = 0

    async def task_status(self, account: Account, task_id: str) -> Any:
        self.calls += 1
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer


async def _wait(polls: Polls, deadline_s: float = 600.0) -> Any:
    settings = Settings(
        upstream_url="http://127.0.0.1:9",
        video_poll_interval_s=0,
        video_deadline_s=deadline_s,
    )
    async with aiohttp.ClientSession() as session:
        service = ChatService(session, settings)
        service.client = polls  # type: ignore[assignment]
        task = VideoTask("task-1", Account("account-1", None), "chat-1")
        return await service.wait_video(task)


@pytest.mark.parametrize(
    "error",
    [
        UpstreamUnavailableError("HTTP 500"),
        UpstreamTimeoutError("slow"),
        UpstreamRateLimitedError("429"),
    ],
    ids=["5xx", "timeout", "429"],
)
async def test_a_failed_poll_is_polled_again(error: UpstreamError) -> None:
    """One poll failing on the way (then two in a row) does not lose the video."""
    polls = Polls(RUNNING, error, RUNNING, error, error, DONE)
    media = await _wait(polls)
    assert media.url == DONE["content"]
    assert polls.calls == 6


async def test_three_failed_polls_in_a_row_give_up() -> None:
    """The third failure in a row is the request's error."""
    polls = Polls(RUNNING, *(UpstreamUnavailableError(f"HTTP 50{i}") for i in range(3)), DONE)
    with pytest.raises(UpstreamUnavailableError, match="HTTP 502"):
        await _wait(polls)
    assert polls.calls == 4


async def test_a_failed_poll_past_the_deadline_is_the_error() -> None:
    """Past the deadline a failed poll is not polled again."""
    with pytest.raises(UpstreamUnavailableError):
        await _wait(Polls(UpstreamUnavailableError("HTTP 500"), DONE), deadline_s=0)


async def test_other_errors_end_the_wait_at_once() -> None:
    """A captcha (or any error that is not a failure on the way) is not polled again."""
    polls = Polls(UpstreamCaptchaError("captcha"), DONE)
    with pytest.raises(UpstreamCaptchaError):
        await _wait(polls)
    assert polls.calls == 1
