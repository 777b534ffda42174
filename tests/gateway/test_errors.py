"""Error responses: status, body shape and headers, for bad input and for failures upstream."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.requests import Request

from fakeserver import FakeServer, PlannedReply, openai_error
from gateway.harness import GatewayServer, gateway_settings, running_gateway
from gateway.test_role_matrix import endpoints
from trunkline.config import Settings
from trunkline.server.auth import AuthFailure
from trunkline.server.body_limit import DEFAULT_MAX_BODY_BYTES, BodySizeLimit
from trunkline.server.errors import ApiError, error_response, handle_auth_failure
from trunkline.server.fast_path import GatewayApp
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


# Bodies the request models reject, with messages a client can act on


LONE_SURROGATE_BODIES = {
    "/v1/chat/completions": b'{"model": "chat", "messages": [{"role": "user", "content": "x \\ud800"}]}',
    "/v1/messages": (
        b'{"model": "claude", "max_tokens": 10, '
        b'"messages": [{"role": "user", "content": [{"type": "text", "text": "x \\ud800"}]}]}'
    ),
}


@pytest.mark.parametrize("path", sorted(LONE_SURROGATE_BODIES))
def test_lone_surrogate(
    client: httpx.Client, gateway: GatewayServer, fake_server: FakeServer, path: str
) -> None:
    headers = {"content-type": "application/json"}
    response = client.post(path, content=LONE_SURROGATE_BODIES[path], headers=headers)
    assert response.status_code == 400
    message = (response.json()["error"])["message"]
    assert "lone surrogate \\ud800" in message
    assert "character 2" in message
    assert fake_server.requests == []
    assert gateway.calls() == []


def test_lone_surrogate_in_system(client: httpx.Client, fake_server: FakeServer) -> None:
    body = (
        b'{"model": "claude", "max_tokens": 10, "system": "\\udfff", '
        b'"messages": [{"role": "user", "content": "Hi"}]}'
    )
    response = client.post("/v1/messages", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert fake_server.requests == []


def test_json_without_content_type(client: httpx.Client) -> None:
    body = b'{"model": "chat", "messages": [{"role": "user", "content": "Hello"}]}'
    response = client.post("/v1/chat/completions", content=body, headers={"content-type": "text/plain"})
    assert response.status_code == 422
    message = response.json()["error"]["message"]
    assert message.endswith(
        "the body must be a JSON object; send Content-Type: application/json instead of text/plain"
    )


def test_empty_body(client: httpx.Client) -> None:
    for path in ("/v1/chat/completions", "/v1/messages"):
        response = client.post(path, headers={"content-type": "application/json"})
        assert response.status_code == 422
        assert "the body is empty" in response.text


def test_body_array(client: httpx.Client) -> None:
    response = client.post("/v1/chat/completions", json=[])
    assert response.status_code == 422
    assert "the body must be a JSON object, got an array" in response.json()["error"]["message"]


def test_image_part(client: httpx.Client, fake_server: FakeServer) -> None:
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    content = [{"type": "text", "text": "What is this?"}, image]
    body = {"model": "chat", "messages": [{"role": "user", "content": content}]}
    error = client.post("/v1/chat/completions", json=body).json()["error"]
    assert "images are not supported by this gateway; send text content" in error["message"]
    assert "Input should be" not in error["message"]
    assert error["param"] == "messages.0.content"
    block = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}
    body = {"model": "claude", "max_tokens": 10, "messages": [{"role": "user", "content": [block]}]}
    response = client.post("/v1/messages", json=body)
    assert response.status_code == 422
    assert "images are not supported" in response.json()["error"]["message"]
    assert fake_server.requests == []


def test_document_part(client: httpx.Client) -> None:
    source = {"type": "text", "media_type": "text/plain", "data": "42"}
    block = {"type": "document", "source": source}
    body = {"model": "claude", "max_tokens": 10, "messages": [{"role": "user", "content": [block]}]}
    response = client.post("/v1/messages", json=body)
    assert response.status_code == 422
    message = response.json()["error"]["message"]
    assert "content parts of type 'document' are not supported" in message


# The size limit of request bodies


@pytest.fixture
def small_gateway(fake_server: FakeServer, tmp_path: Path) -> Iterator[GatewayServer]:
    settings = gateway_settings(fake_server.base_url)
    with running_gateway(settings, tmp_path, max_body_bytes=2000) as server:
        yield server


def test_body_too_large(small_gateway: GatewayServer, fake_server: FakeServer) -> None:
    long_text = "word " * 1000
    with small_gateway.client(small_gateway.key()) as client:
        chat = {"model": "chat", "messages": [{"role": "user", "content": long_text}]}
        refused = client.post("/v1/chat/completions", json=chat)
        anthropic_body = {
            "model": "claude",
            "max_tokens": 10,
            "messages": [{"role": "user", "content": long_text}],
        }
        refused_anthropic = client.post("/v1/messages", json=anthropic_body)
        fits = client.post("/v1/chat/completions", json={"model": "chat", "messages": USER})
    assert refused.status_code == 413
    assert refused.json()["error"]["code"] == "request_too_large"
    assert "2000 bytes" in refused.json()["error"]["message"]
    assert refused_anthropic.status_code == 413
    assert refused_anthropic.json()["type"] == "error"
    assert refused_anthropic.json()["error"]["type"] == "request_too_large"
    assert fits.status_code == 200
    assert len(fake_server.requests) == 1


def test_chunked_body_too_large(small_gateway: GatewayServer, fake_server: FakeServer) -> None:
    text = json.dumps({"model": "chat", "messages": [{"role": "user", "content": "word " * 1000}]})

    def pieces() -> Iterator[bytes]:
        # A generator has no length, so httpx sends it with chunked transfer encoding.
        data = text.encode()
        for start in range(0, len(data), 500):
            yield data[start : start + 500]

    with small_gateway.client(small_gateway.key()) as client:
        headers = {"content-type": "application/json"}
        response = client.post("/v1/chat/completions", content=pieces(), headers=headers)
    assert response.request.headers.get("transfer-encoding") == "chunked"
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"
    assert fake_server.requests == []


def test_chunked_body_within_cap(small_gateway: GatewayServer, fake_server: FakeServer) -> None:
    # Without Content-Length the fast path hands the request to FastAPI's route, which returns the same response.
    data = json.dumps({"model": "chat", "messages": USER}).encode()
    with small_gateway.client(small_gateway.key()) as client:
        response = client.post(
            "/v1/chat/completions", content=iter([data[:10], data[10:]]), headers={"content-type": "application/json"}
        )
    assert response.request.headers.get("transfer-encoding") == "chunked"
    assert response.status_code == 200
    assert response.json()["object"] == "chat.completion"
    assert len(fake_server.requests) == 1


# Failures of calls that have a record


def test_error_carries_call_id(
    client: httpx.Client, gateway: GatewayServer, fake_server: FakeServer
) -> None:
    fake_server.plan(PlannedReply(status=500, body=openai_error("boom", error_type="server_error")))
    response = client.post("/v1/chat/completions", json={"model": "chat", "messages": USER})
    assert response.status_code == 502
    row = gateway.calls()[-1]
    assert response.headers["x-trunkline-call-id"] == row["call_id"]
    assert response.headers["x-trunkline-trace-id"] == row["trace_id"]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", {"model": "chat", "messages": USER, "stream": True}),
        ("/v1/messages", {"model": "claude", "max_tokens": 10, "messages": USER, "stream": True}),
    ],
)
def test_stream_error_carries_call_id(
    client: httpx.Client, gateway: GatewayServer, fake_server: FakeServer, path: str, body: dict
) -> None:
    # The upstream stream ends before its first text: after OpenAI's role chunk,
    # or after Anthropic's message_start and ping.
    fake_server.plan(PlannedReply(break_after=1 if path.endswith("completions") else 2))
    response = client.post(path, json=body)
    assert response.status_code == 502
    row = gateway.calls()[-1]
    assert response.headers["x-trunkline-call-id"] == row["call_id"]
    assert response.headers["x-trunkline-trace-id"] == row["trace_id"]


def test_rejection_has_no_call_id(client: httpx.Client) -> None:
    response = client.post("/v1/chat/completions", json={"model": "gpt-9", "messages": USER})
    assert response.status_code == 404
    assert "x-trunkline-call-id" not in response.headers


# Open circuit breakers


def test_open_circuit_retry_after(fake_server: FakeServer, tmp_path: Path) -> None:
    declared = gateway_settings(fake_server.base_url).model_dump(exclude_unset=True)
    declared["routes"]["fragile"] = {
        "deployments": ["fake-gpt"],
        "max_attempts": 1,
        "breaker_failures": 1,
        "breaker_cooldown_s": 600,
    }
    fake_server.plan(PlannedReply(status=500, body=openai_error("boom", error_type="server_error")))
    with running_gateway(Settings.model_validate(declared), tmp_path) as server:
        with server.client(server.key()) as client:
            body = {"model": "fragile", "messages": USER}
            failed = client.post("/v1/chat/completions", json=body)
            skipped = client.post("/v1/chat/completions", json=body)
    assert failed.status_code == 502
    assert skipped.status_code == 503
    assert "next probe in" in skipped.json()["error"]["message"]
    assert 500 < int(skipped.headers["retry-after"]) <= 600
    assert skipped.headers["x-trunkline-call-id"]
    assert len(fake_server.requests) == 1


# A deployment whose API key variable is unset


@pytest.fixture
def keyless_gateway(
    fake_server: FakeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[GatewayServer]:
    monkeypatch.delenv(UNSET_VARIABLE, raising=False)
    declared = gateway_settings(fake_server.base_url).model_dump(exclude_unset=True)
    declared["deployments"]["fake-gpt"]["api_key_env"] = UNSET_VARIABLE
    with running_gateway(Settings.model_validate(declared), tmp_path) as server:
        yield server


UNSET_VARIABLE = "TRUNKLINE_TEST_GATEWAY_UNSET_KEY"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", {"model": "chat", "messages": USER}),
        ("/v1/chat/completions", {"model": "chat", "messages": USER, "stream": True}),
        ("/v1/messages", {"model": "chat", "max_tokens": 10, "messages": USER}),
    ],
)
def test_missing_key_variable(
    keyless_gateway: GatewayServer,
    fake_server: FakeServer,
    caplog: pytest.LogCaptureFixture,
    path: str,
    body: dict,
) -> None:
    with caplog.at_level(logging.ERROR, logger="trunkline.server.gateway"):
        with keyless_gateway.client(keyless_gateway.key()) as client:
            response = client.post(path, json=body)
    assert response.status_code == 500
    text = response.text
    assert "gateway_configuration" in text or "api_error" in text
    assert "the gateway is misconfigured for model 'chat'" in text
    assert "the operator must" in text
    assert UNSET_VARIABLE not in text
    assert "export" not in text
    row = keyless_gateway.calls()[-1]
    assert response.headers["x-trunkline-call-id"] == row["call_id"]
    logged = [record for record in caplog.records if record.levelno == logging.ERROR]
    assert len(logged) == 1
    assert UNSET_VARIABLE in logged[0].getMessage()
    assert row["call_id"] in logged[0].getMessage()
    assert fake_server.requests == []


def test_limiter_misconfigured(fake_server: FakeServer, tmp_path: Path) -> None:
    # Not a Redis URL, so the shared limiter cannot be built when a key's rpm needs it.
    settings = gateway_settings(fake_server.base_url).model_copy(update={"redis_url": "http://127.0.0.1:1"})
    with running_gateway(settings, tmp_path) as server:
        with server.client(server.key(rpm=10)) as client:
            response = client.post("/v1/chat/completions", json={"model": "chat", "messages": USER})
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "gateway_configuration"
    assert "127.0.0.1:1" not in response.text
    assert fake_server.requests == []


# Metrics of every response


def test_every_status_counted(gateway: GatewayServer, fake_server: FakeServer) -> None:
    chat = {"model": "chat", "messages": USER}
    with gateway.client("tk-000000000000-unknown") as stranger:
        assert stranger.post("/v1/chat/completions", json=chat).status_code == 401
    with gateway.client(gateway.key(Role.VIEWER)) as viewer:
        assert viewer.post("/v1/messages", json=chat).status_code == 403
        assert viewer.get("/v1/models").status_code == 200
        assert viewer.get("/v1/models/gpt-9").status_code == 404
    with gateway.client(gateway.key(Role.DEVELOPER, routes=("claude",))) as developer:
        assert developer.post("/v1/chat/completions", json=chat).status_code == 403
        assert developer.post("/v1/chat/completions", json={**chat, "model": "gpt-9"}).status_code == 404
        assert developer.get("/v1/chat/completions").status_code == 405
        assert developer.post("/v1/chat/completions", json={"model": "chat"}).status_code == 422
        tools = {**chat, "model": "claude", "tools": [{"type": "function"}]}
        assert developer.post("/v1/chat/completions", json=tools).status_code == 400
    with gateway.client(gateway.key(Role.METRICS)) as scraper:
        text = scraper.get("/metrics").text
    counted = {
        ("chat_completions", "-", "401"),
        ("messages", "-", "403"),
        ("models", "-", "200"),
        ("models", "-", "404"),
        ("chat_completions", "chat", "403"),
        ("chat_completions", "-", "404"),
        ("chat_completions", "-", "405"),
        ("chat_completions", "-", "422"),
        ("chat_completions", "claude", "400"),
    }
    for endpoint, model, status in counted:
        line = (
            f'trunkline_gateway_requests_total{{endpoint="{endpoint}",model="{model}",'
            f'status="{status}"}} 1.0'
        )
        assert line in text
    assert fake_server.requests == []


def test_body_too_large_counted(small_gateway: GatewayServer) -> None:
    body = {"model": "chat", "messages": [{"role": "user", "content": "word " * 1000}]}
    with small_gateway.client(small_gateway.key()) as client:
        assert client.post("/v1/chat/completions", json=body).status_code == 413
    with small_gateway.client(small_gateway.key(Role.METRICS)) as scraper:
        text = scraper.get("/metrics").text
    line = 'trunkline_gateway_requests_total{endpoint="chat_completions",model="-",status="413"} 1.0'
    assert line in text


# Role errors


def test_role_messages(gateway: GatewayServer) -> None:
    viewer = gateway.new_key(Role.VIEWER)
    with gateway.client(viewer.secret) as client:
        denied = client.post("/v1/chat/completions", json={"model": "chat", "messages": USER})
        metrics = client.get("/metrics")
        keys = client.get("/admin/keys")
    expected = f"the key {viewer.key.key_id} has role viewer; this endpoint needs role developer or above"
    assert denied.json()["error"]["message"] == expected
    assert metrics.json()["error"]["message"].endswith("this endpoint needs role admin or metrics")
    assert keys.json()["error"]["message"].endswith("this endpoint needs role admin")


def test_fast_path_in_front(gateway: GatewayServer) -> None:
    # Well-formed chat completions are handled before FastAPI's middleware,
    # and the route FastAPI declares for the others keeps the same role.
    assert isinstance(gateway.app, GatewayApp)
    assert gateway.app.max_body_bytes == DEFAULT_MAX_BODY_BYTES
    [chat] = [found for found in endpoints(gateway.app) if found.path == "/v1/chat/completions"]
    assert (chat.method, chat.role) == ("POST", Role.DEVELOPER)


def test_fast_path_skips_middleware(gateway: GatewayServer, monkeypatch: pytest.MonkeyPatch) -> None:
    # A well-formed chat completion never enters FastAPI's middleware stack, while other requests do.
    seen: list[str] = []
    original = BodySizeLimit.__call__

    async def recording_call(self, scope, receive, send):  # noqa: ANN001, ANN202
        seen.append(scope["path"])
        await original(self, scope, receive, send)

    monkeypatch.setattr(BodySizeLimit, "__call__", recording_call)
    with gateway.client(gateway.key()) as client:
        chat = client.post("/v1/chat/completions", json={"model": "chat", "messages": USER})
        models = client.get("/v1/models")
    assert chat.status_code == 200
    assert models.status_code == 200
    assert seen == ["/v1/models"]
