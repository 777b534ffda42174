"""Prometheus metrics of the gateway: requests, tokens, cost, latency and errors.

With several worker processes each one counts its own requests; `trunkline
serve --workers N` sets ``PROMETHEUS_MULTIPROC_DIR`` so that `/metrics`
adds up every worker's files.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from trunkline.types.calls import CallRecord

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

    def _child(self, metric: Counter | Histogram, *labels: str):  # noqa: ANN202
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def count(self, endpoint: str, model: str, status: int) -> None:
        """Count a response that made no call, such as a rejected key or an invalid body."""
        self._child(self.requests, endpoint, model, str(status)).inc()

    def count_error(self, kind: str) -> None:
        """Count a failure whose response `observe` does not count, such as a rejected key."""
        self._child(self.errors, kind).inc()

    def observe(
        self,
        endpoint: str,
        model: str,
        status: int,
        seconds: float,
        record: CallRecord | None = None,
        error_kind: str | None = None,
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
        """Render the Prometheus text format, summed over every worker when several share a folder."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)
