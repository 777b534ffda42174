"""Sums of calls over time from the rollups: counts, tokens, cost, errors and latency.

Latency percentiles are estimates from the rollup's fixed histogram: the
rank is found in its bucket and placed by linear interpolation between the
bucket's bounds, so an estimate can be off by up to the bucket's width (see
`LATENCY_BOUNDS_MS`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Literal

from sqlalchemy import Table, case, select

from trunkline.store.database import Store, as_utc
from trunkline.store.rollups import SUMMED_COLUMNS
from trunkline.store.sums import summed
from trunkline.store.tables import (
    LATENCY_BOUNDS_MS,
    call_rollups_daily,
    call_rollups_hourly,
    latency_bucket_columns,
)

#: Columns of the daily rollup that sums can be grouped by.
DailyGrouping = Literal["day", "model", "route", "workflow", "api_key_id", "outcome"]

_BUCKETS = latency_bucket_columns()


def latency_percentile(buckets: Sequence[int], quantile: float) -> float | None:
    """Estimate the `quantile` (0 to 1) of latencies counted in histogram `buckets`, in ms.

    Returns None when the histogram is empty. A rank that falls in the open
    top bucket returns that bucket's lower bound, the most the histogram can
    tell.
    """
    total = sum(buckets)
    if total == 0:
        return None
    rank = quantile * total
    below = 0
    for index, count in enumerate(buckets):
        if count and below + count >= rank:
            low = float(LATENCY_BOUNDS_MS[index - 1]) if index else 0.0
            if index == len(LATENCY_BOUNDS_MS):
                return low
            high = float(LATENCY_BOUNDS_MS[index])
            return low + (high - low) * (rank - below) / count
        below += count
    return float(LATENCY_BOUNDS_MS[-1])


@dataclass
class Totals:
    """Sums over a set of calls; cost_usd covers priced calls only."""

    calls: int = 0
    errors: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: float = 0.0
    #: Calls whose model had no known price, so `cost_usd` leaves them out.
    unpriced_calls: int = 0
    retries: int = 0
    fallbacks: int = 0
    latency_ms_sum: float = 0.0
    #: Call counts per latency bucket, in the order of `latency_bucket_columns()`.
    latency_buckets: list[int] = field(default_factory=lambda: [0] * len(_BUCKETS))

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.calls if self.calls else None

    @property
    def mean_latency_ms(self) -> float | None:
        return self.latency_ms_sum / self.calls if self.calls else None

    @property
    def p50_ms(self) -> float | None:
        """Median latency, estimated from the histogram."""
        return latency_percentile(self.latency_buckets, 0.50)

    @property
    def p95_ms(self) -> float | None:
        """95th percentile latency, estimated from the histogram."""
        return latency_percentile(self.latency_buckets, 0.95)

    def add(self, other: Totals) -> None:
        for name in _SCALARS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        pairs = zip(self.latency_buckets, other.latency_buckets, strict=True)
        self.latency_buckets = [mine + theirs for mine, theirs in pairs]

    def as_dict(self) -> dict[str, Any]:
        """Return the sums and the derived figures, for JSON."""
        data: dict[str, Any] = {name: getattr(self, name) for name in _SCALARS}
        data.update(
            tokens=self.tokens,
            error_rate=self.error_rate,
            mean_latency_ms=self.mean_latency_ms,
            p50_latency_ms_estimate=self.p50_ms,
            p95_latency_ms_estimate=self.p95_ms,
        )
        return data


_SCALARS = (
    "calls",
    "errors",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "reasoning_tokens",
    "cost_usd",
    "unpriced_calls",
    "retries",
    "fallbacks",
    "latency_ms_sum",
)


#: The sums read when latency is not wanted.
_COUNTS = tuple(name for name in SUMMED_COLUMNS if not name.startswith("latency"))


def _measures(table: Table, *, latency: bool) -> list[Any]:
    names = SUMMED_COLUMNS if latency else _COUNTS
    errors = case((table.c.outcome == "error", table.c.calls), else_=0)
    sums = [summed(table.c[name]).label(name) for name in names]
    return [*sums, summed(errors).label("errors")]


def _totals(row: Any) -> Totals:
    """Build totals from a row of sums; a sum the query left out counts as 0."""
    values = {name: row.get(name) or 0 for name in _SCALARS}
    return Totals(**values, latency_buckets=[row.get(name) or 0 for name in _BUCKETS])


def hourly_totals(store: Store, start: datetime, end: datetime) -> list[tuple[datetime, Totals]]:
    """Return the totals per UTC hour of calls in hours that start in [start, end), oldest first."""
    table = call_rollups_hourly
    query = (
        select(table.c.hour, *_measures(table, latency=True))
        .where(table.c.hour >= start, table.c.hour < end)
        .group_by(table.c.hour)
        .order_by(table.c.hour)
    )
    with store.engine.connect() as connection:
        rows = connection.execute(query).mappings().all()
    return [(as_utc(row["hour"]), _totals(row)) for row in rows]


def daily_totals(
    store: Store,
    first_day: date,
    last_day: date,
    by: Sequence[DailyGrouping],
    *,
    latency: bool = True,
) -> list[tuple[tuple[Any, ...], Totals]]:
    """Return the totals of calls per value of `by`, from `first_day` to `last_day` (UTC).

    Both days are included. Without `latency`, the latency sums and
    histogram are not read and stay 0; on the million-call store of
    benchmarks/dashboard_render.py that halves the time of each query.
    """
    table = call_rollups_daily
    keys = [table.c[name] for name in by]
    query = (
        select(*keys, *_measures(table, latency=latency))
        .where(table.c.day >= first_day, table.c.day <= last_day)
        .group_by(*keys)
    )
    with store.engine.connect() as connection:
        rows = connection.execute(query).mappings().all()
    results = []
    for row in rows:
        key = tuple(_day(row[name]) if name == "day" else row[name] for name in by)
        results.append((key, _totals(row)))
    return results


def _day(value: date | str) -> date:
    return date.fromisoformat(value) if isinstance(value, str) else value
