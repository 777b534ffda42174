"""Keeping the rollups in step with `calls`: the daily and hourly sums the dashboard reads.

`StoreWriter` passes the call rows it has just inserted to `add_calls` in the
same transaction, so a committed call is counted once and only once.
`rebuild_rollups` computes both tables again from the stored calls with the
same code; migration 0008 runs it for the calls stored before the tables
existed.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Table, and_, delete, select, update

from trunkline.store.bulk import UPSERT_DIALECTS, PreparedInsert
from trunkline.store.database import as_utc
from trunkline.store.tables import (
    LATENCY_BOUNDS_MS,
    call_rollups_daily,
    call_rollups_hourly,
    calls,
    latency_bucket_columns,
    runs,
)

#: The columns that identify one row of each rollup.
DAILY_KEY = ("day", "route", "model", "api_key_id", "workflow", "outcome")
HOURLY_KEY = ("hour", "outcome")

_COUNTERS = (
    "calls",
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
_BUCKETS = tuple(latency_bucket_columns())
#: The columns that are summed, in the order `RollupSums` keeps them.
SUMMED_COLUMNS = _COUNTERS + _BUCKETS

#: The columns of `calls` that a rollup reads.
CALL_COLUMNS = (
    calls.c.started_at,
    calls.c.route,
    calls.c.model_served,
    calls.c.model_requested,
    calls.c.api_key_id,
    calls.c.run_id,
    calls.c.outcome,
    calls.c.input_tokens,
    calls.c.output_tokens,
    calls.c.cache_read_tokens,
    calls.c.reasoning_tokens,
    calls.c.cost_usd,
    calls.c.price_missing,
    calls.c.latency_ms,
    calls.c.retry_count,
    calls.c.fallback_count,
)

# SQLite allows 32,766 parameters per statement; this stays far below it.
_IDS_PER_QUERY = 500


def hour_of(moment: datetime) -> datetime:
    """Return the start of the UTC hour that contains `moment`; naive times are taken as UTC."""
    return as_utc(moment).replace(minute=0, second=0, microsecond=0)


def latency_bucket(latency_ms: float) -> int:
    """Return the index of the histogram bucket that counts `latency_ms`.

    Bucket i counts latencies above bound i-1 and at most bound i; the last
    bucket counts those above every bound.
    """
    return bisect_left(LATENCY_BOUNDS_MS, latency_ms)


class RollupSums:
    """Sums of call rows by rollup key, to be added to both rollups in one statement each."""

    def __init__(self) -> None:
        self.daily: dict[tuple[Any, ...], list[float]] = {}
        self.hourly: dict[tuple[Any, ...], list[float]] = {}

    def add(self, row: Mapping[str, Any], workflow: str) -> None:
        """Count one `calls` row, made by a run of `workflow` ('' for none)."""
        hour = hour_of(row["started_at"])
        outcome = row["outcome"]
        model = row["model_served"] or row["model_requested"]
        day_key = (hour.date(), row["route"], model, row["api_key_id"] or "", workflow, outcome)
        for sums in (_sums(self.daily, day_key), _sums(self.hourly, (hour, outcome))):
            sums[0] += 1
            sums[1] += row["input_tokens"]
            sums[2] += row["output_tokens"]
            sums[3] += row["cache_read_tokens"]
            sums[4] += row["reasoning_tokens"]
            # A call without a price adds nothing to the cost and is counted apart.
            sums[5] += row["cost_usd"] or 0.0
            sums[6] += 1 if row["price_missing"] else 0
            sums[7] += row["retry_count"]
            sums[8] += row["fallback_count"]
            sums[9] += row["latency_ms"]
            sums[len(_COUNTERS) + latency_bucket(row["latency_ms"])] += 1

    def write(self, connection: Connection) -> None:
        """Add these sums to the rollups, creating the rows that do not exist yet."""
        _write(connection, call_rollups_daily, DAILY_KEY, self.daily)
        _write(connection, call_rollups_hourly, HOURLY_KEY, self.hourly)


def _sums(table: dict[tuple[Any, ...], list[float]], key: tuple[Any, ...]) -> list[float]:
    sums = table.get(key)
    if sums is None:
        sums = table[key] = [0] * len(SUMMED_COLUMNS)
    return sums


# Adding to a stored row on conflict, compiled once per database.
_UPSERTS = {
    table.name: PreparedInsert(table, on_conflict="add", conflict_columns=key, add_columns=SUMMED_COLUMNS)
    for table, key in ((call_rollups_daily, DAILY_KEY), (call_rollups_hourly, HOURLY_KEY))
}


def _write(
    connection: Connection,
    table: Table,
    key_columns: tuple[str, ...],
    sums: dict[tuple[Any, ...], list[float]],
) -> None:
    rows = []
    # Sorted by key, so that concurrent writers on PostgreSQL lock the rows
    # in one order; writers that lock them in opposite orders can deadlock.
    for key, values in sorted(sums.items()):
        row = dict(zip(key_columns, key, strict=True))
        row.update(zip(SUMMED_COLUMNS, values, strict=True))
        rows.append(row)
    if not rows:
        return
    if connection.dialect.name in UPSERT_DIALECTS:
        _UPSERTS[table.name].execute(connection, rows)
        return
    for row in rows:
        _add_row(connection, table, key_columns, row)


def _add_row(
    connection: Connection, table: Table, key_columns: tuple[str, ...], row: dict[str, Any]
) -> None:
    """Add one row's sums without an upsert, for databases other than SQLite and PostgreSQL."""
    matches = and_(*(table.c[name] == row[name] for name in key_columns))
    changes = {name: table.c[name] + row[name] for name in SUMMED_COLUMNS}
    result = connection.execute(update(table).where(matches).values(changes))
    if result.rowcount == 0:
        connection.execute(table.insert().values(row))


def add_calls(connection: Connection, rows: Iterable[Mapping[str, Any]]) -> None:
    """Add `calls` rows just inserted in this transaction to the rollup.

    A call of a run counts under the run's workflow, read from `runs` now.
    A call whose run is not stored yet counts as a call outside runs, and
    stays there even after its run is stored.
    """
    rows = list(rows)
    run_ids = sorted({row["run_id"] for row in rows if row["run_id"]})
    workflows = _workflows(connection, run_ids)
    sums = RollupSums()
    for row in rows:
        sums.add(row, workflows.get(row["run_id"], ""))
    sums.write(connection)


def _workflows(connection: Connection, run_ids: list[str]) -> dict[str, str]:
    workflows: dict[str, str] = {}
    for start in range(0, len(run_ids), _IDS_PER_QUERY):
        chunk = run_ids[start : start + _IDS_PER_QUERY]
        query = select(runs.c.run_id, runs.c.workflow).where(runs.c.run_id.in_(chunk))
        workflows.update({row.run_id: row.workflow for row in connection.execute(query)})
    return workflows


def rebuild_rollups(connection: Connection, *, chunk_size: int = 20_000) -> int:
    """Replace both rollups with the sums of every stored call; return the number of calls read.

    Calls are read `chunk_size` rows at a time, and only the sums are kept
    in memory: one entry per rollup row.
    """
    query = select(runs.c.run_id, runs.c.workflow)
    workflows = {row.run_id: row.workflow for row in connection.execute(query)}
    sums = RollupSums()
    count = 0
    # On the statement, not the connection: Connection.execution_options changes
    # the connection itself, and PostgreSQL would then stream the DELETEs below too.
    result = connection.execute(select(*CALL_COLUMNS).execution_options(yield_per=chunk_size))
    for row in result.mappings():
        sums.add(row, workflows.get(row["run_id"], ""))
        count += 1
    connection.execute(delete(call_rollups_daily))
    connection.execute(delete(call_rollups_hourly))
    sums.write(connection)
    return count
