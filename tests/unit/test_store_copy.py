"""Copying a SQLite store into another store, SQLite or PostgreSQL: every row once, rollups counted once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from trunkline.errors import StoreError
from trunkline.prompts import PromptContent, PromptRegistry
from trunkline.store import StoreWriter, open_store
from trunkline.store.copy import COPIED_TABLES, copy_store
from trunkline.store.keys import KeyLimits, Role, create_key, find_key, revoke_key
from trunkline.store.queries import list_calls
from trunkline.store.batches import save_batch
from trunkline.store.runs import create_run
from trunkline.store.stats import daily_totals
from trunkline.store.tables import call_rollups_daily, call_rollups_hourly
from trunkline.types import CallRecord
from trunkline.types.spans import SpanRecord
from unit.helpers import make_record

DAY = datetime(2026, 12, 1, 12, tzinfo=UTC)


def call(index: int, run_id: str | None = "run-1") -> CallRecord:
    return make_record(index, run_id=run_id, cost=0.5 if index % 2 else None, outcome="ok" if index % 3 else "error")


def span(index: int) -> SpanRecord:
    started = DAY + timedelta(minutes=index)
    return SpanRecord(
        span_id=f"{index:016x}",
        trace_id="a" * 32,
        name=f"chat {index}",
        kind="call",
        started_at=started,
        ended_at=started + timedelta(milliseconds=40),
        attributes={"call_id": f"{index:032x}", "nested": {"b": 1, "a": [1, 2]}},
    )


@pytest.fixture
def source(tmp_path):
    """A SQLite store with calls, spans, a run and its rows, prompts, keys and an audit log."""
    store = open_store(f"sqlite:///{tmp_path / 'laptop.db'}")
    create_run(
        store, run_id="run-1", workflow="triage", workflow_path=None, data_path=None,
        data_hash=None, params={"limit": 5}, row_count=2,
    )  # fmt: skip
    save_batch(
        store, batch_id="batch_1", run_id="run-1", step="classify", deployment="gpt",
        provider="openai", input_file_id="file-1", status="completed",
        rows={"run-1:classify:1": {"row_index": 1, "values": {"message": "hi"}, "calls": []}}, created_at=DAY,
    )  # fmt: skip
    writer = StoreWriter(store, flush_interval_s=0.01)
    for index in range(25):
        writer.export_call(call(index))
        writer.export_span(span(index))
    writer.put_run_row(
        {
            "run_id": "run-1", "row_index": 0, "row_hash": "h0", "status": "ok", "output": {"label": "card"},
            "latency_ms": 5.0, "input_tokens": 3, "output_tokens": 4, "price_missing": False,
            "retries": 0, "fallbacks": 0, "finished_at": DAY,
        }
    )  # fmt: skip
    writer.close()
    registry = PromptRegistry(store)
    content = PromptContent.model_validate({"messages": [{"role": "user", "content": "Classify: {{ message }}"}]})
    registry.create_version("triage", content, author="ana")
    registry.set_label("triage", 1, "production", moved_by="ana")
    new = create_key(store, Role.DEVELOPER, name="laptop", limits=KeyLimits(rpm=60), actor="cli:ana")
    revoke_key(store, new.key.key_id, actor="cli:ana")
    yield store
    store.dispose()


def counts(store) -> dict[str, int]:
    with store.engine.connect() as connection:
        return {
            table.name: connection.execute(select(func.count()).select_from(table)).scalar_one()
            for table in (*COPIED_TABLES, call_rollups_daily, call_rollups_hourly)
        }


def day_totals(store) -> list[tuple]:
    rows = daily_totals(store, DAY.date(), DAY.date(), ["model", "outcome"])
    return sorted((key, totals.calls, totals.errors, totals.input_tokens, totals.output_tokens) for key, totals in rows)


def test_copy_every_row(source, store_url) -> None:
    target = open_store(store_url)
    results = copy_store(source, target, batch_size=7)

    assert {result.table: result.copied for result in results} == {
        name: count for name, count in counts(source).items() if not name.startswith("call_rollups")
    }
    assert counts(target) == counts(source)
    assert day_totals(target) == day_totals(source)
    copied_calls = {row["call_id"]: row for row in list_calls(target, limit=100)}
    for row in list_calls(source, limit=100):
        assert copied_calls[row["call_id"]] == row
    assert find_key(target, "tk-nope") is None
    assert PromptRegistry(target).get("triage:production").version == 1
    target.dispose()


def test_second_copy_adds_nothing(source, store_url) -> None:
    target = open_store(store_url)
    copy_store(source, target)
    before = counts(target)
    again = copy_store(source, target)
    assert sum(result.copied for result in again) == 0
    assert all(result.present == result.read for result in again)
    assert counts(target) == before
    assert day_totals(target) == day_totals(source)
    target.dispose()


def test_copy_into_store_with_calls(source, store_url) -> None:
    target = open_store(store_url)
    writer = StoreWriter(target, flush_interval_s=0.01)
    # One call both stores have, and one only the target has.
    writer.export_call(call(3))
    writer.export_call(call(100, run_id=None))
    writer.close()
    copy_store(source, target)
    with target.engine.connect() as connection:
        calls_counted = connection.execute(select(func.sum(call_rollups_daily.c.calls))).scalar_one()
    assert int(calls_counted) == 26
    assert len(list_calls(target, limit=100)) == 26
    target.dispose()


def test_copy_needs_latest_revisions(tmp_path, source) -> None:
    old = open_store(f"sqlite:///{tmp_path / 'old.db'}", migrate=False)
    with pytest.raises(StoreError, match="trunkline db migrate"):
        copy_store(source, old)
    with pytest.raises(StoreError, match="the same store"):
        copy_store(source, source)
    old.dispose()
