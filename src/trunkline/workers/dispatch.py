"""Sending a run's rows to Celery workers and following them until all have ended."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from trunkline.errors import ConfigError, WorkflowError
from trunkline.routing.router import safe_redis_url
from trunkline.store.runs import mark_run
from trunkline.tracing import start_run
from trunkline.workers.app import ROWS_TASK, broker_url, celery_app
from trunkline.workers.rows import RUN_KEYS_TTL_S, RowsMessage, run_key, settings_hash
from trunkline.workflows.datasets import Dataset
from trunkline.workflows.runner import BatchRunner
from trunkline.workflows.summary import RunSummary

logger = logging.getLogger(__name__)

#: Seconds between two looks for rows that ended.
POLL_INTERVAL_S = 0.5
#: Seconds without a row ending before the run checks that some worker takes rows from its queue.
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
    runs at the same time. The workers store the rows and announce each in
    Redis once it is committed. The summary is then built from the stored
    rows and calls, as for a run in one process. `on_quiet` receives a
    warning when rows stop ending and no worker takes rows from the queue.

    Raises:
        WorkflowError: a worker stopped the run (another store, another configuration,
            other workflow files); the message is the worker's.
        ConfigError: Celery is missing, no broker is configured or reachable,
            or no worker takes rows from the queue when the run starts.
    """
    if chunk_size < 1:
        raise ConfigError(f"chunk_size must be at least 1, got {chunk_size}")
    batch_steps = [step.name for step in runner.workflow.all_steps() if step.mode == "batch"]
    if batch_steps:
        raise ConfigError(
            f"step(s) {', '.join(batch_steps)} of workflow {runner.workflow.name!r} run as one Batch API "
            "job for all rows, which workers cannot share; run it without --workers celery"
        )
    settings = runner.router.settings
    app = celery_app(settings)
    with _reaching_broker(settings):
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
        with _reaching_broker(settings, plan.run_id), start_run(
            runner.workflow.name, run_id=plan.run_id, budget_usd=runner.budget_usd, workflow=runner.workflow.name
        ) as live:
            runner.log_start(plan, where=f", on workers of queue {settings.workers.queue!r}")
            # A resumed run may have been stopped, or stopped by a worker's
            # problem, before: its workers must take rows again.
            signals.delete(run_key(plan.run_id, "stopped"), run_key(plan.run_id, "problems"))
            seen = signals.llen(run_key(plan.run_id, "ended"))
            configuration = settings_hash(settings)
            try:
                for start in range(0, len(plan.pending), chunk_size):
                    message = RowsMessage(
                        run_id=plan.run_id,
                        trace_id=live.context.trace_id,
                        run_span_id=live.span_id,
                        workflow_path=workflow_path,
                        workflow_hash=runner.workflow_hash,
                        settings_hash=configuration,
                        params=runner.params,
                        prompt_overrides=runner.prompt_overrides,
                        budget_usd=runner.budget_usd,
                        rows=plan.pending[start : start + chunk_size],
                    )
                    app.send_task(ROWS_TASK, args=[message.model_dump(mode="json")], queue=settings.workers.queue)
                waiting = {index for index, _ in plan.pending}
                _follow(plan.run_id, waiting, seen, signals, app, settings.workers.queue, on_row, on_quiet)
            except BaseException as error:
                _stop(signals, runner, plan.run_id, error)
                raise
            summary = runner.summarise(plan)
            live.attributes.update(summary.public())
        mark_run(runner.store, plan.run_id, status="done", summary=summary.public())
        return summary
    finally:
        signals.close()


def _check_workers_answer(app: Any, queue: str) -> None:
    # A short wait first, as replies on a network come in milliseconds; a
    # longer one before giving up, for workers busy with other runs' rows.
    if not (_workers_on(app, queue, timeout_s=0.5) or _workers_on(app, queue, timeout_s=3.0)):
        raise ConfigError(
            f"no trunkline worker takes rows from queue {queue!r} on the broker, so the run's rows "
            f"would wait forever; start one or more with `trunkline worker` (queue {queue!r}) "
            "against the same broker and store, then run again"
        )


def _workers_on(app: Any, queue: str, *, timeout_s: float) -> list[str]:
    """Return the names of the workers that reply within `timeout_s` and take rows from `queue`."""
    answers = app.control.inspect(timeout=timeout_s).active_queues() or {}
    return [name for name, queues in answers.items() if any(entry.get("name") == queue for entry in queues)]


def _stop(signals: Any, runner: BatchRunner, run_id: str, error: BaseException) -> None:
    """Tell the workers to drop the run's rows and mark the run stopped, each as far as it can be reached."""
    try:
        signals.set(run_key(run_id, "stopped"), "1", ex=RUN_KEYS_TTL_S)
    except Exception as failure:  # the broker is down: workers go on with the rows they have
        logger.warning("could not tell the workers to stop run %s: %s", run_id, failure)
    try:
        runner.mark_stopped(run_id, error)
    except Exception as failure:  # the store is down: the run stays marked running
        logger.warning("could not mark run %s stopped in the store: %s", run_id, failure)


@contextmanager
def _reaching_broker(settings: Any, run_id: str | None = None) -> Iterator[None]:
    """Raise a broker that cannot be reached as a `ConfigError` naming the broker and the next step."""
    from kombu.exceptions import OperationalError
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    try:
        yield
    except (OperationalError, RedisConnectionError, RedisTimeoutError) as error:
        resume = (
            f"; the rows stored so far are kept: once it is back, continue with --resume {run_id}"
            if run_id
            else ""
        )
        raise ConfigError(
            f"the broker at {safe_redis_url(broker_url(settings))} cannot be reached ({error}); start it, "
            f"or point TRUNKLINE_BROKER_URL or [workers] broker_url at a running Redis{resume}"
        ) from None


def _follow(
    run_id: str,
    waiting: set[int],
    seen: int,
    signals: Any,
    app: Any,
    queue: str,
    on_row: Callable[[dict[str, Any]], None] | None,
    on_quiet: Callable[[str], None] | None,
) -> None:
    """Wait until every row in `waiting` is stored, reporting each as it ends.

    Workers append ``INDEX:STATUS`` to the run's list of ended rows once the
    row is committed; `seen` is the list's length when the rows were sent.
    """
    problems_key = run_key(run_id, "problems")
    ended_key = run_key(run_id, "ended")
    last_change = time.monotonic()
    while waiting:
        problem = signals.lindex(problems_key, 0)
        if problem is not None:
            raise WorkflowError(
                f"a worker stopped the run: {problem}. The rows stored so far are kept: once the "
                f"cause is fixed, continue with --resume {run_id}"
            )
        entries = signals.lrange(ended_key, seen, -1)
        seen += len(entries)
        for entry in entries:
            index_text, _, status = entry.partition(":")
            index = int(index_text)
            if index in waiting:
                waiting.discard(index)
                if on_row is not None:
                    on_row({"row_index": index, "status": status})
        now = time.monotonic()
        if entries:
            last_change = now
        elif now - last_change > QUIET_BEFORE_PING_S:
            last_change = now
            if on_quiet is not None and not _workers_on(app, queue, timeout_s=3.0):
                on_quiet(
                    f"no row has ended for {QUIET_BEFORE_PING_S:.0f} s and no worker takes rows from "
                    f"queue {queue!r}; start `trunkline worker`, and the rows waiting on the broker will run"
                )
        if waiting:
            time.sleep(POLL_INTERVAL_S)
