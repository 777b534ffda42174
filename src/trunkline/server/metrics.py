"""Prometheus metrics of the gateway: requests, tokens, cost, latency and errors.

Requests report to a list, and the counters take the reports in batches:
every `FLUSH_INTERVAL_S` and before each scrape. Updating the
prometheus_client counters and histogram of one request took about 50,000
instructions (an estimate from one callgrind count on a 2-core VM). Each
update takes a lock, and with several workers it also writes to a shared file.

With several worker processes each one counts its own requests; `trunkline
serve --workers N` sets ``PROMETHEUS_MULTIPROC_DIR`` so that `/metrics`
adds up every worker's files.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from trunkline.types.calls import CallRecord

#: Seconds between two flushes of the reported values into the shared metrics.
FLUSH_INTERVAL_S = 0.5
#: Reports held at most before a flush, when no periodic flush runs.
MAX_PENDING = 4096

_COUNT, _ERROR, _OBSERVE = "count", "error", "observe"

# From a fast local fake (under a millisecond) to a long generation (two minutes).
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class GatewayMetrics:
    """The counters and histograms one gateway process keeps."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.requests = Counter(
            "trunkline_gateway_requests",
            "Requests answered by the gateway, by endpoint, model and HTTP status.",
            ["endpoint", "model", "status"],
            registry=registry,
        )
        self.tokens = Counter(
            "trunkline_gateway_tokens",
            "Tokens of the calls the gateway made, by model and direction (input or output).",
            ["model", "direction"],
            registry=registry,
        )
        self.cost = Counter(
            "trunkline_gateway_cost_usd",
            "Cost in USD of the calls the gateway made, by model; unpriced calls add nothing.",
            ["model"],
            registry=registry,
        )
        self.unpriced = Counter(
            "trunkline_gateway_unpriced_calls",
            "Calls whose model had no known price, by model.",
            ["model"],
            registry=registry,
        )
        self.latency = Histogram(
            "trunkline_gateway_request_duration_seconds",
            "Time from a request's admission to its answer (to the last byte when streamed); "
            "requests rejected before admission are not timed.",
            ["endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.errors = Counter(
            "trunkline_gateway_errors",
            "Failed requests, by error kind (auth, rate_limited, budget_exceeded, timeout, ...).",
            ["kind"],
            registry=registry,
        )

        # Label values are few (models served, status codes, error kinds). A
        # dictionary read here replaces `labels`, which takes a lock and
        # checks its arguments on every call.
        self._children: dict[tuple[object, ...], object] = {}
        # What requests reported since the last flush. A request only appends
        # here, and the counters take the values in one pass per FLUSH_INTERVAL_S.
        # So their locks and shared files cost the median request nothing.
        self._pending: list[tuple[Any, ...]] = []

    def _child(self, metric: Counter | Histogram, *labels: str):  # noqa: ANN202
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def count(self, endpoint: str, model: str, status: int) -> None:
        """Count a response that made no call, such as a rejected key or an invalid body."""
        self._report((_COUNT, endpoint, model, status))

    def count_error(self, kind: str) -> None:
        """Count a failure whose response `observe` does not count, such as a rejected key."""
        self._report((_ERROR, kind))

    def observe(
        self,
        endpoint: str,
        model: str,
        status: int,
        seconds: float,
        record: CallRecord | None = None,
        error_kind: str | None = None,
    ) -> None:
        """Count a response, its duration, its error kind, and the tokens and cost of its call."""
        self._report((_OBSERVE, endpoint, model, status, seconds, record, error_kind))

    def _report(self, entry: tuple[Any, ...]) -> None:
        # list.append is atomic, so routes that run in the thread pool may report too.
        self._pending.append(entry)
        if len(self._pending) >= MAX_PENDING:
            self.flush()

    def flush(self) -> None:
        """Add everything reported so far to the counters and histograms."""
        pending, self._pending = self._pending, []
        for entry in pending:
            if entry[0] is _OBSERVE:
                self._apply(*entry[1:])
            elif entry[0] is _COUNT:
                self._child(self.requests, entry[1], entry[2], str(entry[3])).inc()
            else:
                self._child(self.errors, entry[1]).inc()

    async def flush_every(self, interval_s: float = FLUSH_INTERVAL_S) -> None:
        """Flush every `interval_s` seconds until cancelled, then once more."""
        try:
            while True:
                await asyncio.sleep(interval_s)
                self.flush()
        finally:
            self.flush()

    def _apply(
        self,
        endpoint: str,
        model: str,
        status: int,
        seconds: float,
        record: CallRecord | None,
        error_kind: str | None,
    ) -> None:
        self._child(self.requests, endpoint, model, str(status)).inc()
        self._child(self.latency, endpoint).observe(seconds)
        if error_kind is not None:
            self._child(self.errors, error_kind).inc()
        if record is not None:
            served = record.model_served or record.model_requested
            usage = record.usage
            if usage.input_tokens:
                self._child(self.tokens, served, "input").inc(usage.input_tokens)
            if usage.output_tokens:
                self._child(self.tokens, served, "output").inc(usage.output_tokens)
            if record.cost.price_missing:
                self._child(self.unpriced, served).inc()
            elif record.cost.total_usd:
                self._child(self.cost, served).inc(record.cost.total_usd)

    def render(self) -> bytes:
        """Render the Prometheus text format, summed over every worker when several share a folder.

        This process's own requests are all counted; another worker's may be
        up to `FLUSH_INTERVAL_S` behind.
        """
        self.flush()
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)
