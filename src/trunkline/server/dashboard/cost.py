"""Cost by model, task, key and day, with calls that have no known price counted apart.

A task is the workflow of a batch run for calls made by one, and the route
for calls made outside runs, such as through the gateway.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import select

from trunkline.server.auth import require
from trunkline.server.dashboard import params
from trunkline.server.dashboard.charts import figure, horizontal_bars
from trunkline.server.dashboard.params import QueryError
from trunkline.server.dashboard.rendering import page_errors, render
from trunkline.store.database import Store
from trunkline.store.keys import ApiKey, Role
from trunkline.store.stats import DailyGrouping, Totals, daily_totals
from trunkline.store.tables import api_keys

router = APIRouter(include_in_schema=False)

DEFAULT_DAYS = 30
MAX_DAYS = 366
#: Models drawn as their own series in the daily chart; the rest are summed as "other".
STACKED_MODELS = 8


@dataclass
class Breakdown:
    """One line of a breakdown: what it groups by, how to show it, and its totals."""

    key: str
    label: str
    totals: Totals = field(default_factory=Totals)
    #: ``workflow`` or ``route`` for tasks; the key's name for keys.
    detail: str | None = None


@dataclass
class CostReport:
    """Calls from `first_day` to `last_day` (UTC, both included), summed several ways."""

    first_day: date
    last_day: date
    total: Totals
    by_model: list[Breakdown]
    by_task: list[Breakdown]
    by_key: list[Breakdown]
    #: Day to model to cost in USD.
    by_day: dict[date, dict[str, float]]
    #: Models with calls that had no known price, and how many such calls.
    unpriced_models: list[tuple[str, int]]


def date_range(query: Any, today: date | None = None) -> tuple[date, date]:
    """Read `from` and `to` (YYYY-MM-DD, UTC); by default the last 30 days up to today."""
    today = today or datetime.now(UTC).date()
    last = params.day(query, "to") or today
    first = params.day(query, "from") or last - timedelta(days=DEFAULT_DAYS - 1)
    if first > last:
        raise QueryError("from", f"{first} is after 'to' {last}; give an earlier start")
    days = (last - first).days + 1
    if days > MAX_DAYS:
        raise QueryError("from", f"the range covers {days} days; the maximum is {MAX_DAYS}")
    return first, last


def build_cost_report(store: Store, first_day: date, last_day: date) -> CostReport:
    """Sum the daily rollup over the days, grouped by model, task, key and day.

    Latency is left out: this page shows none, and reading the histogram
    would double the time of each query.
    """

    def grouped(*by: DailyGrouping) -> list[tuple[tuple[Any, ...], Totals]]:
        return daily_totals(store, first_day, last_day, by, latency=False)

    total = Totals()
    models: dict[str, Breakdown] = {}
    for (model,), totals in grouped("model"):
        models[model] = Breakdown(model, model, totals)
        total.add(totals)
    tasks: dict[tuple[str, str], Breakdown] = {}
    for (workflow, route), totals in grouped("workflow", "route"):
        kind, name = ("workflow", workflow) if workflow else ("route", route)
        tasks.setdefault((kind, name), Breakdown(name, name, detail=kind)).totals.add(totals)
    keys = {
        key_id: Breakdown(key_id, key_id or "(no key)", totals)
        for (key_id,), totals in grouped("api_key_id")
    }
    _name_keys(store, keys)
    by_day: dict[date, dict[str, float]] = {}
    for (day, model), totals in grouped("day", "model"):
        by_day.setdefault(day, {})[model] = totals.cost_usd
    unpriced = [(item.key, item.totals.unpriced_calls) for item in models.values()]
    unpriced = sorted((pair for pair in unpriced if pair[1]), key=lambda pair: (-pair[1], pair[0]))
    return CostReport(
        first_day, last_day, total, _ranked(models), _ranked(tasks), _ranked(keys), by_day, unpriced
    )


def _ranked(items: dict[Any, Breakdown]) -> list[Breakdown]:
    """Order lines by cost, then by calls, most first."""
    return sorted(
        items.values(), key=lambda item: (-item.totals.cost_usd, -item.totals.calls, item.label)
    )


def _name_keys(store: Store, keys: dict[str, Breakdown]) -> None:
    """Set each key's name as its detail; calls without a key were made outside the gateway."""
    ids = [key_id for key_id in keys if key_id]
    names: dict[str, str | None] = {}
    if ids:
        query = select(api_keys.c.key_id, api_keys.c.name).where(api_keys.c.key_id.in_(ids))
        with store.engine.connect() as connection:
            names = {row.key_id: row.name for row in connection.execute(query)}
    for key_id, item in keys.items():
        if not key_id:
            item.detail = "calls made outside the gateway"
        elif key_id not in names:
            item.detail = "(deleted key)"
        else:
            item.detail = names[key_id] or "(unnamed)"


def cost_charts(report: CostReport) -> dict[str, dict[str, Any]]:
    """Return the figures by model, task, key and by day stacked by model."""
    charts = {
        "model": _bars("Cost by model", report.by_model, lambda item: item.label),
        "task": _bars("Cost by task", report.by_task, lambda item: f"{item.label} ({item.detail})"),
        "key": _bars("Cost by key", report.by_key, lambda item: f"{item.label} {item.detail}"),
    }
    count = (report.last_day - report.first_day).days + 1
    days = [report.first_day + timedelta(days=offset) for offset in range(count)]
    labels = [day.isoformat() for day in days]
    top = [item.label for item in report.by_model[:STACKED_MODELS]]
    series = []
    for model in top:
        values = [round(report.by_day.get(day, {}).get(model, 0.0), 6) for day in days]
        series.append({"type": "bar", "name": model, "x": labels, "y": values})
    if len(report.by_model) > STACKED_MODELS:
        rest = []
        for day in days:
            others = report.by_day.get(day, {})
            rest.append(round(sum(cost for model, cost in others.items() if model not in top), 6))
        series.append({"type": "bar", "name": "other models", "x": labels, "y": rest})
    title = {"text": "Cost per day by model (USD)", "font": {"size": 14}}
    charts["day"] = figure(series, barmode="stack", title=title)
    return charts


def _bars(title: str, items: list[Breakdown], label: Any) -> dict[str, Any]:
    costs = [round(item.totals.cost_usd, 6) for item in items]
    return horizontal_bars(title, [label(item) for item in items], costs, unit="USD")


def cost_json(report: CostReport) -> dict[str, Any]:
    def lines(items: list[Breakdown], name: str) -> list[dict[str, Any]]:
        return [{name: item.key, "detail": item.detail, **item.totals.as_dict()} for item in items]

    return {
        "from": report.first_day.isoformat(),
        "to": report.last_day.isoformat(),
        "total": report.total.as_dict(),
        "by_model": lines(report.by_model, "model"),
        "by_task": [
            {"task": item.key, "kind": item.detail, **item.totals.as_dict()}
            for item in report.by_task
        ],
        "by_key": lines(report.by_key, "api_key_id"),
        "by_day": [
            {"date": day.isoformat(), "cost_usd_by_model": models}
            for day, models in sorted(report.by_day.items())
        ],
        "unpriced_models": [
            {"model": model, "calls": count} for model, count in report.unpriced_models
        ],
    }


@router.get("/cost", response_class=HTMLResponse)
@page_errors
def cost_page(request: Request, key: ApiKey = Depends(require(Role.VIEWER))) -> HTMLResponse:
    """Render cost by model, task, key and day over a range of days."""
    first, last = date_range(request.query_params)
    report = build_cost_report(request.app.state.store, first, last)
    return render(request, "cost.html", title="Cost", report=report, charts=cost_charts(report))
