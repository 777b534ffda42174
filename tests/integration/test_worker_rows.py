"""A worker's handling of delivered rows, against a real redis-server and a SQLite store, in process."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis.asyncio

from integration.test_cli import CONFIG, write_project
from trunkline.config import Settings
from trunkline.store import StoreWriter, open_store
from trunkline.store.runs import all_rows, run_spend
from trunkline.tracing import add_exporter, new_span_id, new_trace_id, remove_exporter
from trunkline.workers.rows import RowCapture, RowExecutor, RowsMessage, settings_hash
from trunkline.workflows.datasets import load_dataset
from trunkline.workflows.runner import BatchRunner
from trunkline.workflows.spec import load_workflow

pytest.importorskip("celery", reason="Celery is not installed; install trunkline[workers]")


@pytest.fixture
async def delivered(tmp_path: Path, redis_url: str, key_prefix: str):  # noqa: ANN201
    """A run of the yes-no workflow opened in the store, an executor, and a message with its first two rows."""
    import tomllib

    write_project(tmp_path)
    settings = Settings.model_validate(tomllib.loads(CONFIG))
    store = open_store(f"sqlite:///{tmp_path / 'records.db'}")
    writer = StoreWriter(store)
    executor = RowExecutor(
        settings, store=store, writer=writer, redis_url=redis_url, lease_s=5, key_prefix=key_prefix
    )
    spec = load_workflow(tmp_path / "flow")
    runner = BatchRunner(spec, router=executor.router, store=store, writer=writer, params={})
    plan = runner.plan(load_dataset(spec.default_data()), limit=None, resume_run_id=None)
    message = RowsMessage(
        run_id=plan.run_id,
        trace_id=new_trace_id(),
        run_span_id=new_span_id(),
        workflow_path=str(spec.file),
        workflow_hash=runner.workflow_hash,
        settings_hash=settings_hash(settings),
        params={},
        rows=plan.pending[:2],
    )
    capture = RowCapture(writer)
    add_exporter(capture)
    client = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
    yield executor, message, client, store
    remove_exporter(capture)
    await client.aclose()
    await executor.aclose()
    writer.close()
    store.dispose()


async def test_held_and_stored_rows_not_run(delivered) -> None:  # noqa: ANN001
    executor, message, client, store = delivered
    lease = f"{executor.key_prefix}run:{message.run_id}:row:1"
    await client.set(lease, "another-worker", px=3000)
    first = await executor.handle(message)
    assert [outcome.status for outcome in first] == ["stored", "held"]
    assert 0 < first[1].retry_in_s <= 3
    # The other worker's lease is left alone.
    assert await client.get(lease) == "another-worker"
    again = await executor.handle(message.model_copy(update={"rows": message.rows[:1]}))
    assert [outcome.status for outcome in again] == ["already_stored"]
    assert [row["row_index"] for row in all_rows(store, message.run_id)] == [0]
    assert run_spend(store, message.run_id)["calls"] == 1


async def test_stopped_run_runs_nothing(delivered) -> None:  # noqa: ANN001
    executor, message, client, store = delivered
    await client.set(f"{executor.key_prefix}run:{message.run_id}:stopped", "1")
    outcomes = await executor.handle(message)
    assert [outcome.status for outcome in outcomes] == ["stopped", "stopped"]
    assert all_rows(store, message.run_id) == []
