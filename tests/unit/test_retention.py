"""Deleting old records: ages, batches, and what is kept."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, update

from trunkline.errors import ConfigError
from trunkline.providers.fake import FakeReply, ScriptedModel
from trunkline.store.database import open_store
from trunkline.store.retention import parse_age, prune
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


def count(store, table) -> int:  # noqa: ANN001
    with store.engine.connect() as connection:
        return connection.execute(select(func.count()).select_from(table)).scalar_one()


async def test_prune_deletes_old_records_in_batches(tmp_path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'r.db'}")
    writer = StoreWriter(store)
    add_exporter(writer)
    try:
        router = router_with(ScriptedModel(default=FakeReply("x")))
        for _ in range(12):
            await router.complete("hi")
    finally:
        remove_exporter(writer)
        writer.close()
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
