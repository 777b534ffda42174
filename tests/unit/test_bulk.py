"""Prepared inserts store exactly what `Connection.execute` stores, and resolve conflicts as configured."""

from __future__ import annotations

import sqlite3
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import select

from conftest import STORE_BACKENDS
from trunkline.store import open_store
from trunkline.store.database import as_utc
from trunkline.store.bulk import PreparedInsert
from trunkline.store.tables import call_rollups_daily, calls, run_rows, spans
from trunkline.store.writer import call_row, span_row
from trunkline.types import CallRecord, Cost, Message, Usage
from trunkline.types.spans import SpanRecord


def record(index: int) -> CallRecord:
    started = datetime(2026, 12, 1, 12, 30, 15, 123456, tzinfo=UTC) + timedelta(seconds=index)
    return CallRecord(
        call_id=f"{index:032x}",
        trace_id="b" * 32,
        span_id=f"{index:016x}",
        route="main",
        provider="fake",
        model_requested="m1",
        messages=[Message.user(f"question {index}")],
        usage=Usage(input_tokens=index, output_tokens=2, estimated=index % 2 == 0),
        cost=Cost(total_usd=0.5) if index % 2 else Cost.missing(),
        started_at=started,
        ended_at=started + timedelta(milliseconds=12),
        latency_ms=12.0,
        outcome="ok",
        tags={"api_key": "k1"} if index % 2 else {},
    )


def span(index: int) -> SpanRecord:
    started = datetime(2026, 12, 1, 12, tzinfo=UTC) + timedelta(seconds=index)
    return SpanRecord(
        span_id=f"{index:016x}",
        trace_id="b" * 32,
        name=f"chat m{index}",
        kind="call",
        started_at=started,
        ended_at=started + timedelta(seconds=1),
        attributes={"n": index, "nested": {"ok": True}},
    )


def run_row(index: int, output: object) -> dict[str, object]:
    return {
        "run_id": "r1",
        "row_index": index,
        "row_hash": f"h{index}",
        "status": "ok",
        "output": output,
        "expected": None,
        "score": 0.5,
        "error": None,
        "latency_ms": 5.0,
        "input_tokens": 3,
        "output_tokens": 4,
        "cost_usd": None,
        "price_missing": True,
        "retries": 0,
        "fallbacks": 1,
        "finished_at": datetime(2026, 12, 1, tzinfo=UTC),
        # Left out on purpose: a missing key is stored as the column's NULL value.
    }


@pytest.fixture(params=STORE_BACKENDS)
def stores(request, tmp_path):
    """Two empty stores on one back end: one for the prepared inserts, one for SQLAlchemy's."""
    if request.param == "sqlite":
        urls = [f"sqlite:///{tmp_path / name}.db" for name in ("prepared", "sqlalchemy")]
    else:
        server = request.getfixturevalue("postgres_server")
        urls = [server.new_database() for _ in range(2)]
    opened = [open_store(url) for url in urls]
    yield opened
    for store in opened:
        store.dispose()
    if request.param != "sqlite":
        for url in urls:
            server.drop_database(url)


def raw_rows(store, table: str) -> list[tuple]:
    """Every stored value, ordered by the first columns.

    On SQLite each value comes with its storage class, so text and numbers
    cannot pass for each other. PostgreSQL's columns have one type each.
    """
    if store.engine.dialect.name != "sqlite":
        with store.engine.connect() as connection:
            return [tuple(row) for row in connection.exec_driver_sql(f"SELECT * FROM {table} ORDER BY 1, 2")]
    path = store.engine.url.database
    with sqlite3.connect(path) as connection:
        columns = [row[1] for row in connection.execute(f"PRAGMA table_info({table})")]
        selected = ", ".join(f"{name}, typeof({name})" for name in columns)
        return connection.execute(f"SELECT {selected} FROM {table} ORDER BY 1, 3").fetchall()


def test_same_values_as_sqlalchemy(stores) -> None:
    prepared_store, reference_store = stores
    call_rows = [call_row(record(index)) for index in range(4)]
    span_rows = [span_row(span(index)) for index in range(3)]
    run_row_values = [run_row(0, None), run_row(1, {"label": "card"}), run_row(2, [1, 2])]
    with prepared_store.engine.begin() as connection:
        for table, rows in ((calls, call_rows), (spans, span_rows), (run_rows, run_row_values)):
            assert PreparedInsert(table).execute(connection, rows) == len(rows)
    with reference_store.engine.begin() as connection:
        for table, rows in ((calls, call_rows), (spans, span_rows), (run_rows, run_row_values)):
            connection.execute(table.insert(), [{**row, "details": None} if table is run_rows else row for row in rows])
    for table in ("calls", "spans", "run_rows"):
        assert raw_rows(prepared_store, table) == raw_rows(reference_store, table)
    with prepared_store.engine.connect() as connection:
        stored = connection.execute(select(calls.c.started_at, calls.c.usage_estimated).order_by(calls.c.call_id)).first()
    assert as_utc(stored.started_at) == datetime(2026, 12, 1, 12, 30, 15, 123456, tzinfo=UTC)
    assert stored.usage_estimated is True


def test_skip_keeps_stored_rows(stores) -> None:
    store = stores[0]
    insert = PreparedInsert(calls, on_conflict="skip")
    rows = [call_row(record(index)) for index in range(3)]
    with store.engine.begin() as connection:
        assert insert.execute(connection, rows[:2]) == 2
        changed = {**rows[0], "route": "other"}
        assert insert.execute(connection, [changed, rows[2]]) == 1
    with store.engine.connect() as connection:
        routes = connection.execute(select(calls.c.route)).scalars().all()
    assert routes == ["main"] * 3


def test_replace_and_add_conflicts(stores) -> None:
    store = stores[0]
    with store.engine.begin() as connection:
        PreparedInsert(run_rows, on_conflict="replace").execute(connection, [run_row(0, "first")])
        PreparedInsert(run_rows, on_conflict="replace").execute(connection, [run_row(0, "second")])
        key = {"day": date(2026, 12, 1), "route": "main", "model": "m1", "api_key_id": "", "workflow": "", "outcome": "ok"}
        add = PreparedInsert(
            call_rollups_daily, on_conflict="add", conflict_columns=list(key), add_columns=["calls", "cost_usd"]
        )
        zeros = {column.name: 0 for column in call_rollups_daily.columns if column.name not in key}
        add.execute(connection, [{**zeros, **key, "calls": 2, "cost_usd": 0.25}])
        add.execute(connection, [{**zeros, **key, "calls": 3, "cost_usd": 0.5}])
    with store.engine.connect() as connection:
        outputs = connection.execute(select(run_rows.c.output)).scalars().all()
        sums = connection.execute(select(call_rollups_daily.c.calls, call_rollups_daily.c.cost_usd)).all()
    assert outputs == ["second"]
    assert [tuple(row) for row in sums] == [(5, 0.75)]


def test_unknown_conflict_rule(stores) -> None:
    with stores[0].engine.begin() as connection, pytest.raises(ValueError, match="skip, add or replace"):
        PreparedInsert(calls, on_conflict="merge").execute(connection, [call_row(record(1))])
