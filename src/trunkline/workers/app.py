"""The Celery application behind `trunkline worker` and `trunkline run --workers celery`.

A worker process runs Celery's thread pool. Each pool thread takes one task,
a few rows of a run, and hands the rows to the one asyncio event loop that
the process keeps in a thread of its own, where they run at the same time. All rows in flight thus share one router (its
connection pools, limiters and breakers) and one store. Tasks are
acknowledged only after they end (``acks_late``). The broker therefore
hands the rows of a worker that died to another worker once the visibility
timeout has passed, and `trunkline.workers.rows` makes that second delivery
harmless.
"""

from __future__ import annotations

import asyncio
import atexit
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from trunkline.config import Settings
from trunkline.errors import ConfigError
from trunkline.store.database import open_store
from trunkline.store.writer import StoreWriter
from trunkline.tracing import add_exporter, remove_exporter
from trunkline.tracing.otlp import exporter_from_settings
from trunkline.workers.rows import RowCapture, RowExecutor, RowOutcome, RowsMessage

#: The name rows are sent under.
ROWS_TASK = "trunkline.run_rows"

_NO_BROKER = (
    "distributed runs need a Redis broker; set TRUNKLINE_BROKER_URL, or broker_url under "
    "[workers] or redis_url in trunkline.toml, to a URL such as redis://127.0.0.1:6379/0"
)


def broker_url(settings: Settings) -> str:
    """Return the broker's URL, which is also the Redis that row leases are kept in.

    Raises:
        ConfigError: none is configured.
    """
    url = settings.workers.resolved_broker_url(settings.shared_redis_url())
    if not url:
        raise ConfigError(_NO_BROKER)
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(f"the broker URL must be a redis:// or rediss:// URL, got {url.split('@')[-1]!r}")
    return url


def sharing_settings(settings: Settings) -> Settings:
    """Return `settings` with a shared Redis for limits and budgets: the broker's, if none is set.

    Workers in separate processes must count one route's requests and one
    run's spend together, so in-process limiters are never what they use.
    """
    if settings.shared_redis_url():
        return settings
    return settings.model_copy(update={"redis_url": broker_url(settings)})


def celery_app(settings: Settings) -> Any:
    """Build the Celery application for `settings`; the row task is registered on it.

    Raises:
        ConfigError: Celery is not installed, or no broker is configured.
    """
    try:
        from celery import Celery
    except ImportError:
        raise ConfigError(
            "distributed runs need Celery, which is not installed; "
            "install it with: pip install 'trunkline[workers]'"
        ) from None
    workers = settings.workers
    app = Celery("trunkline", broker=broker_url(settings), set_as_current=False)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_default_queue=workers.queue,
        # One row at a time per pool thread: rows held in a prefetch buffer
        # would wait behind slow rows while other workers sit idle.
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            "visibility_timeout": workers.visibility_timeout_s,
            # Look for rows of dead workers every few seconds rather than
            # Kombu's default of about 100 s, so a killed worker's rows are
            # picked up soon after the visibility timeout.
            "unacked_restore_interval": max(1, min(10, int(workers.visibility_timeout_s / 3))),
            "unacked_restore_throttle": 1,
        },
    )
    app.task(name=ROWS_TASK, bind=True)(_run_rows_task)
    return app


class _WorkerProcess:
    """The event loop, store and router that every row task of this process shares."""

    def __init__(self, settings: Settings, concurrency: int) -> None:
        self.settings = sharing_settings(settings)
        self.loop = asyncio.new_event_loop()
        # Each row in flight may wait on the store in a thread; asyncio's
        # default pool of a few threads would queue them behind each other.
        self.loop.set_default_executor(ThreadPoolExecutor(concurrency + 4, thread_name_prefix="trunkline-store"))
        self._thread = threading.Thread(target=self.loop.run_forever, name="trunkline-rows", daemon=True)
        self._thread.start()
        self.store = open_store(self.settings.database_url())
        self.writer = StoreWriter(
            self.store,
            batch_size=self.settings.store.batch_size,
            flush_interval_s=self.settings.store.flush_interval_s,
        )
        self.capture = RowCapture(self.writer)
        add_exporter(self.capture)
        # Spans go to a collector as they end, a killed attempt's too, as in a
        # run in one process. Only the store keeps one attempt per row.
        self.otlp = exporter_from_settings(self.settings)
        if self.otlp is not None:
            add_exporter(self.otlp)
        self.executor = RowExecutor(
            self.settings,
            store=self.store,
            writer=self.writer,
            redis_url=broker_url(self.settings),
            lease_s=self.settings.workers.lease_s,
        )
        atexit.register(self.close)

    def run(self, message: RowsMessage) -> list[RowOutcome]:
        return asyncio.run_coroutine_threadsafe(self.executor.handle(message), self.loop).result()

    def close(self) -> None:
        if not self.loop.is_running():
            return
        asyncio.run_coroutine_threadsafe(self.executor.aclose(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        remove_exporter(self.capture)
        self.writer.close()
        self.store.dispose()
        if self.otlp is not None:
            remove_exporter(self.otlp)
            self.otlp.close()
        atexit.unregister(self.close)


_process: _WorkerProcess | None = None
_process_lock = threading.Lock()


def worker_process(settings: Settings | None = None, concurrency: int = 16) -> _WorkerProcess:
    """Return this process's shared row machinery, built by the first task that needs it."""
    global _process
    with _process_lock:
        if _process is None:
            from trunkline.config import load_settings

            _process = _WorkerProcess(settings or load_settings(), concurrency)
        return _process


def close_worker_process() -> None:
    """Stop the shared row machinery, flushing what it holds; a later task builds it again."""
    global _process
    with _process_lock:
        if _process is not None:
            _process.close()
            _process = None


def _run_rows_task(task: Any, message: dict[str, Any]) -> dict[str, int]:
    rows = RowsMessage.model_validate(message)
    outcomes = worker_process().run(rows)
    held = [(pair, outcome) for pair, outcome in zip(rows.rows, outcomes, strict=True) if outcome.status == "held"]
    if held:
        # Only the held rows go back to the broker, to run once their leases lapse.
        wait_s = max(outcome.retry_in_s or 0.0 for _, outcome in held)
        again = rows.model_copy(update={"rows": [pair for pair, _ in held]})
        task.apply_async(args=[again.model_dump(mode="json")], countdown=wait_s)
    counts: dict[str, int] = {}
    for outcome in outcomes:
        counts[outcome.status] = counts.get(outcome.status, 0) + 1
    return counts
