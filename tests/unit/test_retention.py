"""Deleting old records: ages, batches, and what is kept."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, update

from trunkline.errors import ConfigError
from trunkline.providers.fake import FakeReply, ScriptedModel
from trunkline.store.database import open_store
from trunkline.store.retention import MAX_AGE_DAYS, parse_age, prune, retention_age
from trunkline.store.runs import create_run, mark_run
from trunkline.store.tables import calls, runs, spans
from trunkline.store.writer import StoreWriter
from trunkline.tracing import add_exporter, remove_exporter
from unit.helpers import router_with


@pytest.mark.parametrize(
    ("text", "expected"),
    [("30d", timedelta(days=30)), ("12h", timedelta(hours=12)), ("90m", timedelta(minutes=90)),
     ("2w", timedelta(weeks=2)), ("1.5d", timedelta(days=1.5))],
)
def test_parse_age(text, expected) -> None:
    assert parse_age(text) == expected


@pytest.mark.parametrize("text", ["30", "d", "-1d", "0d", "30 days", ""])
def test_parse_age_rejects_other_forms(text) -> None:
    with pytest.raises(ConfigError, match="30d"):
        parse_age(text)


@pytest.mark.parametrize(
    "text",
    ["1000000w", "99999999999d", "36501d", "5256001h", pytest.param("9" * 400 + "d", id="400 digits")],
)
def test_parse_age_rejects_too_large(text) -> None:
    with pytest.raises(ConfigError, match="above the maximum of 36500d"):
        parse_age(text)


def test_parse_age_accepts_maximum() -> None:
    assert parse_age(f"{MAX_AGE_DAYS}d") == timedelta(days=MAX_AGE_DAYS)


def test_retention_age_checks_maximum() -> None:
    assert retention_age(1.5) == timedelta(days=1.5)
    message = re.escape("retention_days = 1e+12 under [store] is above the maximum")
    with pytest.raises(ConfigError, match=message):
        retention_age(1e12)


def count(store, table) -> int:  # noqa: ANN001
    with store.engine.connect() as connection:
        return connection.execute(select(func.count()).select_from(table)).scalar_one()


async def record_calls(store, number: int) -> None:  # noqa: ANN001
    writer = StoreWriter(store)
    add_exporter(writer)
    try:
        router = router_with(ScriptedModel(default=FakeReply("x")))
        for _ in range(number):
            await router.complete("hi")
    finally:
        remove_exporter(writer)
        writer.close()


async def test_prune_deletes_old_records_in_batches(store_url) -> None:
    store = open_store(store_url)
    await record_calls(store, 12)
    long_ago = datetime.now(UTC) - timedelta(days=40)
    with store.engine.begin() as connection:
        old_ids = [row.call_id for row in connection.execute(select(calls.c.call_id).limit(7))]
        connection.execute(update(calls).where(calls.c.call_id.in_(old_ids)).values(started_at=long_ago))
        connection.execute(update(spans).values(started_at=long_ago))
    for run_id, status in (("old-done", "done"), ("old-running", "running")):
        create_run(store, run_id=run_id, workflow="w", workflow_path=None, data_path=None,
                   data_hash=None, params={}, row_count=0)
        mark_run(store, run_id, status=status)
    with store.engine.begin() as connection:
        connection.execute(update(runs).values(started_at=long_ago))

    cutoff = datetime.now(UTC) - timedelta(days=30)
    planned = prune(store, cutoff, dry_run=True)
    assert planned == {"calls": 7, "spans": 12, "runs": 1, "run_rows": 0}
    assert count(store, calls) == 12

    deleted = prune(store, cutoff, batch_size=3)
    assert deleted == planned
    assert count(store, calls) == 5
    assert count(store, spans) == 0
    with store.engine.connect() as connection:
        remaining = [row.run_id for row in connection.execute(select(runs.c.run_id))]
    assert remaining == ["old-running"]
    store.dispose()


async def test_prune_keeps_records_of_running_runs(store_url) -> None:
    store = open_store(store_url)
    await record_calls(store, 6)
    for run_id, status in (("done-run", "done"), ("running-run", "running")):
        create_run(store, run_id=run_id, workflow="w", workflow_path=None, data_path=None,
                   data_hash=None, params={}, row_count=0)
        mark_run(store, run_id, status=status)
    long_ago = datetime.now(UTC) - timedelta(days=40)
    with store.engine.begin() as connection:
        query = select(calls.c.call_id, calls.c.span_id).order_by(calls.c.call_id)
        rows = connection.execute(query).all()
        # Two calls per run, and two calls made outside any run.
        for run_id, pair in (("running-run", rows[:2]), ("done-run", rows[2:4])):
            call_ids = [row.call_id for row in pair]
            span_ids = [row.span_id for row in pair]
            connection.execute(
                update(calls).where(calls.c.call_id.in_(call_ids)).values(run_id=run_id)
            )
            connection.execute(
                update(spans).where(spans.c.span_id.in_(span_ids)).values(run_id=run_id)
            )
        for table in (calls, spans, runs):
            connection.execute(update(table).values(started_at=long_ago))

    cutoff = datetime.now(UTC) - timedelta(days=30)
    planned = prune(store, cutoff, dry_run=True)
    assert planned == {"calls": 4, "spans": 4, "runs": 1, "run_rows": 0}
    deleted = prune(store, cutoff, batch_size=3)
    assert deleted == planned
    with store.engine.connect() as connection:
        kept_calls = {row.run_id for row in connection.execute(select(calls.c.run_id))}
        kept_spans = [row.run_id for row in connection.execute(select(spans.c.run_id))]
        kept_runs = [row.run_id for row in connection.execute(select(runs.c.run_id))]
    assert count(store, calls) == 2
    assert kept_calls == {"running-run"}
    assert kept_spans == ["running-run", "running-run"]
    assert kept_runs == ["running-run"]
    store.dispose()
