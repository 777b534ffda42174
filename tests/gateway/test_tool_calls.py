"""Tool calls through the gateway: the OpenAI and Anthropic SDKs, plain and streamed, in both formats.

Every reply comes from the fake server through the router, so the tests
check both what the client receives and what the upstream was sent.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
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
from gateway.harness import GatewayServer
from gateway.test_sdk_clients import anthropic_client, only_call, openai_client
from trunkline.agents import Agent
from trunkline.config import Settings
from trunkline.routing.router import Router
from trunkline.store.keys import NewKey, Role

WEATHER_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
    "additionalProperties": False,
}
TIME_SCHEMA = {
    "type": "object",
    "properties": {"zone": {"type": "string"}},
    "required": ["zone"],
    "additionalProperties": False,
}
OPENAI_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "weather",
            "description": "Weather in a city.",
            "parameters": WEATHER_SCHEMA,
        },
    },
    {"type": "function", "function": {"name": "clock", "parameters": TIME_SCHEMA}},
]
STRICT_TOOLS = [
    {"type": "function", "function": {**tool["function"], "strict": True}} for tool in OPENAI_TOOLS
]
ANTHROPIC_TOOLS = [
    {"name": "weather", "description": "Weather in a city.", "input_schema": WEATHER_SCHEMA},
    {"name": "clock", "input_schema": TIME_SCHEMA},
]
QUESTION = [{"role": "user", "content": "Weather and time in Oslo?"}]
OSLO = '{"city": "Oslo"}'
CET = '{"zone": "CET"}'


@pytest.fixture
def developer(gateway: GatewayServer) -> NewKey:
    return gateway.new_key(Role.DEVELOPER)


def openai_calls_reply() -> PlannedReply:
    """Two parallel calls in OpenAI's format, without text."""
    calls = [
        openai_tool_call("weather", OSLO, call_id="call_1"),
        openai_tool_call("clock", CET, call_id="call_2"),
    ]
    return PlannedReply(body=openai_completion(None, tool_calls=calls))


def anthropic_calls_reply(text: str | None = None) -> PlannedReply:
    """Two parallel ``tool_use`` blocks in Anthropic's format, after `text` when given."""
    blocks = [
        anthropic_tool_use_block("weather", {"city": "Oslo"}, block_id="toolu_1"),
        anthropic_tool_use_block("clock", {"zone": "CET"}, block_id="toolu_2"),
    ]
    if text is not None:
        blocks.insert(0, anthropic_text_block(text))
    return PlannedReply(body=anthropic_message(blocks))


# OpenAI format, OpenAI deployment


def test_openai_tool_calls(
    gateway: GatewayServer, developer: NewKey, fake_server: FakeServer
) -> None:
    fake_server.plan(openai_calls_reply())
    client = openai_client(gateway, developer.secret)
    completion = client.chat.completions.create(
        model="chat", messages=QUESTION, tools=STRICT_TOOLS, tool_choice="auto"
    )

    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    calls = choice.message.tool_calls
    assert [call.id for call in calls] == ["call_1", "call_2"]
    assert [call.type for call in calls] == ["function", "function"]
    assert [call.function.name for call in calls] == ["weather", "clock"]
    assert [call.function.arguments for call in calls] == [OSLO, CET]
    sent = fake_server.requests[-1].body
    assert sent["tools"] == STRICT_TOOLS
    assert sent["tool_choice"] == "auto"


def test_openai_forced_tool(
    gateway: GatewayServer, developer: NewKey, fake_server: FakeServer
) -> None:
    fake_server.plan(openai_calls_reply())
    client = openai_client(gateway, developer.secret)
    forced = {"type": "function", "function": {"name": "weather"}}
    client.chat.completions.create(
        model="chat",
        messages=QUESTION,
        tools=OPENAI_TOOLS,
        tool_choice=forced,
        parallel_tool_calls=False,
    )
    sent = fake_server.requests[-1].body
    assert sent["tool_choice"] == forced
    assert sent["parallel_tool_calls"] is False
    assert "strict" not in sent["tools"][0]["function"]


def test_openai_stream_helper(
    gateway: GatewayServer, developer: NewKey, fake_server: FakeServer
) -> None:
    fake_server.plan(openai_calls_reply())
    client = openai_client(gateway, developer.secret)
    with client.chat.completions.stream(
        model="chat", messages=QUESTION, tools=STRICT_TOOLS
    ) as stream:
        completion = stream.get_final_completion()

    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls
    assert [call.id for call in calls] == ["call_1", "call_2"]
    assert [call.function.name for call in calls] == ["weather", "clock"]
    assert [call.function.arguments for call in calls] == [OSLO, CET]
    assert [call.function.parsed_arguments for call in calls] == [{"city": "Oslo"}, {"zone": "CET"}]


def test_openai_stream_deltas(
    gateway: GatewayServer, developer: NewKey, fake_server: FakeServer
) -> None:
    calls = [openai_tool_call("weather", OSLO, call_id="call_1")]
    fake_server.plan(PlannedReply(body=openai_completion("Let me look.", tool_calls=calls)))
    client = openai_client(gateway, developer.secret)
    chunks = list(
        client.chat.completions.create(
            model="chat", messages=QUESTION, tools=OPENAI_TOOLS, stream=True
        )
    )

    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks)
    assert text == "Let me look."
    deltas = [call for chunk in chunks for call in chunk.choices[0].delta.tool_calls or []]
    assert {delta.index for delta in deltas} == {0}
    assert [delta.id for delta in deltas if delta.id] == ["call_1"]
    assert [delta.function.name for delta in deltas if delta.function.name] == ["weather"]
    assert "".join(delta.function.arguments or "" for delta in deltas) == OSLO
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_openai_two_turns(
    gateway: GatewayServer, developer: NewKey, fake_server: FakeServer
) -> None:
    fake_server.plan(
        openai_calls_reply(), PlannedReply(body=openai_completion("Mild, and it is noon."))
    )
    client = openai_client(gateway, developer.secret)
    first = client.chat.completions.create(model="chat", messages=QUESTION, tools=OPENAI_TOOLS)
    calls = first.choices[0].message.tool_calls
    conversation = [
        *QUESTION,
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": calls[0].id, "content": "12 C"},
        {
            "role": "tool",
            "tool_call_id": calls[1].id,
            "content": [{"type": "text", "text": "12:00"}],
        },
    ]
    second = client.chat.completions.create(model="chat", messages=conversation, tools=OPENAI_TOOLS)

    assert second.choices[0].message.content == "Mild, and it is noon."
    assert second.choices[0].finish_reason == "stop"
    sent = fake_server.requests[-1].body["messages"]
    assert [message["role"] for message in sent] == ["user", "assistant", "tool", "tool"]
    assert [call["id"] for call in sent[1]["tool_calls"]] == ["call_1", "call_2"]
    assert sent[1]["tool_calls"][0]["function"] == {"name": "weather", "arguments": OSLO}
    assert sent[2] == {"role": "tool", "content": "12 C", "tool_call_id": "call_1"}
    assert sent[3] == {"role": "tool", "content": "12:00", "tool_call_id": "call_2"}


# Anthropic format, Anthropic deployment


def test_anthropic_tool_use(
    gateway: GatewayServer, developer: NewKey, fake_server: FakeServer
) -> None:
    fake_server.plan(anthropic_calls_reply("Checking."))
    client = anthropic_client(gateway, developer.secret)
    message = client.messages.create(
        model="claude",
        max_tokens=200,
        messages=QUESTION,
        tools=ANTHROPIC_TOOLS,
        tool_choice={"type": "any", "disable_parallel_tool_use": False},
    )

    assert message.stop_reason == "tool_use"
    assert [block.type for block in message.content] == ["text", "tool_use", "tool_use"]
    assert message.content[0].text == "Checking."
    assert [block.id for block in message.content[1:]] == ["toolu_1", "toolu_2"]
    assert [block.name for block in message.content[1:]] == ["weather", "clock"]
    assert [block.input for block in message.content[1:]] == [{"city": "Oslo"}, {"zone": "CET"}]
    sent = fake_server.requests[-1].body
    assert sent["tools"] == ANTHROPIC_TOOLS
    assert sent["tool_choice"] == {"type": "any"}


def test_anthropic_stream(
    gateway: GatewayServer, developer: NewKey, fake_server: FakeServer
) -> None:
    fake_server.plan(anthropic_calls_reply())
    client = anthropic_client(gateway, developer.secret)
    with client.messages.stream(
        model="claude",
        max_tokens=200,
        messages=QUESTION,
        tools=ANTHROPIC_TOOLS,
        tool_choice={"type": "tool", "name": "clock"},
    ) as stream:
        message = stream.get_final_message()

    assert message.stop_reason == "tool_use"
    assert [block.type for block in message.content] == ["tool_use", "tool_use"]
    assert [block.id for block in message.content] == ["toolu_1", "toolu_2"]
    assert [block.input for block in message.content] == [{"city": "Oslo"}, {"zone": "CET"}]
    assert fake_server.requests[-1].body["tool_choice"] == {"type": "tool", "name": "clock"}


def test_anthropic_stream_text_first(
    gateway: GatewayServer, developer: NewKey, fake_server: FakeServer
) -> None:
    fake_server.plan(anthropic_calls_reply("Let me check both."))
    client = anthropic_client(gateway, developer.secret)
    with client.messages.stream(
        model="claude", max_tokens=200, messages=QUESTION, tools=ANTHROPIC_TOOLS
    ) as stream:
        message = stream.get_final_message()

    assert [block.type for block in message.content] == ["text", "tool_use", "tool_use"]
    assert message.content[0].text == "Let me check both."
    assert message.content[2].input == {"zone": "CET"}


def test_anthropic_two_turns(
    gateway: GatewayServer, developer: NewKey, fake_server: FakeServer
) -> None:
    fake_server.plan(anthropic_calls_reply(), PlannedReply(body=anthropic_message()))
    client = anthropic_client(gateway, developer.secret)
    first = client.messages.create(
        model="claude", max_tokens=200, messages=QUESTION, tools=ANTHROPIC_TOOLS
    )
    results = [
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "12 C"},
        {
            "type": "tool_result",
            "tool_use_id": "toolu_2",
            "content": [{"type": "text", "text": "no such zone"}],
            "is_error": True,
        },
    ]
    conversation = [
        *QUESTION,
        {"role": "assistant", "content": [block.model_dump() for block in first.content]},
        {"role": "user", "content": results},
    ]
    second = client.messages.create(
        model="claude", max_tokens=200, messages=conversation, tools=ANTHROPIC_TOOLS
    )

    assert second.stop_reason == "end_turn"
    sent = fake_server.requests[-1].body["messages"]
    assert [turn["role"] for turn in sent] == ["user", "assistant", "user"]
    assert sent[1]["content"] == [
        {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Oslo"}},
        {"type": "tool_use", "id": "toolu_2", "name": "clock", "input": {"zone": "CET"}},
    ]
    assert sent[2]["content"] == [
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "12 C"},
        {
            "type": "tool_result",
            "tool_use_id": "toolu_2",
            "content": "no such zone",
            "is_error": True,
        },
    ]


# One format to the gateway, the other upstream


def test_openai_client_anthropic_upstream(
    gateway: GatewayServer, developer: NewKey, fake_server: FakeServer
) -> None:
    fake_server.plan(anthropic_calls_reply(), PlannedReply(body=anthropic_message()))
    client = openai_client(gateway, developer.secret)
    first = client.chat.completions.create(
        model="claude", messages=QUESTION, tools=OPENAI_TOOLS, tool_choice="required"
    )

    assert first.choices[0].finish_reason == "tool_calls"
    calls = first.choices[0].message.tool_calls
    assert [call.id for call in calls] == ["toolu_1", "toolu_2"]
    assert [json.loads(call.function.arguments) for call in calls] == [
        {"city": "Oslo"},
        {"zone": "CET"},
    ]
    sent = fake_server.requests[-1].body
    assert sent["tools"][0] == ANTHROPIC_TOOLS[0]
    assert sent["tool_choice"] == {"type": "any"}

    conversation = [
        *QUESTION,
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": "toolu_1", "content": "12 C"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": "12:00"},
    ]
    client.chat.completions.create(model="claude", messages=conversation, tools=OPENAI_TOOLS)
    sent = fake_server.requests[-1].body["messages"]
    assert sent[1]["content"][0] == {
        "type": "tool_use",
        "id": "toolu_1",
        "name": "weather",
        "input": {"city": "Oslo"},
    }
    assert sent[2]["content"] == [
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "12 C"},
        {"type": "tool_result", "tool_use_id": "toolu_2", "content": "12:00"},
    ]


def test_anthropic_client_openai_upstream(
    gateway: GatewayServer, developer: NewKey, fake_server: FakeServer
) -> None:
    fake_server.plan(openai_calls_reply())
    client = anthropic_client(gateway, developer.secret)
    with client.messages.stream(
        model="chat",
        max_tokens=200,
        messages=QUESTION,
        tools=ANTHROPIC_TOOLS,
        tool_choice={"type": "auto", "disable_parallel_tool_use": True},
    ) as stream:
        message = stream.get_final_message()

    assert message.stop_reason == "tool_use"
    assert [block.name for block in message.content] == ["weather", "clock"]
    assert [block.input for block in message.content] == [{"city": "Oslo"}, {"zone": "CET"}]
    sent = fake_server.requests[-1].body
    assert [tool["function"]["name"] for tool in sent["tools"]] == ["weather", "clock"]
    assert sent["tools"][0]["function"]["parameters"] == WEATHER_SCHEMA
    assert sent["tool_choice"] == "auto"
    assert sent["parallel_tool_calls"] is False


# The call record and the request paths


def test_record_keeps_tools(
    gateway: GatewayServer, developer: NewKey, fake_server: FakeServer
) -> None:
    fake_server.plan(openai_calls_reply())
    client = openai_client(gateway, developer.secret)
    client.chat.completions.create(
        model="chat", messages=QUESTION, tools=STRICT_TOOLS, tool_choice="required"
    )

    record = json.loads(only_call(gateway, developer)["record"])
    assert [tool["name"] for tool in record["tools"]] == ["weather", "clock"]
    assert record["tools"][0]["parameters"] == WEATHER_SCHEMA
    assert record["tools"][0]["strict"] is True
    assert record["tool_choice"] == "required"
    assert [call["id"] for call in record["tool_calls"]] == ["call_1", "call_2"]
    assert [call["name"] for call in record["tool_calls"]] == ["weather", "clock"]
    assert record["finish_reason"] == "tool_calls"


def test_chunked_request_with_tools(
    gateway: GatewayServer, developer: NewKey, fake_server: FakeServer
) -> None:
    """A body without Content-Length skips the fast path and goes through FastAPI's route."""
    fake_server.plan(openai_calls_reply())
    body = json.dumps({"model": "chat", "messages": QUESTION, "tools": OPENAI_TOOLS}).encode()
    with gateway.client(developer.secret) as client:
        response = client.post(
            "/v1/chat/completions",
            content=iter([body]),
            headers={"content-type": "application/json"},
        )
    assert response.status_code == 200
    message = response.json()["choices"][0]["message"]
    assert [call["function"]["name"] for call in message["tool_calls"]] == ["weather", "clock"]


def test_no_tools_unchanged(
    gateway: GatewayServer, developer: NewKey, fake_server: FakeServer
) -> None:
    with gateway.client(developer.secret) as client:
        response = client.post("/v1/chat/completions", json={"model": "chat", "messages": QUESTION})
    message = response.json()["choices"][0]["message"]
    assert message["content"] == "Hello from the fake server."
    assert "tool_calls" not in message
    assert "tools" not in fake_server.requests[-1].body


# An agent whose model is served through the gateway


def weather(city: str) -> str:
    """Return the weather in a city.

    Args:
        city: the city's name.
    """
    return f"12 C in {city}"


async def test_agent_through_gateway(
    gateway: GatewayServer,
    developer: NewKey,
    fake_server: FakeServer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("GATEWAY_TEST_KEY", developer.secret)
    settings = Settings.model_validate(
        {
            "deployments": {
                "gateway": {
                    "provider": "openai",
                    "model": "claude",
                    "base_url": f"{gateway.url}/v1",
                    "api_key_env": "GATEWAY_TEST_KEY",
                }
            },
            "routes": {"main": {"deployments": ["gateway"], "max_attempts": 1}},
            "default_route": "main",
        }
    )
    call = anthropic_tool_use_block("weather", {"city": "Oslo"}, block_id="toolu_9")
    fake_server.plan(
        PlannedReply(body=anthropic_message([call])),
        PlannedReply(body=anthropic_message([anthropic_text_block("It is 12 C in Oslo.")])),
    )
    router = Router(settings)
    try:
        result = await Agent(router, [weather]).run("Weather in Oslo?")
    finally:
        await router.aclose()

    assert result.output == "It is 12 C in Oslo."
    assert result.summary.stop_reason == "answered"
    assert result.summary.tool_calls == {("weather", "ok"): 1}
    second = fake_server.requests[-1].body["messages"]
    assert second[-1]["content"] == [
        {"type": "tool_result", "tool_use_id": "toolu_9", "content": "12 C in Oslo"}
    ]
    # The agent's own router exports its records to the same process's store writer, under route main.
    served = [row for row in gateway.calls() if row["route"] == "claude"]
    assert len(served) == 2
    assert json.loads(served[0]["record"])["tool_calls"][0]["name"] == "weather"


def test_httpx_tool_reply_shape(
    gateway: GatewayServer, developer: NewKey, fake_server: FakeServer
) -> None:
    """The raw JSON of a tool-call reply, as clients without an SDK read it."""
    fake_server.plan(anthropic_calls_reply())
    body = {"model": "claude", "max_tokens": 50, "messages": QUESTION, "tools": ANTHROPIC_TOOLS}
    response = httpx.post(
        f"{gateway.url}/v1/messages", json=body, headers={"x-api-key": developer.secret}, timeout=30
    )
    reply = response.json()
    assert reply["stop_reason"] == "tool_use"
    assert reply["content"][0] == {
        "type": "tool_use",
        "id": "toolu_1",
        "name": "weather",
        "input": {"city": "Oslo"},
    }
