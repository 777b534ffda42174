"""Small builders shared by the unit tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from trunkline.config import Settings
from trunkline.types import Cost, Message, Usage
from trunkline.types.calls import CallRecord
from trunkline.types.spans import SpanRecord


class ListExporter:
    """Keeps every exported record in memory, in order."""

    def __init__(self) -> None:
        self.calls: list[CallRecord] = []
        self.spans: list[SpanRecord] = []

    def export_call(self, record: CallRecord) -> None:
        self.calls.append(record)

    def export_span(self, record: SpanRecord) -> None:
        self.spans.append(record)


def fake_settings(*deployments: str, **route_options: object) -> Settings:
    """Settings with one fake deployment per name and a route `main` over them in order."""
    return Settings.model_validate(
        {
            "deployments": {
                name: {"provider": "fake", "model": f"{name}-model"} for name in deployments
            },
            "routes": {
                "main": {
                    "deployments": list(deployments),
                    "backoff_base_s": 0.001,
                    "backoff_max_s": 0.002,
                    **route_options,
                }
            },
            "default_route": "main",
            "prices": {
                f"{name}-model": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}
                for name in deployments
            },
        }
    )


def router_with(*scripts, **route_options):  # noqa: ANN001, ANN201
    """A Router over scripted fakes named d0, d1, ... on the route `main`."""
    from trunkline.routing import Router

    names = [f"d{index}" for index in range(len(scripts))]
    settings = fake_settings(*names, **route_options)
    return Router(settings, providers=dict(zip(names, scripts, strict=True)))


def make_record(
    index: int,
    *,
    model: str = "m1",
    cost: float | None = 0.01,
    run_id: str | None = "r1",
    day: int = 0,
    outcome: str = "ok",
) -> CallRecord:
    """A call record numbered `index`, started `index` seconds after noon UTC on 2026-12-01 plus `day` days."""
    started = datetime(2026, 12, 1, 12, tzinfo=UTC) + timedelta(days=day, seconds=index)
    return CallRecord(
        call_id=f"{index:032x}",
        trace_id="a" * 32,
        span_id=f"{index:016x}",
        run_id=run_id,
        route="main",
        provider="fake",
        model_requested=model,
        model_served=model,
        messages=[Message.user(f"question {index}")],
        output_text=f"answer {index}",
        usage=Usage(input_tokens=10, output_tokens=5, cache_read_tokens=2),
        cost=Cost(total_usd=cost) if cost is not None else Cost.missing(),
        started_at=started,
        ended_at=started + timedelta(milliseconds=30),
        latency_ms=30.0,
        outcome=outcome,
    )
