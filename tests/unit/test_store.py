"""The store: migrations, the background writer, queries and crash safety."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import UTC

import pytest
from sqlalchemy import inspect

from trunkline.errors import StoreError
from trunkline.store import StoreWriter, open_store
from trunkline.store.queries import cost_summary, get_call, list_calls
from unit.helpers import make_record


@pytest.fixture
def store(store_url):
    store = open_store(store_url)
    yield store
    store.dispose()


def test_migration_creates_tables(store) -> None:
    tables = set(inspect(store.engine).get_table_names())
    assert {"calls", "spans", "runs", "run_rows", "alembic_version"} <= tables
    assert store.current_revision() == store.head_revision()


def test_sqlite_uses_wal(tmp_path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'records.db'}")
    with store.engine.connect() as connection:
        mode = connection.exec_driver_sql("PRAGMA journal_mode").scalar()
    store.dispose()
    assert mode == "wal"


def test_writer_round_trip(store) -> None:
    writer = StoreWriter(store, batch_size=7, flush_interval_s=0.05)
    records = [make_record(index) for index in range(25)]
    for record in records:
        writer.export_call(record)
    assert writer.flush(timeout_s=10)
    writer.close()
    assert len(list_calls(store, limit=100)) == 25
    assert get_call(store, records[3].call_id) == records[3]


def test_close_flushes_queue(store) -> None:
    writer = StoreWriter(store, batch_size=1000, flush_interval_s=60)
    for index in range(10):
        writer.export_call(make_record(index))
    writer.close()
    assert len(list_calls(store, limit=100)) == 10


def test_duplicate_record_kept_once(store) -> None:
    writer = StoreWriter(store, flush_interval_s=0.01)
    writer.export_call(make_record(1))
    writer.export_call(make_record(1))
    writer.close()
    assert len(list_calls(store)) == 1
    assert writer.failed_rows == 0


def test_get_call_unknown_id(store) -> None:
    with pytest.raises(StoreError, match="no call with id"):
        get_call(store, "ffff")


def test_get_call_ambiguous_prefix(store) -> None:
    writer = StoreWriter(store, flush_interval_s=0.01)
    writer.export_call(make_record(1))
    writer.export_call(make_record(2))
    writer.close()
    with pytest.raises(StoreError, match="matches several"):
        get_call(store, "0000")


def test_costs_by_model_keep_unpriced_apart(store) -> None:
    writer = StoreWriter(store, flush_interval_s=0.01)
    writer.export_call(make_record(1, model="priced", cost=0.5))
    writer.export_call(make_record(2, model="priced", cost=0.25))
    writer.export_call(make_record(3, model="unknown", cost=None))
    writer.close()
    rows = {row["key"]: row for row in cost_summary(store, "model")}
    assert rows["priced"]["cost_usd"] == pytest.approx(0.75)
    assert rows["priced"]["unpriced_calls"] == 0
    assert rows["unknown"]["cost_usd"] is None
    assert rows["unknown"]["unpriced_calls"] == 1
    assert rows["priced"]["cache_read_tokens"] == 4


def test_costs_by_day_and_run(store) -> None:
    writer = StoreWriter(store, flush_interval_s=0.01)
    writer.export_call(make_record(1, day=0, run_id="a"))
    writer.export_call(make_record(2, day=1, run_id="b"))
    writer.export_call(make_record(3, day=1, run_id="b"))
    writer.close()
    days = {row["key"]: row["calls"] for row in cost_summary(store, "day")}
    runs = {row["key"]: row["calls"] for row in cost_summary(store, "run")}
    assert days == {"2026-12-01": 1, "2026-12-02": 2}
    assert runs == {"a": 1, "b": 2}


def test_crash_keeps_committed_batches(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'crash.db'}"
    script = textwrap.dedent(
        f"""
        import os, sys
        sys.path.insert(0, {str(tmp_path.parent)!r})
        from trunkline.store import StoreWriter, open_store
        from unit.test_store import make_record
        writer = StoreWriter(open_store({url!r}), batch_size=10, flush_interval_s=60)
        for index in range(30):
            writer.export_call(make_record(index))
        writer.flush()
        for index in range(30, 35):
            writer.export_call(make_record(index))
        os._exit(1)
        """
    )
    tests_folder = __file__.rsplit("/unit/", 1)[0]
    completed = subprocess.run(
        [sys.executable, "-c", script], cwd=tests_folder, capture_output=True, text=True, timeout=60,
        env={"PYTHONPATH": tests_folder, "PATH": "/usr/bin:/bin"},
    )
    assert completed.returncode == 1, completed.stderr
    reopened = open_store(url)
    stored = len(list_calls(reopened, limit=100))
    assert 30 <= stored <= 35


def test_unreachable_database_raises_store_error(tmp_path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(StoreError, match="cannot create"):
        open_store(f"sqlite:///{blocker / 'sub' / 'x.db'}")


def test_migrations_match_table_definitions(store) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from trunkline.store.tables import metadata

    with store.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), metadata)
    assert differences == []


@pytest.mark.parametrize("url", ["notaurl", "mysql://user@127.0.0.1/x"])
def test_unusable_store_url(url) -> None:
    with pytest.raises(StoreError):
        open_store(url)


def test_must_exist_rejects_missing_file(tmp_path) -> None:
    with pytest.raises(StoreError, match="no store at"):
        open_store(f"sqlite:///{tmp_path / 'absent.db'}", must_exist=True)
    assert not (tmp_path / "absent.db").exists()


def test_upgrade_from_oldest_revision(tmp_path) -> None:
    from alembic import command

    from trunkline.store.database import Store, _alembic_config

    url = f"sqlite:///{tmp_path / 'old.db'}"
    old = Store(url)
    config = _alembic_config()
    with old.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0001")
        connection.exec_driver_sql(
            "INSERT INTO runs (run_id, workflow, params, status, started_at) "
            "VALUES ('r-old', 'w', '{}', 'done', '2026-12-01 00:00:00')"
        )
    old.dispose()
    upgraded = open_store(url)
    with upgraded.engine.connect() as connection:
        row = connection.exec_driver_sql("SELECT run_id, workflow_hash FROM runs").one()
    assert upgraded.current_revision() == upgraded.head_revision()
    assert tuple(row) == ("r-old", None)


def test_unconvertible_record_does_not_stop_writer(store) -> None:
    writer = StoreWriter(store, flush_interval_s=0.01)
    broken = make_record(1).model_copy(update={"usage": None})
    writer.export_call(broken)
    writer.export_call(make_record(2))
    writer.close()
    assert writer.failed_rows == 1
    assert len(list_calls(store)) == 1


def test_listed_times_are_utc(store) -> None:
    writer = StoreWriter(store, flush_interval_s=0.01)
    writer.export_call(make_record(1))
    writer.close()
    assert list_calls(store)[0]["started_at"].tzinfo is UTC
