"""Tool definitions and tool calls through the real `openai` and `anthropic` SDKs and the fake server."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import openai
import pytest

from fakeserver import (
    FakeServer,
    PlannedReply,
    anthropic_message,
    anthropic_text_block,
    anthropic_tool_use_block,
    openai_completion,
    openai_tool_call,
)
from trunkline.providers.anthropic import AnthropicProvider
from trunkline.providers.openai import OpenAIProvider
from trunkline.types.calls import ModelRequest
from trunkline.types.messages import Message, ToolCall, ToolDefinition

OPENAI_MODEL = "gpt-4o-mini"
ANTHROPIC_MODEL = "claude-sonnet-4-5"
API_KEY = "sk-test-key-for-tools"
WEATHER = ToolDefinition(
    name="get_weather",
    description="Return the temperature in a city.",
    parameters={
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
)
CONVERSATION = (
    Message.system("Answer briefly."),
    Message.user("Is it warmer in Paris or in Oslo?"),
    Message(
        role="assistant",
        content="Let me look.",
        tool_calls=(
            ToolCall(id="call_1", name="get_weather", arguments='{"city": "Paris"}'),
            ToolCall(id="call_2", name="get_weather", arguments='{"city": "Oslo"}'),
        ),
    ),
    Message.tool("call_1", "21.5"),
    Message.tool("call_2", "error: the weather service timed out", is_error=True),
)


@pytest.fixture(params=["pool", "sdk"])
async def provider(request: pytest.FixtureRequest, fake_server: FakeServer) -> AsyncIterator[OpenAIProvider]:
    """The OpenAI adapter on its pooled HTTP path, then on the SDK's transport."""
    if request.param == "pool":
        adapter = OpenAIProvider.create(OPENAI_MODEL, api_key=API_KEY, base_url=fake_server.openai_base_url)
    else:
        # A caller's own HTTP client keeps the SDK transport instead of the pool.
        client = openai.AsyncOpenAI(
            api_key=API_KEY,
            base_url=fake_server.openai_base_url,
            max_retries=0,
            timeout=None,
            http_client=openai.DefaultAsyncHttpxClient(),
        )
        adapter = OpenAIProvider(client, OPENAI_MODEL)
    yield adapter
    await adapter.aclose()


@pytest.fixture
async def anthropic_provider(fake_server: FakeServer) -> AsyncIterator[AnthropicProvider]:
    adapter = AnthropicProvider.create(ANTHROPIC_MODEL, api_key=API_KEY, base_url=fake_server.base_url)
    yield adapter
    await adapter.aclose()


async def test_openai_sends_tools_and_tool_messages(
    provider: OpenAIProvider, fake_server: FakeServer
) -> None:
    await provider.complete(
        ModelRequest(model=OPENAI_MODEL, messages=CONVERSATION, tools=(WEATHER,), tool_choice="auto")
    )

    body = fake_server.requests[-1].body
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Return the temperature in a city.",
                "parameters": WEATHER.parameters,
            },
        }
    ]
    assert body["tool_choice"] == "auto"
    assistant = body["messages"][2]
    assert [call["id"] for call in assistant["tool_calls"]] == ["call_1", "call_2"]
    assert assistant["tool_calls"][1]["function"]["arguments"] == '{"city": "Oslo"}'
    assert body["messages"][3] == {"role": "tool", "content": "21.5", "tool_call_id": "call_1"}
    assert body["messages"][4]["tool_call_id"] == "call_2"


async def test_openai_parses_parallel_tool_calls(
    provider: OpenAIProvider, fake_server: FakeServer
) -> None:
    calls = [
        openai_tool_call("get_weather", '{"city": "Paris"}', call_id="call_a"),
        openai_tool_call("get_weather", '{"city": "Oslo"}', call_id="call_b"),
    ]
    fake_server.plan(PlannedReply(body=openai_completion(None, tool_calls=calls)))

    response = await provider.complete(
        ModelRequest(model=OPENAI_MODEL, messages=CONVERSATION[:2], tools=(WEATHER,))
    )

    assert response.finish_reason == "tool_calls"
    assert response.text == ""
    assert [call.id for call in response.tool_calls] == ["call_a", "call_b"]
    assert [json.loads(call.arguments) for call in response.tool_calls] == [
        {"city": "Paris"},
        {"city": "Oslo"},
    ]


async def test_openai_tool_choice_by_name(provider: OpenAIProvider, fake_server: FakeServer) -> None:
    await provider.complete(
        ModelRequest(model=OPENAI_MODEL, messages=CONVERSATION[:2], tools=(WEATHER,), tool_choice="get_weather")
    )

    body = fake_server.requests[-1].body
    assert body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}


async def test_openai_parallel_tool_calls_off(provider: OpenAIProvider, fake_server: FakeServer) -> None:
    await provider.complete(
        ModelRequest(model=OPENAI_MODEL, messages=CONVERSATION[:2], tools=(WEATHER,), parallel_tool_calls=False)
    )

    assert fake_server.requests[-1].body["parallel_tool_calls"] is False


async def test_openai_without_tools_sends_none(provider: OpenAIProvider, fake_server: FakeServer) -> None:
    await provider.complete(ModelRequest(model=OPENAI_MODEL, messages=CONVERSATION[:2]))

    body = fake_server.requests[-1].body
    assert "tools" not in body
    assert "tool_choice" not in body


async def test_anthropic_maps_tool_turns(
    anthropic_provider: AnthropicProvider, fake_server: FakeServer
) -> None:
    await anthropic_provider.complete(
        ModelRequest(model=ANTHROPIC_MODEL, messages=CONVERSATION, tools=(WEATHER,), tool_choice="required")
    )

    body = fake_server.requests[-1].body
    assert body["system"] == "Answer briefly."
    assert body["tools"] == [
        {
            "name": "get_weather",
            "description": "Return the temperature in a city.",
            "input_schema": WEATHER.parameters,
        }
    ]
    assert body["tool_choice"] == {"type": "any"}
    user, assistant, results = body["messages"]
    assert user == {"role": "user", "content": "Is it warmer in Paris or in Oslo?"}
    assert assistant["role"] == "assistant"
    assert assistant["content"] == [
        {"type": "text", "text": "Let me look."},
        {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {"city": "Oslo"}},
    ]
    assert results["role"] == "user"
    assert results["content"] == [
        {"type": "tool_result", "tool_use_id": "call_1", "content": "21.5"},
        {
            "type": "tool_result",
            "tool_use_id": "call_2",
            "content": "error: the weather service timed out",
            "is_error": True,
        },
    ]


async def test_anthropic_tool_choice_modes(
    anthropic_provider: AnthropicProvider, fake_server: FakeServer
) -> None:
    expected = {
        "auto": {"type": "auto"},
        "none": {"type": "none"},
        "get_weather": {"type": "tool", "name": "get_weather"},
    }
    for choice, sent in expected.items():
        await anthropic_provider.complete(
            ModelRequest(model=ANTHROPIC_MODEL, messages=CONVERSATION[:2], tools=(WEATHER,), tool_choice=choice)
        )
        assert fake_server.requests[-1].body["tool_choice"] == sent


async def test_anthropic_parallel_tool_use_off(
    anthropic_provider: AnthropicProvider, fake_server: FakeServer
) -> None:
    expected = {
        None: {"type": "auto", "disable_parallel_tool_use": True},
        "required": {"type": "any", "disable_parallel_tool_use": True},
        "none": {"type": "none"},
    }
    for choice, sent in expected.items():
        request = ModelRequest(
            model=ANTHROPIC_MODEL,
            messages=CONVERSATION[:2],
            tools=(WEATHER,),
            tool_choice=choice,
            parallel_tool_calls=False,
        )
        await anthropic_provider.complete(request)
        assert fake_server.requests[-1].body["tool_choice"] == sent


async def test_anthropic_parses_parallel_tool_use(
    anthropic_provider: AnthropicProvider, fake_server: FakeServer
) -> None:
    content = [
        anthropic_text_block("Checking both."),
        anthropic_tool_use_block("get_weather", {"city": "Paris"}, block_id="toolu_a"),
        anthropic_tool_use_block("get_weather", {"city": "Oslo"}, block_id="toolu_b"),
    ]
    fake_server.plan(PlannedReply(body=anthropic_message(content)))

    response = await anthropic_provider.complete(
        ModelRequest(model=ANTHROPIC_MODEL, messages=CONVERSATION[:2], tools=(WEATHER,))
    )

    assert response.finish_reason == "tool_calls"
    assert response.text == "Checking both."
    assert [call.id for call in response.tool_calls] == ["toolu_a", "toolu_b"]
    assert [json.loads(call.arguments) for call in response.tool_calls] == [
        {"city": "Paris"},
        {"city": "Oslo"},
    ]


async def test_openai_stream_sends_tools(provider: OpenAIProvider, fake_server: FakeServer) -> None:
    call = openai_tool_call("get_weather", '{"city": "Oslo"}', call_id="call_s")
    fake_server.plan(PlannedReply(body=openai_completion(None, tool_calls=[call])))

    request = ModelRequest(model=OPENAI_MODEL, messages=CONVERSATION, tools=(WEATHER,), tool_choice="auto")
    parts = [part async for part in provider.stream(request)]

    body = fake_server.requests[-1].body
    assert body["stream"] is True
    assert body["tools"][0]["function"]["name"] == "get_weather"
    assert body["messages"][3]["tool_call_id"] == "call_1"
    assert parts[-1].tool_calls == (ToolCall(id="call_s", name="get_weather", arguments='{"city": "Oslo"}'),)


async def test_anthropic_stream_sends_tools(
    anthropic_provider: AnthropicProvider, fake_server: FakeServer
) -> None:
    block = anthropic_tool_use_block("get_weather", {"city": "Oslo"}, block_id="toolu_s")
    fake_server.plan(PlannedReply(body=anthropic_message([block])))

    request = ModelRequest(model=ANTHROPIC_MODEL, messages=CONVERSATION, tools=(WEATHER,))
    parts = [part async for part in anthropic_provider.stream(request)]

    body = fake_server.requests[-1].body
    assert body["stream"] is True
    assert body["tools"][0]["name"] == "get_weather"
    assert body["messages"][2]["content"][0]["type"] == "tool_result"
    [final_call] = parts[-1].tool_calls
    assert final_call.id == "toolu_s"
    assert json.loads(final_call.arguments) == {"city": "Oslo"}
