"""An agent's loop over the real `openai` and `anthropic` SDKs against the fake server."""

from __future__ import annotations

from fakeserver import (
    FakeServer,
    PlannedReply,
    anthropic_message,
    anthropic_text_block,
    anthropic_tool_use_block,
    openai_completion,
    openai_tool_call,
)
from trunkline.agents import Agent, TextDelta, ToolCallFinished
from trunkline.config import Settings
from trunkline.routing import Router
from trunkline.tools import Tool

OPENAI_MODEL = "gpt-4o-mini"
ANTHROPIC_MODEL = "claude-sonnet-4-5"


def temperature(city: str) -> float:
    """Return the temperature now in a city, in degrees Celsius.

    Args:
        city: the city's name.
    """
    return {"Paris": 21.5, "Oslo": 9.0}[city]


def http_settings(fake_server: FakeServer) -> Settings:
    return Settings.model_validate(
        {
            "deployments": {
                "gpt": {
                    "provider": "openai",
                    "model": OPENAI_MODEL,
                    "base_url": fake_server.openai_base_url,
                },
                "claude": {
                    "provider": "anthropic",
                    "model": ANTHROPIC_MODEL,
                    "base_url": fake_server.base_url,
                },
            },
            "routes": {"gpt": {"deployments": ["gpt"]}, "claude": {"deployments": ["claude"]}},
            "default_route": "gpt",
        }
    )


async def test_agent_runs_on_openai(fake_server: FakeServer) -> None:
    calls = [
        openai_tool_call("temperature", '{"city": "Paris"}', call_id="call_a"),
        openai_tool_call("temperature", '{"city": "Oslo"}', call_id="call_b"),
    ]
    fake_server.plan(
        PlannedReply(body=openai_completion(None, tool_calls=calls)),
        PlannedReply(body=openai_completion("Paris is warmer.")),
    )
    router = Router(http_settings(fake_server))
    try:
        result = await Agent(router, [Tool(temperature)], route="gpt").run("Paris or Oslo?")
    finally:
        await router.aclose()

    assert result.output == "Paris is warmer."
    assert result.summary.stop_reason == "answered"
    second = fake_server.requests[1].body["messages"]
    assert [message["role"] for message in second] == ["user", "assistant", "tool", "tool"]
    assert second[2] == {"role": "tool", "content": "21.5", "tool_call_id": "call_a"}
    assert second[3] == {"role": "tool", "content": "9.0", "tool_call_id": "call_b"}


async def test_agent_runs_on_anthropic(fake_server: FakeServer) -> None:
    content = [
        anthropic_tool_use_block("temperature", {"city": "Paris"}, block_id="toolu_a"),
        anthropic_tool_use_block("temperature", {"city": "Oslo"}, block_id="toolu_b"),
    ]
    fake_server.plan(
        PlannedReply(body=anthropic_message(content)),
        PlannedReply(body=anthropic_message([anthropic_text_block("Paris is warmer.")])),
    )
    router = Router(http_settings(fake_server))
    try:
        result = await Agent(router, [Tool(temperature)], route="claude").run("Paris or Oslo?")
    finally:
        await router.aclose()

    assert result.output == "Paris is warmer."
    assert result.summary.tool_calls[("temperature", "ok")] == 2
    user, assistant, results = fake_server.requests[1].body["messages"]
    assert [block["type"] for block in assistant["content"]] == ["tool_use", "tool_use"]
    assert results["content"] == [
        {"type": "tool_result", "tool_use_id": "toolu_a", "content": "21.5"},
        {"type": "tool_result", "tool_use_id": "toolu_b", "content": "9.0"},
    ]


async def test_agent_streams_on_both_providers(fake_server: FakeServer) -> None:
    openai_calls = [openai_tool_call("temperature", '{"city": "Paris"}', call_id="call_a")]
    anthropic_calls = [anthropic_tool_use_block("temperature", {"city": "Paris"}, block_id="toolu_a")]
    fake_server.plan(
        PlannedReply(body=openai_completion(None, tool_calls=openai_calls)),
        PlannedReply(body=openai_completion("It is 21.5 in Paris.")),
        PlannedReply(body=anthropic_message(anthropic_calls)),
        PlannedReply(body=anthropic_message([anthropic_text_block("It is 21.5 in Paris.")])),
    )
    router = Router(http_settings(fake_server))
    try:
        for route in ("gpt", "claude"):
            agent = Agent(router, [Tool(temperature)], route=route)
            events = [event async for event in agent.stream("How warm is Paris?")]

            text = "".join(event.text for event in events if isinstance(event, TextDelta))
            assert text == "It is 21.5 in Paris."
            [finished] = [event for event in events if isinstance(event, ToolCallFinished)]
            assert finished.result.content == "21.5"
            assert events[-1].result.summary.stop_reason == "answered"
    finally:
        await router.aclose()

    assert all(request.body.get("stream") is True for request in fake_server.requests)
