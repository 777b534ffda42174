"""Storing a distributed run's rows with their records once, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import func, select

from trunkline.store import open_store
from trunkline.store.runs import RowWithRecords, all_rows, create_run, run_spend, store_rows_once
from trunkline.store.stats import daily_totals
from trunkline.store.tables import spans
from trunkline.store.writer import call_row, span_row
from unit.helpers import make_record
from unit.test_store_copy import DAY, span


def row(index: int, status: str = "ok") -> dict:
    return {
        "run_id": "run-1",
        "row_index": index,
        "row_hash": "h",
        "status": status,
        "output": "yes" if status == "ok" else None,
        "expected": "yes",
        "score": 1.0 if status == "ok" else 0.0,
        "error": None if status == "ok" else "step ask: timeout: slow",
        "latency_ms": 12.0,
        "input_tokens": 10,
        "output_tokens": 2,
        "cost_usd": 0.5,
        "price_missing": False,
        "retries": 0,
        "fallbacks": 0,
        "finished_at": datetime.now(UTC),
        "details": None,
    }


def attempt(index: int, call_number: int, status: str = "ok") -> RowWithRecords:
    """Row `index` with one call, numbered `call_number` so that each attempt's call is distinct."""
    record = make_record(call_number, run_id="run-1", cost=0.5)
    return RowWithRecords(row(index, status), [call_row(record)], [span_row(span(call_number))])


def rolled_up_calls(store) -> int:  # noqa: ANN001
    return sum(totals.calls for _, totals in daily_totals(store, DAY.date(), DAY.date(), ["model"]))


def open_run(store_url: str):  # noqa: ANN201
    store = open_store(store_url)
    create_run(
        store, run_id="run-1", workflow="w", workflow_path=None, data_path=None,
        data_hash=None, params={}, row_count=3,
    )  # fmt: skip
    return store


def test_rows_are_stored_with_their_calls_spans_and_rollups(store_url) -> None:
    store = open_run(store_url)
    assert store_rows_once(store, [attempt(0, 1), attempt(1, 2)]) == [True, True]
    assert [stored["row_index"] for stored in all_rows(store, "run-1")] == [0, 1]
    assert run_spend(store, "run-1")["calls"] == 2
    assert rolled_up_calls(store) == 2
    with store.engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(spans)).scalar_one() == 2


def test_second_attempt_of_an_ok_row_writes_nothing(store_url) -> None:
    store = open_run(store_url)
    store_rows_once(store, [attempt(0, 1)])
    assert store_rows_once(store, [attempt(0, 2), attempt(1, 3)]) == [False, True]
    assert run_spend(store, "run-1")["calls"] == 2
    assert rolled_up_calls(store) == 2


def test_ok_attempt_replaces_a_failed_one(store_url) -> None:
    store = open_run(store_url)
    store_rows_once(store, [attempt(0, 1, status="error")])
    assert store_rows_once(store, [attempt(0, 2)]) == [True]
    (stored,) = all_rows(store, "run-1")
    assert stored["status"] == "ok"
    # Both attempts were paid for, so both calls count in the run's spend.
    assert run_spend(store, "run-1")["calls"] == 2
