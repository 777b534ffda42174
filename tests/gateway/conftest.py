"""Fixtures for the gateway tests: a fake upstream and a gateway in front of it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fakeserver import FakeServer
from gateway.harness import GatewayServer, gateway_settings, running_gateway

# A throwaway redis-server on 127.0.0.1 for the tests of limits shared between gateways.
from integration.conftest import redis_url  # noqa: F401


@pytest.fixture
def gateway(fake_server: FakeServer, tmp_path: Path) -> Iterator[GatewayServer]:
    """A gateway whose routes go to the test's fake server."""
    with running_gateway(gateway_settings(fake_server.base_url), tmp_path) as server:
        yield server
