"""Property-based requests to every route of the OpenAPI schema: no input may get a 5xx status.

Schemathesis generates the requests from the app's own schema and sends
them over loopback to a live gateway with an admin key, so every route is
reached past its key check. Model requests lead to the fake server, and a
guard on `socket.connect` fails the test if anything in the process dials a
host other than loopback.

The schema is read when this module is imported, from an app that is built
and never served: schemathesis 4.32's loader from a fixture
(`schemathesis.pytest.from_fixture`) fails under pytest 9.2, whose nodes no
longer have the ``_nodeid`` attribute it rewrites.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.schemas import OpenApiSchema

from fakeserver import FakeServer
from gateway.harness import GatewayServer, gateway_settings, running_gateway
from trunkline.server.app import create_app
from trunkline.store.keys import Role

#: Models for the generated requests: the three routes and one the gateway does not serve.
MODELS = ("chat", "claude", "priced", "gpt-unknown")
#: Examples per operation, few enough that the run over every operation stays short.
EXAMPLES = 50


def _is_loopback(address: Any) -> bool:
    if not isinstance(address, tuple):
        return True  # a Unix socket path
    host = address[0]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@pytest.fixture(scope="module")
def loopback_only() -> Iterator[list[Any]]:
    """Reject connections to any host but loopback, and list the ones rejected."""
    connect, connect_ex = socket.socket.connect, socket.socket.connect_ex
    rejected: list[Any] = []

    def guarded(method: Any) -> Any:
        def call(self: socket.socket, address: Any) -> Any:
            if not _is_loopback(address):
                rejected.append(address)
                message = f"the test rejects a connection to {address!r}, which is not loopback"
                raise ConnectionRefusedError(message)
            return method(self, address)

        return call

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", guarded(connect))
        patch.setattr(socket.socket, "connect_ex", guarded(connect_ex))
        yield rejected


@pytest.fixture(scope="module")
def fuzzed(
    loopback_only: list[Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[GatewayServer, str]]:
    """A live gateway over a fake upstream, and an admin key for it."""
    with FakeServer() as fake:
        folder = tmp_path_factory.mktemp("fuzz")
        with running_gateway(gateway_settings(fake.base_url), folder) as server:
            yield server, server.key(Role.ADMIN)
    assert loopback_only == []


def load_schema() -> OpenApiSchema:
    """Return the app's OpenAPI schema; the app's routes do not depend on its upstream."""
    app = create_app(gateway_settings("http://127.0.0.1:9"), store_url="sqlite://")
    try:
        return schemathesis.openapi.from_dict(app.openapi())
    finally:
        app.state.store.dispose()


schema = load_schema()


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.data_too_large,
    ],
)
def test_no_server_error(case: schemathesis.Case, fuzzed: tuple[GatewayServer, str]) -> None:
    server, admin = fuzzed
    if isinstance(case.body, dict) and isinstance(case.body.get("model"), str):
        # Mostly served models, so that requests reach the router and the fake upstream.
        case.body["model"] = MODELS[len(case.body["model"]) % len(MODELS)]
    response = case.call(
        base_url=server.url, headers={"authorization": f"Bearer {admin}"}, timeout=30
    )
    if response.status_code == 502 and "invalid_output" in response.text:
        # The fake replies with fixed text, which is not the JSON that response_format requested.
        return
    case.validate_response(response, checks=[not_a_server_error])
