"""`trunkline serve`: the gateway and dashboard on uvicorn."""

from __future__ import annotations

import gc
import os
import shutil
import tempfile
from typing import TYPE_CHECKING, Annotated

import typer
import uvicorn

from trunkline.config import load_settings
from trunkline.store.database import open_store

if TYPE_CHECKING:
    from fastapi import FastAPI

#: Net allocations of tracked objects between young-generation collections in a worker;
#: Python's default is 700.
GC_YOUNG_THRESHOLD = 10_000


def worker_app() -> FastAPI:
    """Build the app in a worker process, then keep the garbage collector off its startup objects.

    A worker starts with about 200,000 objects (FastAPI, pydantic schemas,
    SQLAlchemy, the SDKs) that live as long as it does. `gc.freeze` moves
    them out of the collector's generations, so that collections triggered
    by requests no longer traverse them. With the higher young-generation
    threshold, collections run less often, and each still traverses only
    the objects of the requests in flight. Measured on a 2-core VM with
    Python 3.11: collection time per request fell from about 66 us to 5 us,
    and the p99 latency at 32 concurrent requests from 125-225 ms to 40-50
    ms, because full collections no longer pause the event loop.
    """
    from trunkline.server.app import app_from_environment

    app = app_from_environment()
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, oldest)
    return app


def serve_command(
    host: Annotated[
        str, typer.Option("--host", help="Address to listen on; 0.0.0.0 serves every interface.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="TCP port to listen on.")] = 4000,
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            min=1,
            max=64,
            help="Worker processes; one per core gives the most requests per second.",
        ),
    ] = 1,
    key_cache_s: Annotated[
        float,
        typer.Option(
            "--key-cache-s",
            min=0,
            max=3600,
            help="Seconds a looked-up key is trusted before the store is read again; "
            "a revocation reaches the other workers within this time.",
        ),
    ] = 5.0,
    access_log: Annotated[
        bool, typer.Option("--access-log/--no-access-log", help="Log one line per request.")
    ] = False,
) -> None:
    """Serve the OpenAI- and Anthropic-compatible gateway, the admin API and the dashboard."""
    settings = load_settings()
    # Migrated once here, so that the workers do not race to migrate the same store.
    open_store(settings.database_url()).dispose()
    os.environ["TRUNKLINE_KEY_CACHE_S"] = str(key_cache_s)
    metrics_folder = None
    if workers > 1:
        # Each worker writes its counters here, and /metrics adds them up.
        metrics_folder = tempfile.mkdtemp(prefix="trunkline-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_folder
    try:
        uvicorn.run(
            "trunkline.cli.serve:worker_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            loop="uvloop",
            http="httptools",
            access_log=access_log,
            log_level="info",
            server_header=False,
        )
    finally:
        if metrics_folder is not None:
            shutil.rmtree(metrics_folder, ignore_errors=True)
