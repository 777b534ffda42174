"""AnthropicProvider against the fake server, through the real `anthropic` SDK client."""

from __future__ import annotations

import asyncio
import email.utils
import json
import time
from collections.abc import AsyncIterator

import pytest

from fakeserver import (
    ANTHROPIC_MESSAGES_PATH,
    FakeServer,
    PlannedReply,
    anthropic_error,
    anthropic_message,
    anthropic_text_block,
    anthropic_tool_use_block,
)
from trunkline.errors import ErrorKind, ProviderError
from trunkline.providers.anthropic import DEFAULT_MAX_TOKENS, OUTPUT_TOOL, AnthropicProvider
from trunkline.types.calls import ModelRequest
from trunkline.types.messages import Message

MODEL = "claude-sonnet-4-5"
API_KEY = "sk-ant-test-key"
OUTPUT_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
}


def user_request(**fields: object) -> ModelRequest:
    return ModelRequest(model=MODEL, messages=(Message.user("Where is the Louvre?"),), **fields)


def output_tool_reply(tool_input: dict[str, object]) -> PlannedReply:
    """Build a reply whose message calls the structured-output tool with `tool_input`."""
    return PlannedReply(body=anthropic_message([anthropic_tool_use_block(OUTPUT_TOOL, tool_input)]))


@pytest.fixture
async def provider(fake_server: FakeServer) -> AsyncIterator[AnthropicProvider]:
    adapter = AnthropicProvider.create(MODEL, api_key=API_KEY, base_url=fake_server.base_url)
    yield adapter
    await adapter.aclose()


async def failed_call(
    provider: AnthropicProvider, reply: PlannedReply, server: FakeServer
) -> ProviderError:
    """Plan `reply`, make one call, and return the ProviderError it raised."""
    server.plan(reply)
    with pytest.raises(ProviderError) as caught:
        await provider.complete(user_request())
    return caught.value


# Successful replies


async def test_text_reply_content(provider: AnthropicProvider, fake_server: FakeServer) -> None:
    body = anthropic_message([anthropic_text_block("Paris.")], model="claude-sonnet-4-5-20250929")
    fake_server.plan(PlannedReply(body=body))

    response = await provider.complete(user_request())

    assert response.text == "Paris."
    assert response.model == "claude-sonnet-4-5-20250929"
    assert response.finish_reason == "stop"
    assert response.response_id is not None
    assert response.response_id.startswith("msg_")
    assert response.tool_calls == ()


async def test_text_blocks_joined(provider: AnthropicProvider, fake_server: FakeServer) -> None:
    blocks = [anthropic_text_block("The Louvre is in "), anthropic_text_block("Paris.")]
    fake_server.plan(PlannedReply(body=anthropic_message(blocks)))

    response = await provider.complete(user_request())

    assert response.text == "The Louvre is in Paris."


async def test_text_reply_usage(provider: AnthropicProvider, fake_server: FakeServer) -> None:
    body = anthropic_message(
        input_tokens=50,
        output_tokens=120,
        cache_read_input_tokens=2000,
        cache_creation_input_tokens=300,
    )
    fake_server.plan(PlannedReply(body=body))

    usage = (await provider.complete(user_request())).usage

    assert usage.input_tokens == 2350
    assert usage.output_tokens == 120
    assert usage.cache_read_tokens == 2000
    assert usage.cache_write_tokens == 300
    assert usage.reasoning_tokens == 0


async def test_max_tokens_stop_reason(provider: AnthropicProvider, fake_server: FakeServer) -> None:
    fake_server.plan(PlannedReply(body=anthropic_message(stop_reason="max_tokens")))

    response = await provider.complete(user_request())

    assert response.finish_reason == "length"


async def test_request_shape(provider: AnthropicProvider, fake_server: FakeServer) -> None:
    request = ModelRequest(
        model=MODEL,
        messages=(
            Message.system("Answer briefly."),
            Message.system("Name the city only."),
            Message.user("Where is the Louvre?"),
        ),
        temperature=0.2,
        stop=("END",),
    )

    await provider.complete(request)

    [sent] = fake_server.requests
    assert sent.method == "POST"
    assert sent.path == ANTHROPIC_MESSAGES_PATH
    # The anthropic SDK 2.17 sends the API key as a bearer token, not as x-api-key.
    assert sent.headers["authorization"] == f"Bearer {API_KEY}"
    assert "anthropic-version" in sent.headers
    assert sent.body["model"] == MODEL
    assert sent.body["max_tokens"] == DEFAULT_MAX_TOKENS
    assert sent.body["system"] == "Answer briefly.\n\nName the city only."
    assert sent.body["messages"] == [{"role": "user", "content": "Where is the Louvre?"}]
    assert sent.body["temperature"] == 0.2
    assert sent.body["stop_sequences"] == ["END"]
    assert "tools" not in sent.body
    assert "tool_choice" not in sent.body


async def test_request_top_p(provider: AnthropicProvider, fake_server: FakeServer) -> None:
    await provider.complete(user_request(top_p=0.9))

    [sent] = fake_server.requests
    assert sent.body["top_p"] == 0.9
    assert "temperature" not in sent.body


async def test_request_max_tokens(provider: AnthropicProvider, fake_server: FakeServer) -> None:
    await provider.complete(user_request(max_tokens=64))

    [sent] = fake_server.requests
    assert sent.body["max_tokens"] == 64


async def test_tool_use_reply(provider: AnthropicProvider, fake_server: FakeServer) -> None:
    blocks = [
        anthropic_text_block("Let me check."),
        anthropic_tool_use_block("get_weather", {"city": "Paris"}, block_id="toolu_abc"),
    ]
    fake_server.plan(PlannedReply(body=anthropic_message(blocks)))

    response = await provider.complete(user_request())

    assert response.text == "Let me check."
    assert response.finish_reason == "tool_calls"
    assert len(response.tool_calls) == 1
    assert response.tool_calls[0].id == "toolu_abc"
    assert response.tool_calls[0].name == "get_weather"
    assert json.loads(response.tool_calls[0].arguments) == {"city": "Paris"}


# Structured output


async def test_structured_output_request(
    provider: AnthropicProvider, fake_server: FakeServer
) -> None:
    fake_server.plan(output_tool_reply({"city": "Paris"}))

    await provider.complete(user_request(output_schema=OUTPUT_SCHEMA))

    [sent] = fake_server.requests
    [tool] = sent.body["tools"]
    assert tool["name"] == OUTPUT_TOOL
    assert tool["input_schema"] == OUTPUT_SCHEMA
    assert sent.body["tool_choice"] == {"type": "tool", "name": OUTPUT_TOOL}


async def test_structured_output_text(provider: AnthropicProvider, fake_server: FakeServer) -> None:
    fake_server.plan(output_tool_reply({"city": "Paris"}))

    response = await provider.complete(user_request(output_schema=OUTPUT_SCHEMA))

    assert json.loads(response.text) == {"city": "Paris"}
    assert response.finish_reason == "stop"
    assert response.tool_calls == ()


async def test_output_tool_without_schema(
    provider: AnthropicProvider, fake_server: FakeServer
) -> None:
    # Without an output schema a tool that happens to share the name is an ordinary tool call.
    fake_server.plan(output_tool_reply({"city": "Paris"}))

    response = await provider.complete(user_request())

    assert response.text == ""
    assert response.finish_reason == "tool_calls"
    assert len(response.tool_calls) == 1


# Errors

ERROR_CASES = [
    pytest.param(
        400,
        anthropic_error("invalid_request_error", "temperature: range: 0..1"),
        ErrorKind.BAD_REQUEST,
        id="400-plain",
    ),
    pytest.param(
        400,
        anthropic_error(
            "invalid_request_error", "prompt is too long: 208154 tokens > 200000 maximum"
        ),
        ErrorKind.CONTEXT_LENGTH,
        id="400-context-length",
    ),
    pytest.param(
        401,
        anthropic_error("authentication_error", "invalid x-api-key"),
        ErrorKind.AUTH,
        id="401",
    ),
    pytest.param(
        403,
        anthropic_error(
            "permission_error", "Your API key does not have permission to use this model."
        ),
        ErrorKind.AUTH,
        id="403",
    ),
    pytest.param(
        404,
        anthropic_error("not_found_error", "model: claude-9"),
        ErrorKind.NOT_FOUND,
        id="404",
    ),
    pytest.param(
        429,
        anthropic_error(
            "rate_limit_error", "Number of request tokens has exceeded your rate limit."
        ),
        ErrorKind.RATE_LIMITED,
        id="429",
    ),
    pytest.param(
        500,
        anthropic_error("api_error", "Internal server error"),
        ErrorKind.SERVER_ERROR,
        id="500",
    ),
    pytest.param(
        503,
        anthropic_error("api_error", "Service unavailable"),
        ErrorKind.OVERLOADED,
        id="503-api-error",
    ),
    pytest.param(503, "upstream connect error", ErrorKind.OVERLOADED, id="503-text"),
    pytest.param(
        529,
        anthropic_error("overloaded_error", "Overloaded"),
        ErrorKind.OVERLOADED,
        id="529",
    ),
]


@pytest.mark.parametrize(("status", "body", "kind"), ERROR_CASES)
async def test_error_kind(
    provider: AnthropicProvider,
    fake_server: FakeServer,
    status: int,
    body: object,
    kind: ErrorKind,
) -> None:
    error = await failed_call(provider, PlannedReply(status=status, body=body), fake_server)

    assert error.kind is kind
    assert error.status_code == status
    assert error.provider == "anthropic"
    assert error.model == MODEL
    assert MODEL in str(error)


@pytest.mark.parametrize(("status", "body", "kind"), ERROR_CASES)
async def test_error_single_request(
    provider: AnthropicProvider,
    fake_server: FakeServer,
    status: int,
    body: object,
    kind: ErrorKind,
) -> None:
    await failed_call(provider, PlannedReply(status=status, body=body), fake_server)

    [sent] = fake_server.requests
    assert sent.headers["x-stainless-retry-count"] == "0"


async def test_should_retry_header_ignored(
    provider: AnthropicProvider, fake_server: FakeServer
) -> None:
    reply = PlannedReply(
        status=529,
        body=anthropic_error("overloaded_error", "Overloaded"),
        headers={"x-should-retry": "true", "retry-after-ms": "1"},
    )

    await failed_call(provider, reply, fake_server)

    assert len(fake_server.requests) == 1


async def test_error_without_retry_after(
    provider: AnthropicProvider, fake_server: FakeServer
) -> None:
    reply = PlannedReply(status=529, body=anthropic_error("overloaded_error", "Overloaded"))

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
    provider: AnthropicProvider,
    fake_server: FakeServer,
    headers: dict[str, str],
    expected: float,
) -> None:
    body = anthropic_error("rate_limit_error", "Number of requests has exceeded your rate limit.")

    reply = PlannedReply(status=429, body=body, headers=headers)

    error = await failed_call(provider, reply, fake_server)

    assert error.kind is ErrorKind.RATE_LIMITED
    assert error.retry_after_s == pytest.approx(expected)


async def test_rate_limit_retry_after_date(
    provider: AnthropicProvider, fake_server: FakeServer
) -> None:
    # HTTP dates have one-second resolution, so the parsed wait may be up to a second short.
    retry_at = email.utils.formatdate(time.time() + 30, usegmt=True)
    body = anthropic_error("rate_limit_error", "Number of requests has exceeded your rate limit.")
    reply = PlannedReply(status=429, body=body, headers={"retry-after": retry_at})

    error = await failed_call(provider, reply, fake_server)

    assert error.retry_after_s is not None
    assert 25.0 <= error.retry_after_s <= 30.0


# Connections


async def test_cancelled_call_propagates(
    provider: AnthropicProvider, fake_server: FakeServer
) -> None:
    # The router enforces timeouts by cancelling the call, and the adapter must let that through.
    fake_server.plan(PlannedReply(delay_s=5.0))

    with pytest.raises(TimeoutError):
        await asyncio.wait_for(provider.complete(user_request()), timeout=0.2)

    assert len(fake_server.requests) == 1


async def test_connection_refused(closed_port_url: str) -> None:
    adapter = AnthropicProvider.create(MODEL, api_key=API_KEY, base_url=closed_port_url)

    with pytest.raises(ProviderError) as caught:
        await adapter.complete(user_request())
    await adapter.aclose()

    assert caught.value.kind is ErrorKind.CONNECTION
    assert caught.value.status_code is None
    assert caught.value.retry_after_s is None


async def test_aclose_closes_client(fake_server: FakeServer) -> None:
    adapter = AnthropicProvider.create(MODEL, api_key=API_KEY, base_url=fake_server.base_url)
    await adapter.complete(user_request())

    await adapter.aclose()

    assert adapter.client.is_closed()
