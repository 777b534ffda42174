"""Sending a run's rows to Celery workers and following them in the store until all have ended."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import select

from trunkline.errors import ConfigError, WorkflowError
from trunkline.store.database import Store
from trunkline.store.runs import mark_run
from trunkline.store.tables import run_rows
from trunkline.tracing import start_run
from trunkline.workers.app import ROWS_TASK, broker_url, celery_app
from trunkline.workers.rows import RUN_KEYS_TTL_S, RowsMessage, run_key
from trunkline.workflows.datasets import Dataset
from trunkline.workflows.runner import BatchRunner
from trunkline.workflows.summary import RunSummary

#: Seconds between two looks at the store for rows that ended.
POLL_INTERVAL_S = 0.5
#: Seconds without a row ending before the run checks that some worker answers.
QUIET_BEFORE_PING_S = 15.0


def run_on_workers(
    runner: BatchRunner,
    dataset: Dataset,
    *,
    limit: int | None = None,
    resume_run_id: str | None = None,
    chunk_size: int = 10,
    on_row: Callable[[dict[str, Any]], None] | None = None,
    on_start: Callable[[int, int], None] | None = None,
    on_quiet: Callable[[str], None] | None = None,
) -> RunSummary:
    """Run the dataset's rows on `trunkline worker` processes and return the run's summary.

    The run is opened here, as `BatchRunner.run` opens it, and every
    `chunk_size` pending rows become one task on the broker, which a worker
    runs at the same time. The workers store the rows; this
    process follows them in the store, so the summary is built from the same
    rows and calls as a run in one process. `on_quiet` receives a warning
    when rows stop ending and no worker answers.

    Raises:
        WorkflowError: a worker refused the run's rows (another store,
            other workflow files); the message is the worker's.
        ConfigError: Celery is missing, no broker is configured, or no
            worker answers when the run starts.
    """
    if chunk_size < 1:
        raise ConfigError(f"chunk_size must be at least 1, got {chunk_size}")
    settings = runner.router.settings
    app = celery_app(settings)
    _check_workers_answer(app, settings.workers.queue)
    plan = runner.plan(dataset, limit=limit, resume_run_id=resume_run_id)
    if on_start is not None:
        on_start(len(plan.pending), plan.resumed)
    workflow_path = str(runner.workflow.file.resolve()) if runner.workflow.file else None
    if workflow_path is None:
        raise WorkflowError(
            f"workflow {runner.workflow.name!r} was not read from a file, so workers cannot load it; "
            "run it from its workflow.toml"
        )
    import redis

    signals = redis.Redis.from_url(broker_url(settings), decode_responses=True)
    try:
        with start_run(
            runner.workflow.name, run_id=plan.run_id, budget_usd=runner.budget_usd, workflow=runner.workflow.name
        ) as live:
            runner.log_start(plan, where=f", on workers of queue {settings.workers.queue!r}")
            previous = _finish_times(runner.store, plan.run_id)
            try:
                for start in range(0, len(plan.pending), chunk_size):
                    message = RowsMessage(
                        run_id=plan.run_id,
                        trace_id=live.context.trace_id,
                        run_span_id=live.span_id,
                        workflow_path=workflow_path,
                        workflow_hash=runner.workflow_hash,
                        params=runner.params,
                        prompt_overrides=runner.prompt_overrides,
                        budget_usd=runner.budget_usd,
                        rows=plan.pending[start : start + chunk_size],
                    )
                    app.send_task(ROWS_TASK, args=[message.model_dump(mode="json")], queue=settings.workers.queue)
                _follow(runner.store, plan.run_id, {index for index, _ in plan.pending}, previous,
                        signals, app, settings.workers.queue, on_row, on_quiet)
            except BaseException as error:
                signals.set(run_key(plan.run_id, "stopped"), "1", ex=RUN_KEYS_TTL_S)
                runner.mark_stopped(plan.run_id, error)
                raise
            summary = runner.summarise(plan)
            live.attributes.update(summary.public())
        mark_run(runner.store, plan.run_id, status="done", summary=summary.public())
        return summary
    finally:
        signals.close()


def _check_workers_answer(app: Any, queue: str) -> None:
    if not app.control.ping(timeout=2.0, limit=1):
        raise ConfigError(
            f"no trunkline worker answers on the broker, so the run's rows would wait forever; "
            f"start one or more with `trunkline worker` (queue {queue!r}) against the same "
            "broker and store, then run again"
        )


def _finish_times(store: Store, run_id: str) -> dict[int, datetime]:
    query = select(run_rows.c.row_index, run_rows.c.finished_at).where(run_rows.c.run_id == run_id)
    with store.engine.connect() as connection:
        return {row.row_index: row.finished_at for row in connection.execute(query)}


def _follow(
    store: Store,
    run_id: str,
    waiting: set[int],
    previous: dict[int, datetime],
    signals: Any,
    app: Any,
    queue: str,
    on_row: Callable[[dict[str, Any]], None] | None,
    on_quiet: Callable[[str], None] | None,
) -> None:
    """Wait until every row in `waiting` is stored anew, reporting each as it ends."""
    problems_key = run_key(run_id, "problems")
    last_change = time.monotonic()
    query = select(run_rows.c.row_index, run_rows.c.status, run_rows.c.finished_at).where(
        run_rows.c.run_id == run_id
    )
    while waiting:
        problem = signals.lindex(problems_key, 0)
        if problem is not None:
            raise WorkflowError(f"a worker refused the run's rows: {problem}")
        with store.engine.connect() as connection:
            ended = [
                row
                for row in connection.execute(query)
                if row.row_index in waiting and previous.get(row.row_index) != row.finished_at
            ]
        for row in ended:
            waiting.discard(row.row_index)
            if on_row is not None:
                on_row({"row_index": row.row_index, "status": row.status})
        now = time.monotonic()
        if ended:
            last_change = now
        elif now - last_change > QUIET_BEFORE_PING_S:
            last_change = now
            if on_quiet is not None and not app.control.ping(timeout=2.0, limit=1):
                on_quiet(
                    f"no row has ended for {QUIET_BEFORE_PING_S:.0f} s and no worker answers on "
                    f"queue {queue!r}; start `trunkline worker`, and the rows waiting on the broker will run"
                )
        if waiting:
            time.sleep(POLL_INTERVAL_S)
