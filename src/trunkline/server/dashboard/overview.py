"""The overview: calls, tokens, cost, errors and latency for today, 7 and 30 days, with trends.

Windows end at the end of the current UTC hour. Today runs from midnight UTC
and is compared with yesterday up to the same hour. The 7- and 30-day windows
are compared with the same length of time just before them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from trunkline.server.auth import require
from trunkline.server.dashboard.charts import ERROR_COLOUR, figure
from trunkline.server.dashboard.rendering import page_errors, render
from trunkline.store.database import Store
from trunkline.store.keys import ApiKey, Role
from trunkline.store.rollups import hour_of
from trunkline.store.stats import Totals, hourly_totals

router = APIRouter(include_in_schema=False)

CHART_DAYS = 30


@dataclass(frozen=True)
class Trend:
    """A figure's change against the previous period, worded for display."""

    #: The relative change (0.1 for +10 %), or for rates the change in points; None without a base.
    change: float | None
    text: str
    #: ``good``, ``bad`` or ``neutral``, from whether a rise is welcome.
    tone: str


@dataclass
class Period:
    """One window and the window of the same length before it."""

    name: str
    label: str
    start: datetime
    end: datetime
    previous_start: datetime
    previous_end: datetime
    current: Totals
    previous: Totals

    def trends(self) -> dict[str, Trend]:
        current, previous = self.current, self.previous
        return {
            "calls": relative_trend(current.calls, previous.calls, rise_is_bad=None),
            "tokens": relative_trend(current.tokens, previous.tokens, rise_is_bad=None),
            "cost_usd": relative_trend(current.cost_usd, previous.cost_usd, rise_is_bad=True),
            "error_rate": points_trend(current.error_rate, previous.error_rate),
            "p50_ms": relative_trend(current.p50_ms, previous.p50_ms, rise_is_bad=True),
            "p95_ms": relative_trend(current.p95_ms, previous.p95_ms, rise_is_bad=True),
        }


@dataclass
class Overview:
    """The three periods and daily totals for the chart, oldest day first."""

    generated_at: datetime
    periods: list[Period]
    days: list[tuple[date, Totals]]


def relative_trend(
    current: float | None, previous: float | None, *, rise_is_bad: bool | None
) -> Trend:
    if current is None or previous is None or previous == 0:
        text = "new" if current and not previous else "–"
        return Trend(None, text, "neutral")
    change = (current - previous) / previous
    return Trend(change, f"{change * 100:+.1f}%", _tone(change, rise_is_bad))


def points_trend(current: float | None, previous: float | None) -> Trend:
    """Compare two rates by their difference in percentage points."""
    if current is None or previous is None:
        return Trend(None, "–", "neutral")
    change = current - previous
    return Trend(change, f"{change * 100:+.2f} pt", _tone(change, rise_is_bad=True))


def _tone(change: float, rise_is_bad: bool | None) -> str:
    if rise_is_bad is None or abs(change) < 1e-9:
        return "neutral"
    return "bad" if (change > 0) == rise_is_bad else "good"


def _windows(now: datetime) -> list[tuple[str, str, datetime, datetime, datetime, datetime]]:
    end = hour_of(now) + timedelta(hours=1)
    midnight = end.replace(hour=0) if end.hour else end - timedelta(days=1)
    day = timedelta(days=1)
    return [
        ("today", "Today", midnight, end, midnight - day, end - day),
        ("7d", "Last 7 days", end - 7 * day, end, end - 14 * day, end - 7 * day),
        ("30d", "Last 30 days", end - 30 * day, end, end - 60 * day, end - 30 * day),
    ]


def build_overview(store: Store, now: datetime | None = None) -> Overview:
    """Sum the rollup's hours of the last 60 days into the periods and the daily chart."""
    now = now or datetime.now(UTC)
    windows = _windows(now)
    end = windows[0][3]
    first_day = (end - timedelta(hours=1)).date() - timedelta(days=CHART_DAYS - 1)
    start = min(windows[-1][4], datetime.combine(first_day, datetime.min.time(), UTC))
    hours = hourly_totals(store, start, end)

    periods = []
    for name, label, begin, finish, previous_begin, previous_finish in windows:
        current, previous = Totals(), Totals()
        for hour, totals in hours:
            if begin <= hour < finish:
                current.add(totals)
            elif previous_begin <= hour < previous_finish:
                previous.add(totals)
        periods.append(
            Period(name, label, begin, finish, previous_begin, previous_finish, current, previous)
        )

    days = {first_day + timedelta(days=offset): Totals() for offset in range(CHART_DAYS)}
    for hour, totals in hours:
        if hour.date() in days:
            days[hour.date()].add(totals)
    return Overview(now, periods, sorted(days.items()))


def daily_charts(days: list[tuple[date, Totals]]) -> dict[str, dict[str, Any]]:
    """Return the figures of calls and errors, cost, and latency per day."""
    labels = [day.isoformat() for day, _ in days]
    totals = [item for _, item in days]
    calls = figure(
        [
            {"type": "bar", "name": "ok", "x": labels, "y": [t.calls - t.errors for t in totals]},
            {
                "type": "bar",
                "name": "errors",
                "x": labels,
                "y": [t.errors for t in totals],
                "marker": {"color": ERROR_COLOUR},
            },
        ],
        barmode="stack",
        title={"text": "Calls per day", "font": {"size": 14}},
    )
    cost = figure(
        [{"type": "bar", "name": "cost", "x": labels, "y": [round(t.cost_usd, 6) for t in totals]}],
        title={"text": "Cost per day (USD, priced calls)", "font": {"size": 14}},
        showlegend=False,
    )
    latency = figure(
        [
            {
                "type": "scatter",
                "mode": "lines+markers",
                "name": "p50 (estimate)",
                "x": labels,
                "y": [t.p50_ms for t in totals],
            },
            {
                "type": "scatter",
                "mode": "lines+markers",
                "name": "p95 (estimate)",
                "x": labels,
                "y": [t.p95_ms for t in totals],
            },
        ],
        title={"text": "Latency per day (ms, bucket estimates)", "font": {"size": 14}},
    )
    return {"calls": calls, "cost": cost, "latency": latency}


def overview_json(overview: Overview) -> dict[str, Any]:
    return {
        "generated_at": overview.generated_at.isoformat(),
        "latency_note": "p50 and p95 are estimates from a fixed latency histogram",
        "periods": {
            period.name: {
                "start": period.start.isoformat(),
                "end": period.end.isoformat(),
                "previous_start": period.previous_start.isoformat(),
                "previous_end": period.previous_end.isoformat(),
                "current": period.current.as_dict(),
                "previous": period.previous.as_dict(),
            }
            for period in overview.periods
        },
        "days": [{"date": day.isoformat(), **totals.as_dict()} for day, totals in overview.days],
    }


@router.get("/", response_class=HTMLResponse)
@page_errors
def overview_page(request: Request, key: ApiKey = Depends(require(Role.VIEWER))) -> HTMLResponse:
    """Render the figures for today and the last 7 and 30 days, and the daily charts."""
    overview = build_overview(request.app.state.store)
    return render(
        request,
        "overview.html",
        title="Overview",
        overview=overview,
        charts=daily_charts(overview.days),
    )
