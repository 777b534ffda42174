"""`stream()` of the OpenAI and Anthropic adapters, run through the real SDKs.

Each test plans a reply on the fake server, then reads the deltas and the final response.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import aclosing

import pytest

from fakeserver import (
    FakeServer,
    PlannedReply,
    anthropic_error,
    anthropic_message,
    anthropic_text_block,
    anthropic_tool_use_block,
    openai_completion,
    openai_error,
    openai_tool_call,
    stream_pieces,
)
from trunkline.errors import ErrorKind, ProviderError
from trunkline.providers.anthropic import OUTPUT_TOOL, AnthropicProvider
from trunkline.providers.base import Provider
from trunkline.providers.openai import OpenAIProvider
from trunkline.types.calls import ModelRequest, ModelResponse
from trunkline.types.messages import Message

OPENAI_MODEL = "gpt-4o-mini"
ANTHROPIC_MODEL = "claude-sonnet-4-5"
API_KEY = "sk-test-key"
TEXT = "The Louvre is in the first arrondissement of Paris."
# 80 words at 0.05 s a chunk take 4 s to stream, longer than `wait_for_disconnect` waits.
LONG_TEXT = " ".join(f"word{number}" for number in range(80))
OUTPUT_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
}


def user_request(model: str, **fields: object) -> ModelRequest:
    return ModelRequest(model=model, messages=(Message.user("Where is the Louvre?"),), **fields)


@pytest.fixture
async def openai_provider(fake_server: FakeServer) -> AsyncIterator[OpenAIProvider]:
    adapter = OpenAIProvider.create(
        OPENAI_MODEL, api_key=API_KEY, base_url=fake_server.openai_base_url
    )
    yield adapter
    await adapter.aclose()


@pytest.fixture
async def anthropic_provider(fake_server: FakeServer) -> AsyncIterator[AnthropicProvider]:
    adapter = AnthropicProvider.create(
        ANTHROPIC_MODEL, api_key=API_KEY, base_url=fake_server.base_url
    )
    yield adapter
    await adapter.aclose()


async def collect(provider: Provider, request: ModelRequest) -> tuple[list[str], ModelResponse]:
    """Run one stream to its end and return its deltas and its final response."""
    items = [item async for item in provider.stream(request)]
    *deltas, final = items
    assert all(isinstance(delta, str) for delta in deltas)
    assert isinstance(final, ModelResponse)
    return deltas, final


async def collect_failure(
    provider: Provider, request: ModelRequest
) -> tuple[list[str | ModelResponse], ProviderError]:
    """Run one stream that must fail and return what it yielded before the error."""
    received: list[str | ModelResponse] = []
    with pytest.raises(ProviderError) as caught:
        async for item in provider.stream(request):
            received.append(item)
    return received, caught.value


async def wait_for_disconnect(server: FakeServer, timeout_s: float = 2.0) -> None:
    """Wait until the server has seen one client close a stream early, or fail."""
    for _ in range(int(timeout_s / 0.02)):
        if server.disconnected_streams:
            break
        await asyncio.sleep(0.02)
    assert server.disconnected_streams == 1


# OpenAI


async def test_openai_deltas_in_order(
    openai_provider: OpenAIProvider, fake_server: FakeServer
) -> None:
    fake_server.plan(PlannedReply(body=openai_completion(TEXT)))

    deltas, final = await collect(openai_provider, user_request(OPENAI_MODEL))

    assert deltas == stream_pieces(TEXT)
    assert final.text == TEXT
    assert final.tool_calls == ()


async def test_openai_stream_request_body(
    openai_provider: OpenAIProvider, fake_server: FakeServer
) -> None:
    await collect(openai_provider, user_request(OPENAI_MODEL, max_tokens=40))

    [sent] = fake_server.requests
    assert sent.body["stream"] is True
    assert sent.body["stream_options"] == {"include_usage": True}
    assert sent.body["max_tokens"] == 40


async def test_openai_final_response_fields(
    openai_provider: OpenAIProvider, fake_server: FakeServer
) -> None:
    body = openai_completion(
        TEXT,
        model="gpt-4o-mini-2024-07-18",
        finish_reason="length",
        prompt_tokens=1200,
        completion_tokens=300,
        cached_tokens=1024,
        reasoning_tokens=256,
    )
    fake_server.plan(PlannedReply(body=body))

    _, final = await collect(openai_provider, user_request(OPENAI_MODEL))

    assert final.finish_reason == "length"
    assert final.model == "gpt-4o-mini-2024-07-18"
    assert final.response_id == body["id"]
    assert final.model_version == "fp_fake0001"
    assert final.usage.input_tokens == 1200
    assert final.usage.output_tokens == 300
    assert final.usage.cache_read_tokens == 1024
    assert final.usage.reasoning_tokens == 256
    assert final.usage.estimated is False


async def test_openai_usage_estimated_without_chunk(
    openai_provider: OpenAIProvider, fake_server: FakeServer
) -> None:
    fake_server.plan(PlannedReply(body=openai_completion(TEXT), omit_usage=True))

    _, final = await collect(openai_provider, user_request(OPENAI_MODEL))

    assert final.usage.estimated is True
    assert final.usage.input_tokens > 0
    assert final.usage.output_tokens > 0


async def test_openai_tool_call_deltas(
    openai_provider: OpenAIProvider, fake_server: FakeServer
) -> None:
    calls = [
        openai_tool_call("get_weather", '{"city": "Paris", "unit": "celsius"}', call_id="call_a"),
        openai_tool_call("get_time", '{"zone": "Europe/Paris"}', call_id="call_b"),
    ]
    fake_server.plan(PlannedReply(body=openai_completion(None, tool_calls=calls)))

    deltas, final = await collect(openai_provider, user_request(OPENAI_MODEL))

    assert deltas == []
    assert final.text == ""
    assert final.finish_reason == "tool_calls"
    assert [call.id for call in final.tool_calls] == ["call_a", "call_b"]
    assert [call.name for call in final.tool_calls] == ["get_weather", "get_time"]
    assert json.loads(final.tool_calls[0].arguments) == {"city": "Paris", "unit": "celsius"}
    assert json.loads(final.tool_calls[1].arguments) == {"zone": "Europe/Paris"}


async def test_openai_azure_stream(fake_server: FakeServer) -> None:
    adapter = OpenAIProvider.create(
        OPENAI_MODEL,
        api_key=API_KEY,
        base_url=fake_server.base_url,
        azure_api_version="2024-10-21",
    )
    fake_server.plan(PlannedReply(body=openai_completion(TEXT)))

    deltas, final = await collect(adapter, user_request(OPENAI_MODEL))
    await adapter.aclose()

    [sent] = fake_server.requests
    assert sent.path == f"/openai/deployments/{OPENAI_MODEL}/chat/completions"
    assert "".join(deltas) == TEXT
    assert final.usage.estimated is False


@pytest.mark.parametrize("break_mode", ["close", "reset"])
async def test_openai_cut_off_stream(
    openai_provider: OpenAIProvider, fake_server: FakeServer, break_mode: str
) -> None:
    # Events 0 to 2 are the role chunk and two content chunks.
    reply = PlannedReply(body=openai_completion(TEXT), break_after=3, break_mode=break_mode)
    fake_server.plan(reply)

    received, error = await collect_failure(openai_provider, user_request(OPENAI_MODEL))

    assert received == stream_pieces(TEXT)[:2]
    assert error.kind is ErrorKind.CONNECTION
    assert error.provider == "openai"
    assert error.model == OPENAI_MODEL


async def test_openai_cut_after_finish_chunk(
    openai_provider: OpenAIProvider, fake_server: FakeServer
) -> None:
    # Only the usage chunk and [DONE] are missing, so the text is whole.
    events = 1 + len(stream_pieces(TEXT)) + 1
    fake_server.plan(PlannedReply(body=openai_completion(TEXT), break_after=events))

    deltas, final = await collect(openai_provider, user_request(OPENAI_MODEL))

    assert "".join(deltas) == TEXT
    assert final.usage.estimated is True


async def test_openai_error_event_mid_stream(
    openai_provider: OpenAIProvider, fake_server: FakeServer
) -> None:
    error_body = openai_error("The server had an error.", error_type="server_error")
    reply = PlannedReply(body=openai_completion(TEXT), break_after=2, error_event=error_body)
    fake_server.plan(reply)

    received, error = await collect_failure(openai_provider, user_request(OPENAI_MODEL))

    assert received == stream_pieces(TEXT)[:1]
    assert error.provider == "openai"


async def test_openai_error_before_stream(
    openai_provider: OpenAIProvider, fake_server: FakeServer
) -> None:
    body = openai_error("Rate limit reached.", error_type="requests", code="rate_limit_exceeded")
    fake_server.plan(PlannedReply(status=429, body=body, headers={"retry-after": "3"}))

    received, error = await collect_failure(openai_provider, user_request(OPENAI_MODEL))

    assert received == []
    assert error.kind is ErrorKind.RATE_LIMITED
    assert error.status_code == 429
    assert error.retry_after_s == pytest.approx(3.0)


async def test_openai_early_exit_closes(
    openai_provider: OpenAIProvider, fake_server: FakeServer
) -> None:
    fake_server.plan(PlannedReply(body=openai_completion(LONG_TEXT), chunk_delay_s=0.05))

    async with aclosing(openai_provider.stream(user_request(OPENAI_MODEL))) as stream:
        first = await anext(stream)
        second = await anext(stream)

    assert [first, second] == stream_pieces(LONG_TEXT)[:2]
    await wait_for_disconnect(fake_server)


async def test_openai_cancel_closes(
    openai_provider: OpenAIProvider, fake_server: FakeServer
) -> None:
    fake_server.plan(PlannedReply(body=openai_completion(LONG_TEXT), chunk_delay_s=0.05))
    received: list[str | ModelResponse] = []

    async def consume() -> None:
        async for item in openai_provider.stream(user_request(OPENAI_MODEL)):
            received.append(item)

    with pytest.raises(TimeoutError):
        await asyncio.wait_for(consume(), timeout=0.5)

    assert 0 < len(received) < len(stream_pieces(LONG_TEXT))
    await wait_for_disconnect(fake_server)


# Anthropic


async def test_anthropic_deltas_in_order(
    anthropic_provider: AnthropicProvider, fake_server: FakeServer
) -> None:
    blocks = [anthropic_text_block(TEXT), anthropic_text_block(" It opened in 1793.")]
    fake_server.plan(PlannedReply(body=anthropic_message(blocks)))

    deltas, final = await collect(anthropic_provider, user_request(ANTHROPIC_MODEL))

    assert deltas == stream_pieces(TEXT) + stream_pieces(" It opened in 1793.")
    assert final.text == TEXT + " It opened in 1793."
    assert final.tool_calls == ()


async def test_anthropic_stream_request_body(
    anthropic_provider: AnthropicProvider, fake_server: FakeServer
) -> None:
    await collect(anthropic_provider, user_request(ANTHROPIC_MODEL, max_tokens=40))

    [sent] = fake_server.requests
    assert sent.body["stream"] is True
    assert sent.body["max_tokens"] == 40


async def test_anthropic_final_response_fields(
    anthropic_provider: AnthropicProvider, fake_server: FakeServer
) -> None:
    body = anthropic_message(
        [anthropic_text_block(TEXT)],
        model="claude-sonnet-4-5-20250929",
        stop_reason="max_tokens",
        input_tokens=12,
        output_tokens=300,
        cache_read_input_tokens=1024,
        cache_creation_input_tokens=64,
    )
    fake_server.plan(PlannedReply(body=body))

    _, final = await collect(anthropic_provider, user_request(ANTHROPIC_MODEL))

    assert final.finish_reason == "length"
    assert final.model == "claude-sonnet-4-5-20250929"
    assert final.response_id == body["id"]
    # Anthropic counts cache reads and writes apart from input_tokens, and Usage includes them.
    assert final.usage.input_tokens == 12 + 1024 + 64
    assert final.usage.cache_read_tokens == 1024
    assert final.usage.cache_write_tokens == 64
    # message_start reports 1 output token, and message_delta's final count must replace it.
    assert final.usage.output_tokens == 300
    assert final.usage.estimated is False


async def test_anthropic_tool_use_deltas(
    anthropic_provider: AnthropicProvider, fake_server: FakeServer
) -> None:
    blocks = [
        anthropic_text_block("Checking."),
        anthropic_tool_use_block("get_weather", {"city": "Paris"}, block_id="toolu_a"),
        anthropic_tool_use_block("get_time", {}, block_id="toolu_b"),
    ]
    fake_server.plan(PlannedReply(body=anthropic_message(blocks)))

    deltas, final = await collect(anthropic_provider, user_request(ANTHROPIC_MODEL))

    assert deltas == ["Checking."]
    assert final.finish_reason == "tool_calls"
    assert [call.id for call in final.tool_calls] == ["toolu_a", "toolu_b"]
    assert [call.name for call in final.tool_calls] == ["get_weather", "get_time"]
    assert json.loads(final.tool_calls[0].arguments) == {"city": "Paris"}
    assert json.loads(final.tool_calls[1].arguments) == {}


async def test_anthropic_structured_output_deltas(
    anthropic_provider: AnthropicProvider, fake_server: FakeServer
) -> None:
    block = anthropic_tool_use_block(OUTPUT_TOOL, {"city": "Paris"})
    fake_server.plan(PlannedReply(body=anthropic_message([block])))

    deltas, final = await collect(
        anthropic_provider, user_request(ANTHROPIC_MODEL, output_schema=OUTPUT_SCHEMA)
    )

    assert len(deltas) > 1
    assert "".join(deltas) == final.text
    assert json.loads(final.text) == {"city": "Paris"}
    assert final.finish_reason == "stop"
    assert final.tool_calls == ()


@pytest.mark.parametrize(
    ("error_type", "kind"),
    [
        pytest.param("overloaded_error", ErrorKind.OVERLOADED, id="overloaded"),
        pytest.param("rate_limit_error", ErrorKind.RATE_LIMITED, id="rate-limit"),
        pytest.param("api_error", ErrorKind.SERVER_ERROR, id="api-error"),
        pytest.param("invalid_request_error", ErrorKind.BAD_REQUEST, id="invalid-request"),
    ],
)
async def test_anthropic_error_event_kind(
    anthropic_provider: AnthropicProvider,
    fake_server: FakeServer,
    error_type: str,
    kind: ErrorKind,
) -> None:
    # Events 0 to 4: message_start, ping, content_block_start and two text deltas.
    reply = PlannedReply(
        body=anthropic_message([anthropic_text_block(TEXT)]),
        break_after=5,
        error_event=anthropic_error(error_type, "Something went wrong."),
    )
    fake_server.plan(reply)

    received, error = await collect_failure(anthropic_provider, user_request(ANTHROPIC_MODEL))

    assert received == stream_pieces(TEXT)[:2]
    assert error.kind is kind
    assert error.status_code is None
    assert error.provider == "anthropic"
    assert error.model == ANTHROPIC_MODEL


@pytest.mark.parametrize("break_mode", ["close", "reset"])
async def test_anthropic_cut_off_stream(
    anthropic_provider: AnthropicProvider, fake_server: FakeServer, break_mode: str
) -> None:
    reply = PlannedReply(
        body=anthropic_message([anthropic_text_block(TEXT)]),
        break_after=5,
        break_mode=break_mode,
    )
    fake_server.plan(reply)

    received, error = await collect_failure(anthropic_provider, user_request(ANTHROPIC_MODEL))

    assert received == stream_pieces(TEXT)[:2]
    assert error.kind is ErrorKind.CONNECTION


async def test_anthropic_error_before_stream(
    anthropic_provider: AnthropicProvider, fake_server: FakeServer
) -> None:
    body = anthropic_error("overloaded_error", "Overloaded")
    fake_server.plan(PlannedReply(status=529, body=body))

    received, error = await collect_failure(anthropic_provider, user_request(ANTHROPIC_MODEL))

    assert received == []
    assert error.kind is ErrorKind.OVERLOADED
    assert error.status_code == 529


async def test_anthropic_early_exit_closes(
    anthropic_provider: AnthropicProvider, fake_server: FakeServer
) -> None:
    body = anthropic_message([anthropic_text_block(LONG_TEXT)])
    fake_server.plan(PlannedReply(body=body, chunk_delay_s=0.05))

    async with aclosing(anthropic_provider.stream(user_request(ANTHROPIC_MODEL))) as stream:
        first = await anext(stream)

    assert first == stream_pieces(LONG_TEXT)[0]
    await wait_for_disconnect(fake_server)


async def test_filtered_streams_raise_content_filter(fake_server) -> None:
    from fakeserver import anthropic_message, anthropic_text_block, openai_completion

    from trunkline.errors import ErrorKind, ProviderError
    from trunkline.providers.anthropic import AnthropicProvider
    from trunkline.providers.openai import OpenAIProvider
    from trunkline.types.calls import ModelRequest
    from trunkline.types.messages import Message

    request = ModelRequest(model="m", messages=(Message.user("hi"),))
    filtered = openai_completion(content="", finish_reason="content_filter")
    fake_server.plan(PlannedReply(status=200, body=filtered))
    openai_provider = OpenAIProvider.create("gpt-4o-mini", api_key="sk", base_url=fake_server.openai_base_url)
    with pytest.raises(ProviderError) as caught:
        async for _ in openai_provider.stream(request):
            pass
    assert caught.value.kind == ErrorKind.CONTENT_FILTER

    refused = anthropic_message([anthropic_text_block("I can")], stop_reason="refusal")
    fake_server.plan(PlannedReply(status=200, body=refused))
    anthropic_provider = AnthropicProvider.create("claude", api_key="sk", base_url=fake_server.base_url)
    with pytest.raises(ProviderError) as caught:
        async for _ in anthropic_provider.stream(request):
            pass
    assert caught.value.kind == ErrorKind.CONTENT_FILTER
    await openai_provider.aclose()
    await anthropic_provider.aclose()
