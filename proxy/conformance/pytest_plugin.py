"""pytest support: the ``qwen_conformance`` fixture.

Enable it with ``-p proxy.conformance.pytest_plugin`` (or ``pytest_plugins = [...]`` in a root
``conftest.py``, or by importing the fixture into a test module), then::

    async def test_my_proxy_conforms(qwen_conformance):
        report = await qwen_conformance("http://127.0.0.1:8000/v1", key="sk-…")
        assert report.by_id()["chat.zh.stream"].status == "passed"

The fixture's callable is :func:`proxy.conformance.assert_conformant`: it runs every check and
raises ``AssertionError`` carrying the Markdown report of the failures when a required check
fails; otherwise it returns the :class:`~proxy.conformance.report.Report`. Keyword arguments go
to :func:`proxy.conformance.run_checks`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from proxy.conformance.report import Report
from proxy.conformance.runner import assert_conformant

__all__ = ["qwen_conformance"]


@pytest.fixture
def qwen_conformance() -> Callable[..., Awaitable[Report]]:
    """An async ``(base_url, key=None, **run_checks_kwargs) -> Report`` that asserts
    conformance (see the module docstring)."""

    async def run(base_url: str, key: str | None = None, **kw: Any) -> Report:
        return await assert_conformant(base_url, key, **kw)

    return run
