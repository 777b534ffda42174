"""`trunkline worker`: a Celery worker that runs the rows of distributed runs."""

from __future__ import annotations

import socket
from typing import Annotated

import typer

from trunkline.config import load_settings

_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def worker_command(
    concurrency: Annotated[
        int,
        typer.Option(
            "--concurrency",
            min=1,
            max=512,
            help="Tasks this worker runs at once; each task's rows (the run's --chunk-size) run together.",
        ),
    ] = 4,
    queue: Annotated[
        str | None, typer.Option("--queue", help="Queue to take rows from; default: \\[workers] queue, 'trunkline'.")
    ] = None,
    name: Annotated[
        str | None, typer.Option("--name", help="Worker name shown by Celery; default: trunkline@HOSTNAME.")
    ] = None,
    loglevel: Annotated[
        str, typer.Option("--loglevel", help="Celery's log level: DEBUG, INFO, WARNING, ERROR or CRITICAL.")
    ] = "WARNING",
) -> None:
    """Take rows of `trunkline run --workers celery` from the broker, run them and store them.

    Every worker and the run must share the broker (TRUNKLINE_BROKER_URL or
    redis_url), the store (TRUNKLINE_DATABASE_URL, PostgreSQL for a fleet)
    and the workflow files. Rate limits and budgets are kept in the shared
    Redis, so several workers together stay within them.
    """
    from trunkline.workers.app import celery_app, close_worker_process, worker_process

    if loglevel.upper() not in _LOG_LEVELS:
        raise typer.BadParameter(
            f"expected one of {', '.join(_LOG_LEVELS)}, got {loglevel!r}", param_hint="--loglevel"
        )
    settings = load_settings()
    if queue is not None:
        settings = settings.model_copy(
            update={"workers": settings.workers.model_copy(update={"queue": queue})}
        )
    app = celery_app(settings)
    # Built before the first row, so a store or Redis that cannot be reached
    # stops the worker at once rather than failing every row.
    worker_process(settings, concurrency)
    try:
        app.worker_main(
            [
                "worker",
                "--pool=threads",
                f"--concurrency={concurrency}",
                f"--queues={settings.workers.queue}",
                f"--hostname={name or 'trunkline@' + socket.gethostname()}",
                f"--loglevel={loglevel}",
                "--without-gossip",
                "--without-mingle",
            ]
        )
    finally:
        close_worker_process()
