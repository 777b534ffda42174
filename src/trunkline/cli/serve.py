"""`trunkline serve`: the gateway and dashboard on uvicorn."""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Annotated

import typer
import uvicorn

from trunkline.config import load_settings
from trunkline.store.database import open_store


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
            "trunkline.server.app:app_from_environment",
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
