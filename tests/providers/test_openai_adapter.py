"""OpenAIProvider against the fake server, through the real `openai` SDK client."""

from __future__ import annotations

import asyncio
import email.utils
import json
import time
from collections.abc import AsyncIterator

import pytest

from fakeserver import (
    OPENAI_CHAT_PATH,
    FakeServer,
    PlannedReply,
    openai_completion,
    openai_error,
    openai_tool_call,
)
from trunkline.errors import ErrorKind, ProviderError
from trunkline.providers.openai import OpenAIProvider
from trunkline.types.calls import ModelRequest
from trunkline.types.messages import Message

MODEL = "gpt-4o-mini"
API_KEY = "sk-test-key"
AZURE_API_VERSION = "2024-10-21"
OUTPUT_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
    "additionalProperties": False,
}


def user_request(**fields: object) -> ModelRequest:
    return ModelRequest(model=MODEL, messages=(Message.user("Where is the Louvre?"),), **fields)


@pytest.fixture
async def provider(fake_server: FakeServer) -> AsyncIterator[OpenAIProvider]:
    adapter = OpenAIProvider.create(MODEL, api_key=API_KEY, base_url=fake_server.openai_base_url)
    yield adapter
    await adapter.aclose()


@pytest.fixture
async def azure_provider(fake_server: FakeServer) -> AsyncIterator[OpenAIProvider]:
    adapter = OpenAIProvider.create(
        MODEL,
        api_key=API_KEY,
        base_url=fake_server.base_url,
        azure_api_version=AZURE_API_VERSION,
    )
    yield adapter
    await adapter.aclose()


async def failed_call(
    provider: OpenAIProvider, reply: PlannedReply, server: FakeServer
) -> ProviderError:
    """Plan `reply`, make one call, and return the ProviderError it raised."""
    server.plan(reply)
    with pytest.raises(ProviderError) as caught:
        await provider.complete(user_request())
    return caught.value


# Successful replies


async def test_text_reply_content(provider: OpenAIProvider, fake_server: FakeServer) -> None:
    fake_server.plan(PlannedReply(body=openai_completion("Paris.", model="gpt-4o-mini-2024-07-18")))

    response = await provider.complete(user_request())

    assert response.text == "Paris."
    assert response.model == "gpt-4o-mini-2024-07-18"
    assert response.finish_reason == "stop"
    assert response.response_id is not None
    assert response.response_id.startswith("chatcmpl-")
    assert response.model_version == "fp_fake0001"
    assert response.tool_calls == ()


async def test_text_reply_usage(provider: OpenAIProvider, fake_server: FakeServer) -> None:
    fake_server.plan(
        PlannedReply(
            body=openai_completion(
                prompt_tokens=1200, completion_tokens=300, cached_tokens=1024, reasoning_tokens=256
            )
        )
    )

    usage = (await provider.complete(user_request())).usage

    assert usage.input_tokens == 1200
    assert usage.output_tokens == 300
    assert usage.cache_read_tokens == 1024
    assert usage.cache_write_tokens == 0
    assert usage.reasoning_tokens == 256
    assert usage.estimated is False


async def test_length_finish_reason(provider: OpenAIProvider, fake_server: FakeServer) -> None:
    fake_server.plan(PlannedReply(body=openai_completion("Par", finish_reason="length")))

    response = await provider.complete(user_request())

    assert response.finish_reason == "length"


async def test_request_shape(provider: OpenAIProvider, fake_server: FakeServer) -> None:
    await provider.complete(user_request(temperature=0.2, max_tokens=50, stop=("END",)))

    [sent] = fake_server.requests
    assert sent.method == "POST"
    assert sent.path == OPENAI_CHAT_PATH
    assert sent.headers["authorization"] == f"Bearer {API_KEY}"
    assert sent.body["model"] == MODEL
    assert sent.body["messages"] == [{"role": "user", "content": "Where is the Louvre?"}]
    assert sent.body["temperature"] == 0.2
    assert sent.body["max_tokens"] == 50
    assert sent.body["stop"] == ["END"]
    assert "response_format" not in sent.body


async def test_max_completion_tokens_option(
    provider: OpenAIProvider, fake_server: FakeServer
) -> None:
    await provider.complete(user_request(max_tokens=50, extra={"use_max_completion_tokens": True}))

    [sent] = fake_server.requests
    assert sent.body["max_completion_tokens"] == 50
    assert "max_tokens" not in sent.body
    assert "use_max_completion_tokens" not in sent.body


async def test_tool_call_reply(provider: OpenAIProvider, fake_server: FakeServer) -> None:
    call = openai_tool_call("get_weather", '{"city": "Paris"}', call_id="call_abc")
    fake_server.plan(PlannedReply(body=openai_completion(None, tool_calls=[call])))

    response = await provider.complete(user_request())

    assert response.text == ""
    assert response.finish_reason == "tool_calls"
    assert len(response.tool_calls) == 1
    assert response.tool_calls[0].id == "call_abc"
    assert response.tool_calls[0].name == "get_weather"
    assert response.tool_calls[0].arguments == '{"city": "Paris"}'


# Structured output


async def test_structured_output_request(provider: OpenAIProvider, fake_server: FakeServer) -> None:
    await provider.complete(user_request(output_schema=OUTPUT_SCHEMA))

    [sent] = fake_server.requests
    response_format = sent.body["response_format"]
    assert response_format["type"] == "json_schema"
    assert response_format["json_schema"]["name"] == "output"
    assert response_format["json_schema"]["schema"] == OUTPUT_SCHEMA
    assert response_format["json_schema"]["strict"] is True


async def test_structured_output_text(provider: OpenAIProvider, fake_server: FakeServer) -> None:
    fake_server.plan(PlannedReply(body=openai_completion('{"city": "Paris"}')))

    response = await provider.complete(user_request(output_schema=OUTPUT_SCHEMA))

    assert json.loads(response.text) == {"city": "Paris"}
    assert response.finish_reason == "stop"


# Azure OpenAI


async def test_azure_deployment_path(
    azure_provider: OpenAIProvider, fake_server: FakeServer
) -> None:
    response = await azure_provider.complete(user_request())

    [sent] = fake_server.requests
    assert sent.path == f"/openai/deployments/{MODEL}/chat/completions"
    assert sent.query["api-version"] == AZURE_API_VERSION
    assert sent.headers["api-key"] == API_KEY
    assert "authorization" not in sent.headers
    assert response.text == "Hello from the fake server."


async def test_azure_error_provider_name(
    azure_provider: OpenAIProvider, fake_server: FakeServer
) -> None:
    body = openai_error("The server had an error.", error_type="server_error")
    reply = PlannedReply(status=500, body=body)

    error = await failed_call(azure_provider, reply, fake_server)

    assert error.provider == "azure"
    assert error.kind is ErrorKind.SERVER_ERROR


# Errors

ERROR_CASES = [
    pytest.param(
        400,
        openai_error("Invalid value for 'temperature'.", param="temperature", code="invalid_value"),
        ErrorKind.BAD_REQUEST,
        id="400-plain",
    ),
    pytest.param(
        400,
        openai_error(
            "This model's maximum context length is 128000 tokens. However, your messages "
            "resulted in 130512 tokens. Please reduce the length of the messages.",
            param="messages",
            code="context_length_exceeded",
        ),
        ErrorKind.CONTEXT_LENGTH,
        id="400-context-length",
    ),
    pytest.param(
        401,
        openai_error("Incorrect API key provided: sk-test.", code="invalid_api_key"),
        ErrorKind.AUTH,
        id="401",
    ),
    pytest.param(
        403,
        openai_error(
            "You are not allowed to sample from this model.", error_type="permission_error"
        ),
        ErrorKind.AUTH,
        id="403",
    ),
    pytest.param(
        404,
        openai_error("The model `gpt-9` does not exist.", code="model_not_found"),
        ErrorKind.NOT_FOUND,
        id="404",
    ),
    pytest.param(
        429,
        openai_error(
            "Rate limit reached for requests.", error_type="requests", code="rate_limit_exceeded"
        ),
        ErrorKind.RATE_LIMITED,
        id="429",
    ),
    pytest.param(
        500,
        openai_error(
            "The server had an error while processing your request.", error_type="server_error"
        ),
        ErrorKind.SERVER_ERROR,
        id="500",
    ),
    pytest.param(
        503,
        openai_error(
            "The engine is currently overloaded, please try again later.",
            error_type="server_error",
        ),
        ErrorKind.OVERLOADED,
        id="503",
    ),
    pytest.param(
        502,
        "<html><body>502 Bad Gateway</body></html>",
        ErrorKind.SERVER_ERROR,
        id="502-html",
    ),
]


@pytest.mark.parametrize(("status", "body", "kind"), ERROR_CASES)
async def test_error_kind(
    provider: OpenAIProvider, fake_server: FakeServer, status: int, body: object, kind: ErrorKind
) -> None:
    error = await failed_call(provider, PlannedReply(status=status, body=body), fake_server)

    assert error.kind is kind
    assert error.status_code == status
    assert error.provider == "openai"
    assert error.model == MODEL
    assert MODEL in str(error)


@pytest.mark.parametrize(("status", "body", "kind"), ERROR_CASES)
async def test_error_single_request(
    provider: OpenAIProvider, fake_server: FakeServer, status: int, body: object, kind: ErrorKind
) -> None:
    await failed_call(provider, PlannedReply(status=status, body=body), fake_server)

    [sent] = fake_server.requests
    assert sent.headers["x-stainless-retry-count"] == "0"


async def test_should_retry_header_ignored(
    provider: OpenAIProvider, fake_server: FakeServer
) -> None:
    reply = PlannedReply(
        status=500,
        body=openai_error("The server had an error.", error_type="server_error"),
        headers={"x-should-retry": "true", "retry-after-ms": "1"},
    )

    await failed_call(provider, reply, fake_server)

    assert len(fake_server.requests) == 1


async def test_error_without_retry_after(provider: OpenAIProvider, fake_server: FakeServer) -> None:
    body = openai_error("Rate limit reached.", code="rate_limit_exceeded")
    reply = PlannedReply(status=429, body=body)

    error = await failed_call(provider, reply, fake_server)

    assert error.retry_after_s is None


# Retry-After


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param({"retry-after": "7"}, 7.0, id="seconds"),
        pytest.param({"retry-after-ms": "1500"}, 1.5, id="milliseconds"),
        pytest.param({"retry-after-ms": "250", "retry-after": "9"}, 0.25, id="milliseconds-first"),
    ],
)
async def test_rate_limit_retry_after(
    provider: OpenAIProvider, fake_server: FakeServer, headers: dict[str, str], expected: float
) -> None:
    body = openai_error("Rate limit reached.", error_type="requests", code="rate_limit_exceeded")

    reply = PlannedReply(status=429, body=body, headers=headers)

    error = await failed_call(provider, reply, fake_server)

    assert error.kind is ErrorKind.RATE_LIMITED
    assert error.retry_after_s == pytest.approx(expected)


async def test_rate_limit_retry_after_date(
    provider: OpenAIProvider, fake_server: FakeServer
) -> None:
    # HTTP dates have one-second resolution, so the parsed wait may be up to a second short.
    retry_at = email.utils.formatdate(time.time() + 30, usegmt=True)
    body = openai_error("Rate limit reached.", error_type="requests", code="rate_limit_exceeded")
    reply = PlannedReply(status=429, body=body, headers={"retry-after": retry_at})

    error = await failed_call(provider, reply, fake_server)

    assert error.retry_after_s is not None
    assert 25.0 <= error.retry_after_s <= 30.0


# Connections


async def test_cancelled_call_propagates(
    provider: OpenAIProvider, fake_server: FakeServer
) -> None:
    # The router enforces timeouts by cancelling the call, and the adapter must let that through.
    fake_server.plan(PlannedReply(delay_s=5.0))

    with pytest.raises(TimeoutError):
        await asyncio.wait_for(provider.complete(user_request()), timeout=0.2)

    assert len(fake_server.requests) == 1


async def test_connection_refused(closed_port_url: str) -> None:
    adapter = OpenAIProvider.create(MODEL, api_key=API_KEY, base_url=f"{closed_port_url}/v1")

    with pytest.raises(ProviderError) as caught:
        await adapter.complete(user_request())
    await adapter.aclose()

    assert caught.value.kind is ErrorKind.CONNECTION
    assert caught.value.status_code is None
    assert caught.value.retry_after_s is None


async def test_aclose_closes_client(fake_server: FakeServer) -> None:
    adapter = OpenAIProvider.create(MODEL, api_key=API_KEY, base_url=fake_server.openai_base_url)
    await adapter.complete(user_request())

    await adapter.aclose()

    assert adapter.client.is_closed()


@pytest.mark.parametrize(
    ("schema", "strict"),
    [
        (
            {
                "type": "object",
                "properties": {"intent": {"type": "string"}, "tags": {"type": "array", "items": {"type": "string"}}},
                "required": ["intent", "tags"],
                "additionalProperties": False,
            },
            True,
        ),
        ({"type": "object", "properties": {"intent": {"type": "string"}}, "required": ["intent"]}, False),
        (
            {
                "type": "object",
                "properties": {"intent": {"type": "string"}, "note": {"type": "string"}},
                "required": ["intent"],
                "additionalProperties": False,
            },
            False,
        ),
        (
            {
                "type": "object",
                "properties": {"inner": {"$ref": "#/$defs/Inner"}},
                "required": ["inner"],
                "additionalProperties": False,
                "$defs": {"Inner": {"type": "object", "properties": {"x": {"type": "integer"}}}},
            },
            False,
        ),
    ],
)
def test_strict_mode_only_for_strict_schemas(schema, strict) -> None:
    from trunkline.providers.openai import is_strict_schema

    assert is_strict_schema(schema) is strict
