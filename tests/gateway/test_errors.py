"""Error responses: status, body shape and headers, for bad input and for failures upstream."""

from __future__ import annotations

import math

import httpx
import pytest
from starlette.requests import Request

from fakeserver import FakeServer, PlannedReply, openai_error
from gateway.harness import GatewayServer
from trunkline.server.auth import AuthFailure
from trunkline.server.errors import ApiError, error_response, handle_auth_failure
from trunkline.store.keys import Role

USER = [{"role": "user", "content": "Hello"}]


def request_for(path: str) -> Request:
    scope = {
        "type": "http",
        "method": "GET",
        "scheme": "http",
        "server": ("127.0.0.1", 8000),
        "root_path": "",
        "path": path,
        "query_string": b"",
        "headers": [],
    }
    return Request(scope)


async def test_page_redirect_quoted() -> None:
    failure = AuthFailure(401, "missing_api_key", "no API key was sent")
    response = await handle_auth_failure(request_for("/calls/a&b c"), failure)
    assert response.status_code == 303
    assert response.headers["location"] == "/login?next=/calls/a%26b%20c"


async def test_api_not_redirected() -> None:
    failure = AuthFailure(401, "missing_api_key", "no API key was sent")
    response = await handle_auth_failure(request_for("/api/calls"), failure)
    assert response.status_code == 401


@pytest.mark.parametrize(
    ("wait_s", "header"), [(0.2, "1"), (7.2, "8"), (math.inf, None), (math.nan, None)]
)
def test_retry_after_header(wait_s: float, header: str | None) -> None:
    error = ApiError(429, "rate_limit_exceeded", "slow down", retry_after_s=wait_s)
    response = error_response(request_for("/v1/chat/completions"), error)
    assert response.status_code == 429
    assert response.headers.get("retry-after") == header


@pytest.fixture
def client(gateway: GatewayServer) -> httpx.Client:
    with gateway.client(gateway.key(Role.DEVELOPER)) as client:
        yield client


def test_invalid_json(client: httpx.Client) -> None:
    headers = {"content-type": "application/json"}
    response = client.post("/v1/chat/completions", content=b'{"model": ', headers=headers)
    assert response.status_code == 422
    error = response.json()["error"]
    assert "not valid JSON" in error["message"]
    assert error["param"] is None
    response = client.post("/v1/messages", content=b"{oops}", headers=headers)
    assert response.status_code == 422
    assert response.json()["type"] == "error"
    assert "not valid JSON" in response.json()["error"]["message"]


@pytest.mark.parametrize("body", [[], "text", 5, None])
def test_body_not_object(client: httpx.Client, body: object) -> None:
    for path in ("/v1/chat/completions", "/v1/messages"):
        assert client.post(path, json=body).status_code == 422


def test_nested_param(client: httpx.Client) -> None:
    body = {"model": "chat", "messages": [{"role": "user", "content": [{"type": "image"}]}]}
    error = client.post("/v1/chat/completions", json=body).json()["error"]
    assert error["param"].startswith("messages.0.content")
    assert error["code"] == "invalid_request"


def test_unknown_path(client: httpx.Client) -> None:
    response = client.get("/v1/engines")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    response = client.get("/v1/messages/batches")
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found_error"


def test_wrong_method(client: httpx.Client) -> None:
    response = client.get("/v1/chat/completions")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"
    assert response.headers["allow"] == "POST"


def test_stream_with_schema(client: httpx.Client, fake_server: FakeServer) -> None:
    json_object = {"type": "json_object"}
    body = {"model": "chat", "messages": USER, "stream": True, "response_format": json_object}
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "response_format"
    assert fake_server.requests == []


def test_schema_missing(client: httpx.Client) -> None:
    body = {"model": "chat", "messages": USER, "response_format": {"type": "json_schema"}}
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 400
    assert "json_schema.schema" in response.json()["error"]["message"]


def test_schema_invalid(client: httpx.Client, fake_server: FakeServer) -> None:
    format_ = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "blob"}}}
    body = {"model": "chat", "messages": USER, "response_format": format_}
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 400
    assert fake_server.requests == []


def test_output_invalid(client: httpx.Client) -> None:
    # The fake replies with plain text, which no repair turns into the JSON requested.
    body = {"model": "chat", "messages": USER, "response_format": {"type": "json_object"}}
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "invalid_output"


def test_upstream_overloaded(client: httpx.Client, fake_server: FakeServer) -> None:
    fake_server.plan(
        PlannedReply(
            status=503,
            body=openai_error("busy", error_type="server_error"),
            headers={"retry-after": "4"},
        )
    )
    response = client.post("/v1/chat/completions", json={"model": "chat", "messages": USER})
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "overloaded"
    assert response.headers["retry-after"] == "4"


def test_error_metrics(gateway: GatewayServer, fake_server: FakeServer) -> None:
    fake_server.plan(
        PlannedReply(
            status=429,
            body=openai_error("slow", error_type="rate_limit_error"),
            headers={"retry-after": "3"},
        )
    )
    body = {"model": "chat", "messages": USER}
    with gateway.client("tk-000000000000-unknown") as stranger:
        assert stranger.post("/v1/chat/completions", json=body).status_code == 401
    with gateway.client(gateway.key(Role.VIEWER)) as viewer:
        assert viewer.post("/v1/chat/completions", json=body).status_code == 403
    with gateway.client(gateway.key(Role.DEVELOPER)) as developer:
        assert developer.post("/v1/chat/completions", json=body).status_code == 429
        assert developer.post("/v1/chat/completions", json=body).status_code == 200
    with gateway.client(gateway.key(Role.METRICS)) as scraper:
        text = scraper.get("/metrics").text
    assert 'trunkline_gateway_errors_total{kind="auth"} 1.0' in text
    assert 'trunkline_gateway_errors_total{kind="permission"} 1.0' in text
    assert 'trunkline_gateway_errors_total{kind="rate_limited"} 1.0' in text
    requests = 'trunkline_gateway_requests_total{endpoint="chat_completions",model="chat",status='
    assert f'{requests}"429"}} 1.0' in text
    assert f'{requests}"200"}} 1.0' in text
    assert 'trunkline_gateway_tokens_total{direction="input",model="gpt-4o-mini"} 12.0' in text
