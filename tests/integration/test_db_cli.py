"""`trunkline db migrate` and `trunkline db copy`, end to end in subprocesses."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from integration.cli import run_trunkline
from trunkline.store import StoreWriter, open_store
from trunkline.store.database import Store
from trunkline.store.queries import list_calls
from trunkline.types import CallRecord, Message, Usage


def _write_calls(url: str, count: int) -> None:
    store = open_store(url)
    writer = StoreWriter(store, flush_interval_s=0.01)
    started = datetime(2026, 12, 1, tzinfo=UTC)
    for index in range(count):
        writer.export_call(
            CallRecord(
                call_id=f"{index:032x}",
                trace_id="b" * 32,
                span_id=f"{index:016x}",
                route="main",
                model_requested="m1",
                messages=[Message.user("hi")],
                usage=Usage(input_tokens=4, output_tokens=2),
                started_at=started + timedelta(seconds=index),
                ended_at=started + timedelta(seconds=index, milliseconds=5),
                latency_ms=5.0,
                outcome="ok",
            )
        )
    writer.close()
    store.dispose()


def test_db_migrate_creates_then_reports(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    first = run_trunkline(tmp_path, "db", "migrate", url)
    assert first.returncode == 0, first.stderr
    assert f"upgraded from revision none (empty) to {Store.head_revision()}" in first.stdout

    second = run_trunkline(tmp_path, "db", "migrate", url)
    assert second.returncode == 0, second.stderr
    assert "is at the latest revision" in second.stdout


def test_db_copy_to_postgresql(tmp_path: Path, postgres_server) -> None:
    source = f"sqlite:///{tmp_path / 'laptop.db'}"
    _write_calls(source, 12)
    target = postgres_server.new_database()
    try:
        copied = run_trunkline(tmp_path, "db", "copy", source, target, "--batch-size", "5")
        assert copied.returncode == 0, copied.stderr
        assert "copied 12 rows" in copied.stdout

        again = run_trunkline(tmp_path, "db", "copy", source, target)
        assert again.returncode == 0, again.stderr
        assert "copied 0 rows" in again.stdout

        store = open_store(target)
        assert len(list_calls(store, limit=100)) == 12
        store.dispose()
    finally:
        postgres_server.drop_database(target)


def test_db_copy_missing_source(tmp_path: Path) -> None:
    result = run_trunkline(tmp_path, "db", "copy", f"sqlite:///{tmp_path / 'absent.db'}", f"sqlite:///{tmp_path / 'b.db'}")
    assert result.returncode == 2
    assert "no store at" in result.stderr
