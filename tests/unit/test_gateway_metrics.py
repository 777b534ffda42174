"""Gateway metrics: requests report to a list, and the counters take the reports in batches."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from trunkline.server.metrics import MAX_PENDING, GatewayMetrics
from trunkline.types import CallRecord, Cost, Message, Usage


def _record() -> CallRecord:
    now = datetime(2026, 12, 1, tzinfo=UTC)
    return CallRecord(
        call_id="c" * 32,
        trace_id="t" * 32,
        span_id="s" * 16,
        route="chat",
        model_requested="chat",
        model_served="gpt-4o-mini",
        messages=[Message.user("hi")],
        usage=Usage(input_tokens=12, output_tokens=3),
        cost=Cost(total_usd=0.25),
        started_at=now,
        ended_at=now,
        latency_ms=1.0,
        outcome="ok",
    )


def _value(metrics: GatewayMetrics, name: str, labels: dict[str, str]) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_reports_reach_the_counters_at_flush() -> None:
    metrics = GatewayMetrics()
    metrics.observe("chat_completions", "chat", 200, 0.003, _record())
    metrics.count("models", "-", 200)
    metrics.count_error("auth")
    requests = {"endpoint": "chat_completions", "model": "chat", "status": "200"}
    assert _value(metrics, "trunkline_gateway_requests_total", requests) is None

    metrics.flush()
    assert _value(metrics, "trunkline_gateway_requests_total", requests) == 1.0
    assert _value(metrics, "trunkline_gateway_requests_total", {"endpoint": "models", "model": "-", "status": "200"}) == 1.0
    assert _value(metrics, "trunkline_gateway_errors_total", {"kind": "auth"}) == 1.0
    assert _value(metrics, "trunkline_gateway_tokens_total", {"model": "gpt-4o-mini", "direction": "input"}) == 12.0
    assert _value(metrics, "trunkline_gateway_cost_usd_total", {"model": "gpt-4o-mini"}) == 0.25
    bucket = {"endpoint": "chat_completions", "le": "0.005"}
    assert _value(metrics, "trunkline_gateway_request_duration_seconds_bucket", bucket) == 1.0

    # A second flush adds nothing that was added before.
    metrics.flush()
    assert _value(metrics, "trunkline_gateway_requests_total", requests) == 1.0


def test_render_includes_every_report() -> None:
    metrics = GatewayMetrics()
    for _ in range(3):
        metrics.observe("messages", "chat", 429, 0.001, None, "rate_limited")
    text = metrics.render().decode()
    assert 'trunkline_gateway_requests_total{endpoint="messages",model="chat",status="429"} 3.0' in text
    assert 'trunkline_gateway_errors_total{kind="rate_limited"} 3.0' in text


def test_flush_every_final_flush() -> None:
    async def scenario() -> tuple[float | None, float | None]:
        metrics = GatewayMetrics()
        flusher = asyncio.create_task(metrics.flush_every(0.01))
        metrics.count("models", "-", 200)
        await asyncio.sleep(0.1)
        labels = {"endpoint": "models", "model": "-", "status": "200"}
        periodic = _value(metrics, "trunkline_gateway_requests_total", labels)
        metrics.count("models", "-", 200)
        flusher.cancel()
        await asyncio.gather(flusher, return_exceptions=True)
        return periodic, _value(metrics, "trunkline_gateway_requests_total", labels)

    assert asyncio.run(scenario()) == (1.0, 2.0)


def test_metrics_backlog_flushed_at_cap() -> None:
    metrics = GatewayMetrics()
    for _ in range(MAX_PENDING):
        metrics.count_error("timeout")
    assert _value(metrics, "trunkline_gateway_errors_total", {"kind": "timeout"}) == float(MAX_PENDING)
