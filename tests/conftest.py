"""Fixtures shared by the whole test suite."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from fakeserver import FakeServer
from pgserver import PostgresServer, find_binaries, store_url_for

#: The store back ends that tests taking `store_url` run against.
STORE_BACKENDS = ("sqlite", "postgresql")


@pytest.fixture
def fake_server() -> Iterator[FakeServer]:
    """Start a fresh OpenAI- and Anthropic-shaped HTTP server on 127.0.0.1 for one test."""
    server = FakeServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def closed_port_url() -> str:
    """Return an ``http://127.0.0.1:PORT`` URL where nothing listens.

    The port is bound and released at once, so a connection attempt is refused
    unless another process takes the port in between.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """Start a throwaway PostgreSQL cluster on 127.0.0.1 for the session.

    Tests that need it skip, with the reason in the ``-rs`` summary, where
    PostgreSQL is not installed.
    """
    binaries = find_binaries()
    if binaries is None:
        pytest.skip(
            "PostgreSQL is not installed, so the store tests cannot run on it; "
            "install it (apt-get install postgresql)"
        )
    server = PostgresServer(binaries)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(params=STORE_BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    """Return the URL of an empty store, once on SQLite and once on PostgreSQL."""
    with store_url_for(request.param, tmp_path, request) as url:
        yield url
