"""A real gateway for tests: uvicorn serving `create_app` on 127.0.0.1 from a background thread."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from sqlalchemy import select

from trunkline.config import Settings
from trunkline.routing.router import Router
from trunkline.server.app import create_app
from trunkline.store.database import open_store
from trunkline.store.keys import KeyLimits, NewKey, Role, create_key
from trunkline.store.tables import calls


def gateway_settings(upstream: str, *, anthropic_upstream: str | None = None) -> Settings:
    """Routes over the fake server: ``chat`` (OpenAI format), ``claude`` (Anthropic) and ``priced``."""
    return Settings.model_validate(
        {
            "deployments": {
                "fake-gpt": {"provider": "openai", "model": "gpt-4o-mini", "base_url": upstream + "/v1"},
                "fake-claude": {
                    "provider": "anthropic",
                    "model": "claude-3-5-haiku-latest",
                    "base_url": anthropic_upstream or upstream,
                },
                "fake-priced": {"provider": "openai", "model": "house-model", "base_url": upstream + "/v1"},
            },
            "routes": {
                "chat": {"deployments": ["fake-gpt"], "max_attempts": 1, "backoff_base_s": 0},
                "claude": {"deployments": ["fake-claude"], "max_attempts": 1, "backoff_base_s": 0},
                "priced": {"deployments": ["fake-priced"], "max_attempts": 1},
            },
            "prices": {"house-model": {"input_per_mtok": 1000.0, "output_per_mtok": 1000.0}},
            "store": {"flush_interval_s": 0.05},
        }
    )


class GatewayServer:
    """The app on an ephemeral loopback port; `url` is its base, `store_url` its store."""

    def __init__(
        self, settings: Settings, store_url: str, *, router: Router | None = None, **app_options: Any
    ) -> None:
        self.settings = settings
        self.store_url = store_url
        self.app = create_app(settings, router=router, store_url=store_url, **app_options)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def store(self):  # noqa: ANN201
        return self.app.state.store

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self._server.started:
                return
            time.sleep(0.02)
        raise RuntimeError("the gateway did not start within 20 s")

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=20)

    def key(self, role: Role = Role.DEVELOPER, **limits: object) -> str:
        """Create a key in the gateway's store and return it."""
        return self.new_key(role, **limits).secret

    def new_key(self, role: Role = Role.DEVELOPER, **limits: object) -> NewKey:
        """Create a key in the gateway's store and return it with its id."""
        name = f"test {role.value}"
        return create_key(self.store, role, name=name, limits=KeyLimits(**limits), actor="test")

    def calls(self) -> list[dict]:
        """Flush, then return the rows of the `calls` table, oldest first."""
        self.flush()
        with self.store.engine.connect() as connection:
            query = select(calls).order_by(calls.c.started_at)
            return [dict(row) for row in connection.execute(query).mappings()]

    def flush(self) -> None:
        """Wait until the calls made so far are committed to the store."""
        for exporter in _writers(self.app):
            exporter.flush(10)

    def client(self, key: str | None = None) -> httpx.Client:
        headers = {"authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


def _writers(app):  # noqa: ANN001, ANN202
    from trunkline.store.writer import StoreWriter
    from trunkline.tracing.exporters import exporters

    return [exporter for exporter in exporters() if isinstance(exporter, StoreWriter) and exporter.store is app.state.store]


@contextmanager
def running_gateway(
    settings: Settings,
    tmp_path: Path,
    *,
    router: Router | None = None,
    store_url: str | None = None,
    **app_options: Any,
) -> Iterator[GatewayServer]:
    """Serve a gateway until the block ends; gateways given one `store_url` share its keys.

    `app_options` go to `create_app`, such as ``max_body_bytes``.
    """
    url = store_url or f"sqlite:///{tmp_path / 'gateway.db'}"
    open_store(url).dispose()
    server = GatewayServer(settings, url, router=router, **app_options)
    server.start()
    try:
        yield server
    finally:
        server.stop()
