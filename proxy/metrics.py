"""Prometheus metrics of one app (``GET /metrics``), in its own registry (no module globals).

One :class:`Metrics` lives in ``app[METRICS]`` (:mod:`proxy.state`). Names (all prefixed
``qwen_gateway_``):

- ``requests_total{route,status,model}``: every request; ``route`` is the route template
  (``/v1/chat/completions``; ``unmatched`` for unknown paths), ``model`` the requested model once
  it resolved (``""`` before, so client typos do not grow the label set);
- ``time_to_first_token_seconds{route}``: request start to the first byte of a streamed answer;
- ``request_duration_seconds{route}``: request start to the end of the response;
- ``upstream_errors_total{code}``: chat.qwen.ai failures by the proxy's error code;
- ``captcha_hits_total``: captcha (WAF) answers;
- ``accounts{state}``: accounts by state (available, busy, resting, expired), read at scrape;
- ``streams_in_flight``: answers being relayed now;
- ``tool_call_parse_failures_total``: tool-call blocks the model wrote that were not turned
  into calls: the tools stage's rejections (``ToolCounters.rejected``, read at scrape time) plus
  any ``app[METRICS].tool_call_parse_failures.inc()``;
- ``tool_call_rejections_total{reason}``, ``tool_calls_total``,
  ``tool_corrective_turns_total``, ``tool_unmet_choice_total``: the rest of
  :class:`proxy.tools.stage.ToolCounters`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from proxy.batch import IterationBatch
from proxy.errors import UpstreamCaptchaError, UpstreamError
from proxy.tools.stage import ToolCounters

__all__ = ["CONTENT_TYPE_LATEST", "MODEL_KEY", "Metrics", "route_template", "total_timing"]

#: Per-request key: the model a request resolved to (set by the handlers once it is known).
MODEL_KEY = web.RequestKey("qwen_proxy_model", str)


def route_template(request: web.Request) -> str:
    """The metrics label of ``request``'s route: its template (``/v1/chat/completions``,
    ``/v1/models/{model}``), ``"unmatched"`` for an unknown path."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


def total_timing(t0: float) -> str:
    """The ``Server-Timing`` value of an answer without the proxy/upstream split:
    ``total;dur=<ms>`` since ``t0`` (a ``time.perf_counter`` value)."""
    return f"total;dur={(time.perf_counter() - t0) * 1000:.2f}"


_TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 30.0, 60.0)
_DURATION_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)
_STATES = ("available", "busy", "resting", "expired")


class Count:
    """A plain counter the app increments (exported by :class:`_ToolCollector`)."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def inc(self, n: int = 1) -> None:
        """Add ``n`` (default 1)."""
        self.value += n


class _ToolCollector(Collector):
    """Exports the tools stage's :class:`ToolCounters` at scrape time."""

    def __init__(self, extra: Count) -> None:
        self.extra = extra
        self.counters: ToolCounters | None = None

    def collect(self) -> Iterator[Metric]:
        tc = self.counters
        rejected = dict(tc.rejected) if tc is not None else {}
        yield CounterMetricFamily(
            "qwen_gateway_tool_call_parse_failures",
            "Tool-call blocks in the model's answer that could not be turned into calls.",
            value=self.extra.value + sum(rejected.values()),
        )
        by_reason = CounterMetricFamily(
            "qwen_gateway_tool_call_rejections",
            "Tool-call blocks not turned into calls, by reason.",
            labels=["reason"],
        )
        for reason, n in sorted(rejected.items()):
            by_reason.add_metric([reason], n)
        yield by_reason
        for name, doc, value in (
            ("tool_calls", "Tool calls delivered to clients.", tc.calls if tc else 0),
            (
                "tool_corrective_turns",
                "Corrective turns for a required or named tool_choice.",
                tc.corrective_turns if tc else 0,
            ),
            (
                "tool_unmet_choice",
                "Answers still without the required tool call after the corrective turn.",
                tc.unmet_choice if tc else 0,
            ),
        ):
            yield CounterMetricFamily(f"qwen_gateway_{name}", doc, value=value)


class Metrics:
    """The app's counters, histograms and gauges, and their registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "qwen_gateway_requests",
            "Requests by route template, HTTP status and model.",
            ["route", "status", "model"],
            registry=r,
        )
        self.ttft = Histogram(
            "qwen_gateway_time_to_first_token_seconds",
            "From the request's arrival to the first byte of its streamed answer.",
            ["route"],
            buckets=_TTFT_BUCKETS,
            registry=r,
        )
        self.duration = Histogram(
            "qwen_gateway_request_duration_seconds",
            "From the request's arrival to the end of its response.",
            ["route"],
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.upstream_errors = Counter(
            "qwen_gateway_upstream_errors",
            "chat.qwen.ai failures by error code.",
            ["code"],
            registry=r,
        )
        self.captcha_hits = Counter(
            "qwen_gateway_captcha_hits", "Captcha (WAF) answers from chat.qwen.ai.", registry=r
        )
        self.accounts = Gauge(
            "qwen_gateway_accounts", "Upstream accounts by state.", ["state"], registry=r
        )
        self.streams_in_flight = Gauge(
            "qwen_gateway_streams_in_flight", "Answers being relayed now.", registry=r
        )
        #: answers being relayed now (:meth:`stream_opened`, :meth:`stream_closed`), read at
        #: scrape time: a plain count costs less than a gauge update per stream
        self.streams_open = 0
        self.streams_in_flight.set_function(lambda: self.streams_open)
        self.tool_call_parse_failures = Count()
        # labelled children by label values: ``labels()`` takes a lock and builds a tuple per
        # call; the label sets are bounded (route templates, statuses, catalog model ids)
        self._done: dict[tuple[str, int, str], tuple[Any, Any]] = {}
        self._first: dict[str, Any] = {}
        # request counts and timings, applied once per event-loop iteration (proxy.batch):
        # ("done", route, status, model, seconds) or ("first", route, 0, "", seconds)
        self._observed: IterationBatch[tuple[str, str, int, str, float]] = IterationBatch(
            self._apply
        )
        self._tools = _ToolCollector(self.tool_call_parse_failures)
        r.register(self._tools)
        for state in _STATES:
            self.accounts.labels(state).set(0)

    def request_done(self, route: str, status: int, model: str, seconds: float) -> None:
        """Count one request of ``route`` (template) answered ``status`` for ``model`` and
        observe its duration (seconds). Applied at the end of the loop's iteration, with the
        others of that iteration; a scrape (:meth:`render`) applies what waits first."""
        self._observed.add(("done", route, status, model, seconds))

    def first_byte(self, route: str, seconds: float) -> None:
        """Observe the time to the first byte of a streamed answer of ``route`` (seconds);
        applied as :meth:`request_done`."""
        self._observed.add(("first", route, 0, "", seconds))

    def stream_opened(self) -> None:
        """One more answer is being relayed (``streams_in_flight``)."""
        self.streams_open += 1

    def stream_closed(self) -> None:
        """One answer less is being relayed."""
        self.streams_open -= 1

    def _apply(self, observed: list[tuple[str, str, int, str, float]]) -> None:
        done, first = self._done, self._first
        for kind, route, status, model, seconds in observed:
            if kind == "done":
                children = done.get((route, status, model))
                if children is None:
                    children = (
                        self.requests.labels(route, str(status), model),
                        self.duration.labels(route),
                    )
                    done[(route, status, model)] = children
                children[0].inc()
                children[1].observe(seconds)
            else:
                child = first.get(route)
                if child is None:
                    child = first[route] = self.ttft.labels(route)
                child.observe(seconds)

    def watch_tools(self, counters: ToolCounters) -> None:
        """Export ``counters`` (the app's tool-call outcome counts) on every scrape."""
        self._tools.counters = counters

    def upstream_error(self, error: UpstreamError) -> None:
        """Count one upstream failure (and a captcha hit when it is one)."""
        self.upstream_errors.labels(error.error_code()).inc()
        if isinstance(error, UpstreamCaptchaError):
            self.captcha_hits.inc()

    def set_accounts(self, counts: dict[str, int]) -> None:
        """Set the ``accounts{state}`` gauge from ``{state: count}``."""
        for state in _STATES:
            self.accounts.labels(state).set(counts.get(state, 0))

    def render(self) -> bytes:
        """The text exposition format (``CONTENT_TYPE_LATEST``), with every request counted
        so far."""
        self._observed.flush()
        return generate_latest(self.registry)
