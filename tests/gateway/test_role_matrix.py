"""Every route of the app against every kind of caller, checked against the role the route declares.

The routes are read from the app itself, so a route added later is checked
without changing this file. A route's role is the `require` dependency it
declares. A route without one is public, which only the health check, the
schema, sign-in and static files may be.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import fastapi.routing
import httpx
import pytest
from fastapi import FastAPI
from starlette.routing import Mount

from fakeserver import FakeServer
from gateway.harness import GatewayServer, gateway_settings, running_gateway
from trunkline.server.app import PUBLIC_PATHS
from trunkline.server.auth import SESSION_COOKIE, require
from trunkline.store.keys import KeyLimits, Role, create_key, revoke_key

#: The only routes that must respond without a key, beside static files under /static/.
EXPECTED_PUBLIC = frozenset({"/healthz", "/openapi.json", "/login", "/logout"})
#: Paths whose responses are JSON; any other path that needs a key is a dashboard page.
API_PREFIXES = ("/v1/", "/admin/", "/api/", "/metrics", "/healthz", "/openapi.json")
#: Who may use a route that declares each role; written out here instead of read from the code.
ADMITTED = {
    Role.VIEWER: {Role.VIEWER, Role.DEVELOPER, Role.ADMIN},
    Role.DEVELOPER: {Role.DEVELOPER, Role.ADMIN},
    Role.ADMIN: {Role.ADMIN},
    Role.METRICS: {Role.METRICS, Role.ADMIN},
}
#: Callers without a usable key, and the error code each gets.
KEYLESS = {
    "none": "missing_api_key",
    "unknown": "invalid_api_key",
    "revoked": "revoked_api_key",
    "expired": "expired_api_key",
}
CALLERS = [*KEYLESS, *(role.value for role in Role)]
#: The roles the documented API routes must declare; every /admin/ route needs admin.
POLICY = {
    "/v1/chat/completions": Role.DEVELOPER,
    "/v1/messages": Role.DEVELOPER,
    "/v1/models": Role.VIEWER,
    "/v1/models/{model_id:path}": Role.VIEWER,
    "/metrics": Role.METRICS,
}


@dataclass(frozen=True)
class Endpoint:
    """One method on one path, the role it declares (None when public) and a URL to call it."""

    method: str
    path: str
    role: Role | None
    url: str

    @property
    def is_page(self) -> bool:
        return not self.path.startswith(API_PREFIXES)

    @property
    def is_anthropic(self) -> bool:
        return self.path.startswith("/v1/messages")


def route_contexts(app: FastAPI) -> list[Any]:
    """Return the app's routes, those of included routers too, in any FastAPI version."""
    # FastAPI 0.165 keeps an included router as one entry of app.routes;
    # iter_route_contexts expands it. Older versions copy the routes in flat.
    expand = getattr(fastapi.routing, "iter_route_contexts", None)
    return list(expand(app.routes)) if expand is not None else list(app.routes)


def declared_roles(dependant: Any) -> Iterator[Role]:
    for dependency in dependant.dependencies:
        if isinstance(dependency.call, require):
            yield dependency.call.role
        yield from declared_roles(dependency)


def fill_path(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "missing", path)


def endpoints(app: FastAPI) -> list[Endpoint]:
    found = []
    for route in route_contexts(app):
        if isinstance(getattr(route, "original_route", route), Mount):
            # Static files mounted as an app: public, and asked for a file that is not there.
            found.append(Endpoint("GET", f"{route.path}/", None, f"{route.path}/missing.css"))
            continue
        dependant = getattr(route, "dependant", None)
        roles = sorted(set(declared_roles(dependant)), key=str) if dependant is not None else []
        assert len(roles) <= 1, f"{route.path} declares several roles: {roles}"
        for method in sorted(route.methods - {"HEAD", "OPTIONS"}):
            role = roles[0] if roles else None
            found.append(Endpoint(method, route.path, role, fill_path(route.path)))
    return found


@pytest.fixture(scope="module")
def matrix_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    with FakeServer() as fake:
        settings = gateway_settings(fake.base_url)
        with running_gateway(settings, tmp_path_factory.mktemp("matrix")) as server:
            yield server


@pytest.fixture(scope="module")
def secrets(matrix_gateway: GatewayServer) -> dict[str, str | None]:
    """A key for each caller of the matrix: None for no key at all."""
    store = matrix_gateway.store
    revoked = create_key(store, Role.ADMIN, actor="test")
    revoke_key(store, revoked.key.key_id, actor="test")
    past = KeyLimits(expires_at=datetime.now(UTC) - timedelta(minutes=1))
    expired = create_key(store, Role.ADMIN, limits=past, actor="test")
    found: dict[str, str | None] = {
        "none": None,
        "unknown": "tk-000000000000-not-a-key-of-this-gateway",
        "revoked": revoked.secret,
        "expired": expired.secret,
    }
    for role in Role:
        found[role.value] = matrix_gateway.key(role)
    return found


def call(
    server: GatewayServer, endpoint: Endpoint, headers: dict[str, str], **options: Any
) -> httpx.Response:
    body = {} if endpoint.method in ("POST", "PUT", "PATCH") else None
    with httpx.Client(base_url=server.url, timeout=30, follow_redirects=False, **options) as client:
        return client.request(endpoint.method, endpoint.url, json=body, headers=headers)


def problem(endpoint: Endpoint, caller: str, response: httpx.Response) -> str | None:
    """Return what is wrong with `response` for `caller`, or None when it is right."""
    status = response.status_code
    if endpoint.role is None:
        return f"public route answered {status}" if status in (401, 403) else None
    if caller in KEYLESS:
        if endpoint.is_page:
            location = response.headers.get("location", "")
            if status != 303 or not location.startswith("/login?next="):
                return f"expected a 303 redirect to /login, got {status} to {location!r}"
            return None
        if status != 401:
            return f"expected 401, got {status}"
        return error_shape(endpoint, response, KEYLESS[caller])
    if Role(caller) in ADMITTED[endpoint.role]:
        if status in (401, 403):
            return f"{endpoint.role.value} route rejected it with {status}"
        return None
    if status != 403:
        return f"expected 403 for a {endpoint.role.value} route, got {status}"
    if endpoint.is_page:
        return page_shape(response)
    return error_shape(endpoint, response, "permission_denied")


def page_shape(response: httpx.Response) -> str | None:
    """Return what is wrong with a dashboard page's 403, which must be the HTML error page."""
    if not response.headers.get("content-type", "").startswith("text/html"):
        return f"expected an HTML error page, got {response.headers.get('content-type')}"
    if 'id="error-message"' not in response.text or "this endpoint needs role" not in response.text:
        return "the error page does not say which role the page needs"
    return None


def error_shape(endpoint: Endpoint, response: httpx.Response, code: str) -> str | None:
    body = response.json()
    kind = "authentication_error" if response.status_code == 401 else "permission_error"
    if endpoint.is_anthropic:
        if body.get("type") != "error" or body.get("error", {}).get("type") != kind:
            return f"not an Anthropic {kind} body: {body}"
        if not body["error"].get("message"):
            return f"no message in {body}"
        return None
    error = body.get("error")
    if not isinstance(error, dict) or set(error) != {"message", "type", "param", "code"}:
        return f"not an OpenAI error body: {body}"
    if error["type"] != kind or error["code"] != code:
        return f"expected type {kind} and code {code}, got {error['type']} and {error['code']}"
    return None


def test_routes_found(matrix_gateway: GatewayServer) -> None:
    found = endpoints(matrix_gateway.app)
    paths = {endpoint.path for endpoint in found}
    expected = {
        "/v1/chat/completions",
        "/v1/messages",
        "/v1/models",
        "/v1/models/{model_id:path}",
        "/metrics",
        "/admin/keys",
    }
    assert expected <= paths
    assert any(endpoint.is_page and endpoint.role for endpoint in found)
    schema = matrix_gateway.app.openapi()
    listed = {(method.upper(), path) for path, item in schema["paths"].items() for method in item}
    # The schema writes a parameter such as {name:path} without its converter.
    routed = {
        (endpoint.method, re.sub(r"\{(\w+):\w+\}", r"{\1}", endpoint.path)) for endpoint in found
    }
    assert listed <= routed


def test_public_routes(matrix_gateway: GatewayServer) -> None:
    public = {endpoint.path for endpoint in endpoints(matrix_gateway.app) if endpoint.role is None}
    static = {path for path in public if path.startswith("/static/")}
    assert PUBLIC_PATHS == EXPECTED_PUBLIC
    assert public - static == EXPECTED_PUBLIC


def test_declared_roles(matrix_gateway: GatewayServer) -> None:
    found = endpoints(matrix_gateway.app)
    declared = {endpoint.path: endpoint.role for endpoint in found}
    for path, role in POLICY.items():
        assert declared[path] is role, path
    for endpoint in found:
        if endpoint.path.startswith("/admin/"):
            assert endpoint.role is Role.ADMIN, endpoint.path


@pytest.mark.parametrize("caller", CALLERS)
def test_matrix_bearer(
    matrix_gateway: GatewayServer, secrets: dict[str, str | None], caller: str
) -> None:
    secret = secrets[caller]
    headers = {"authorization": f"Bearer {secret}"} if secret else {}
    problems = []
    for endpoint in endpoints(matrix_gateway.app):
        response = call(matrix_gateway, endpoint, headers)
        found = problem(endpoint, caller, response)
        if found:
            problems.append(f"{endpoint.method} {endpoint.path}: {found}")
    assert problems == []


@pytest.mark.parametrize("caller", CALLERS)
def test_matrix_x_api_key(
    matrix_gateway: GatewayServer, secrets: dict[str, str | None], caller: str
) -> None:
    secret = secrets[caller]
    headers = {"x-api-key": secret} if secret else {}
    problems = []
    for endpoint in endpoints(matrix_gateway.app):
        found = problem(endpoint, caller, call(matrix_gateway, endpoint, headers))
        if found:
            problems.append(f"{endpoint.method} {endpoint.path}: {found}")
    assert problems == []


@pytest.mark.parametrize("caller", ["revoked", "viewer", "admin"])
def test_session_cookie(
    matrix_gateway: GatewayServer, secrets: dict[str, str | None], caller: str
) -> None:
    models = Endpoint("GET", "/v1/models", Role.VIEWER, "/v1/models")
    response = call(matrix_gateway, models, {}, cookies={SESSION_COOKIE: secrets[caller]})
    assert problem(models, caller, response) is None


def test_bad_scheme(matrix_gateway: GatewayServer, secrets: dict[str, str | None]) -> None:
    # A key under another scheme than Bearer is not read as a key.
    with matrix_gateway.client() as client:
        response = client.get("/v1/models", headers={"authorization": f"Basic {secrets['admin']}"})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "missing_api_key"

