"""Fixtures shared by the whole test suite."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from fakeserver import FakeServer


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
