"""The dashboard's rollups: kept by the writer, equal to sums over calls, filled on migration."""

from __future__ import annotations

import random
from bisect import bisect_left
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import pytest
from alembic import command
from sqlalchemy import select

from trunkline.store.database import Store, _alembic_config, as_utc, open_store
from trunkline.store.rollups import SUMMED_COLUMNS, rebuild_rollups
from trunkline.store.runs import create_run
from trunkline.store.stats import latency_percentile
from trunkline.store.tables import (
    LATENCY_BOUNDS_MS,
    call_rollups_daily,
    call_rollups_hourly,
    calls,
    latency_bucket_columns,
    runs,
)
from trunkline.store.writer import API_KEY_TAG, StoreWriter, call_row
from trunkline.types import CallRecord, Cost, Message, Usage

START = datetime(2026, 11, 28, 21, 0, tzinfo=UTC)


def make_record(index: int, rng: random.Random) -> CallRecord:
    started = START + timedelta(
        minutes=rng.randint(0, 60 * 72), microseconds=rng.randint(0, 999_999)
    )
    latency = rng.choice(
        [3.0, 5.0, 12.5, 99.9, 100.0, 480.0, 2_000.0, 130_000.0, rng.uniform(1, 9000)]
    )
    model = rng.choice(["m1", "m2", "free-model"])
    failed = rng.random() < 0.2
    return CallRecord(
        call_id=f"{index:032x}",
        trace_id=f"{index % 17:032x}",
        span_id=f"{index:016x}",
        run_id=rng.choice([None, None, "run-a", "run-b", "run-unknown"]),
        tags={API_KEY_TAG: rng.choice(["k1", "k2"])} if rng.random() < 0.5 else {},
        route=rng.choice(["chat", "sum"]),
        model_requested="m1",
        model_served=None if failed else model,
        messages=[Message.user("question")],
        usage=Usage(
            input_tokens=rng.randint(0, 500),
            output_tokens=rng.randint(0, 90),
            cache_read_tokens=rng.randint(0, 5),
            reasoning_tokens=rng.randint(0, 5),
        ),
        cost=Cost.missing() if model == "free-model" else Cost(total_usd=rng.uniform(0, 0.01)),
        started_at=started,
        ended_at=started + timedelta(milliseconds=latency),
        latency_ms=latency,
        outcome="error" if failed else "ok",
        error_kind="server_error" if failed else None,
    )


@pytest.fixture
def store(store_url) -> Store:
    store = open_store(store_url)
    create_run(
        store,
        run_id="run-a",
        workflow="triage",
        workflow_path=None,
        data_path=None,
        data_hash=None,
        params={},
        row_count=0,
    )
    create_run(
        store,
        run_id="run-b",
        workflow="summary",
        workflow_path=None,
        data_path=None,
        data_hash=None,
        params={},
        row_count=0,
    )
    yield store
    store.dispose()


def write(store: Store, records: list[CallRecord], *, batch_size: int = 200) -> None:
    writer = StoreWriter(store, batch_size=batch_size, flush_interval_s=0.01)
    for record in records:
        writer.export_call(record)
    writer.close()
    assert writer.failed_rows == 0


def direct_sums(store: Store) -> tuple[dict, dict]:
    """Sum the stored calls per daily and per hourly key, straight from the calls table."""
    with store.engine.connect() as connection:
        workflows = dict(connection.execute(select(runs.c.run_id, runs.c.workflow)).all())
        rows = connection.execute(select(calls)).mappings().all()
    daily: dict = defaultdict(lambda: defaultdict(float))
    hourly: dict = defaultdict(lambda: defaultdict(float))
    for row in rows:
        started = as_utc(row["started_at"])
        hour = started.replace(minute=0, second=0, microsecond=0)
        model = row["model_served"] or row["model_requested"]
        day_key = (
            started.date(),
            row["route"],
            model,
            row["api_key_id"] or "",
            workflows.get(row["run_id"], ""),
            row["outcome"],
        )
        bucket = sum(1 for bound in LATENCY_BOUNDS_MS if row["latency_ms"] > bound)
        for sums in (daily[day_key], hourly[(hour, row["outcome"])]):
            sums["calls"] += 1
            for name in ("input_tokens", "output_tokens", "cache_read_tokens", "reasoning_tokens"):
                sums[name] += row[name]
            sums["latency_ms_sum"] += row["latency_ms"]
            sums["cost_usd"] += row["cost_usd"] or 0.0
            sums["unpriced_calls"] += 1 if row["price_missing"] else 0
            sums["retries"] += row["retry_count"]
            sums["fallbacks"] += row["fallback_count"]
            sums[latency_bucket_columns()[bucket]] += 1
    return daily, hourly


def rollup_rows(store: Store) -> tuple[dict, dict]:
    with store.engine.connect() as connection:
        daily_rows = connection.execute(select(call_rollups_daily)).mappings().all()
        hourly_rows = connection.execute(select(call_rollups_hourly)).mappings().all()
    daily = {
        (
            row["day"],
            row["route"],
            row["model"],
            row["api_key_id"],
            row["workflow"],
            row["outcome"],
        ): {name: row[name] for name in SUMMED_COLUMNS}
        for row in daily_rows
    }
    hourly = {
        (as_utc(row["hour"]), row["outcome"]): {name: row[name] for name in SUMMED_COLUMNS}
        for row in hourly_rows
    }
    return daily, hourly


def assert_same_sums(rolled: dict, direct: dict) -> None:
    assert set(rolled) == set(direct)
    for key, sums in rolled.items():
        for name in SUMMED_COLUMNS:
            assert sums[name] == pytest.approx(direct[key].get(name, 0), rel=1e-9, abs=1e-9), (
                key,
                name,
            )


def test_writer_rollups_equal_direct_sums(store) -> None:
    rng = random.Random(3)
    write(store, [make_record(index, rng) for index in range(600)], batch_size=37)
    daily, hourly = rollup_rows(store)
    expected_daily, expected_hourly = direct_sums(store)
    assert_same_sums(daily, expected_daily)
    assert_same_sums(hourly, expected_hourly)
    assert sum(sums["calls"] for sums in daily.values()) == 600


def test_duplicate_calls_counted_once(store) -> None:
    rng = random.Random(4)
    records = [make_record(index, rng) for index in range(20)]
    write(store, records + records[:5])
    write(store, records[3:8])
    daily, hourly = rollup_rows(store)
    assert sum(sums["calls"] for sums in daily.values()) == 20
    assert sum(sums["calls"] for sums in hourly.values()) == 20
    assert_same_sums(daily, direct_sums(store)[0])


def test_rebuild_matches_writer(store) -> None:
    rng = random.Random(5)
    write(store, [make_record(index, rng) for index in range(300)], batch_size=11)
    by_writer = rollup_rows(store)
    with store.engine.begin() as connection:
        assert rebuild_rollups(connection, chunk_size=50) == 300
    rebuilt = rollup_rows(store)
    assert_same_sums(rebuilt[0], by_writer[0])
    assert_same_sums(rebuilt[1], by_writer[1])


def test_migration_backfills_rollups(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    old = Store(url)
    config = _alembic_config()
    rng = random.Random(6)
    with old.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0007")
        connection.execute(
            runs.insert().values(
                run_id="run-a",
                workflow="triage",
                params={},
                status="done",
                started_at=START,
            )
        )
        # Rows as the writer of revision 0007 stored them, before the rollups existed.
        # Without batch_id, a column that revision 0011 added later.
        old_rows = [call_row(make_record(index, rng)) for index in range(250)]
        connection.execute(
            calls.insert(), [{key: value for key, value in row.items() if key != "batch_id"} for row in old_rows]
        )
    old.dispose()
    upgraded = open_store(url)
    assert upgraded.current_revision() == upgraded.head_revision()
    daily, hourly = rollup_rows(upgraded)
    expected_daily, expected_hourly = direct_sums(upgraded)
    assert_same_sums(daily, expected_daily)
    assert_same_sums(hourly, expected_hourly)
    assert sum(sums["calls"] for sums in hourly.values()) == 250
    upgraded.dispose()


def test_call_of_unknown_run_counts_outside_runs(store) -> None:
    record = make_record(1, random.Random(7)).model_copy(update={"run_id": "run-unknown"})
    write(store, [record])
    daily, _ = rollup_rows(store)
    [key] = daily
    assert key[4] == ""


def histogram(latencies: list[float]) -> list[int]:
    counts = [0] * (len(LATENCY_BOUNDS_MS) + 1)
    for latency in latencies:
        counts[bisect_left(LATENCY_BOUNDS_MS, latency)] += 1
    return counts


def test_percentile_interpolates_inside_bucket() -> None:
    # 100 calls between 100 and 150 ms: the median's rank is 50 of 100 in that bucket.
    assert latency_percentile(histogram([120.0] * 100), 0.5) == pytest.approx(125.0)


def test_percentile_stays_in_true_bucket() -> None:
    rng = random.Random(8)
    latencies = sorted(rng.lognormvariate(6, 1) for _ in range(1000))
    for quantile in (0.5, 0.95):
        true = latencies[int(quantile * len(latencies)) - 1]
        estimate = latency_percentile(histogram(latencies), quantile)
        index = bisect_left(LATENCY_BOUNDS_MS, true)
        low = LATENCY_BOUNDS_MS[index - 1] if index else 0
        assert low <= estimate <= LATENCY_BOUNDS_MS[index]


def test_percentile_of_empty_and_overflow() -> None:
    assert latency_percentile(histogram([]), 0.5) is None
    assert latency_percentile(histogram([500_000.0] * 3), 0.95) == LATENCY_BOUNDS_MS[-1]
