"""`Agent.stream`: the loop's events in order, the same result as `run`, and an early exit that cancels."""

from __future__ import annotations

import asyncio

from trunkline.agents import (
    Agent,
    AgentFinished,
    StepStarted,
    TextDelta,
    ToolCallFinished,
    ToolCallsRequested,
)
from trunkline.providers.fake import FakeReply, ScriptedModel
from trunkline.types.messages import ToolCall
from unit.helpers import router_with


def add(a: int, b: int) -> int:
    """Add two whole numbers.

    Args:
        a: the first number.
        b: the second number.
    """
    return a + b


async def slow_add(a: int, b: int) -> int:
    """Add two whole numbers, slowly when the first is large.

    Args:
        a: the first number.
        b: the second number.
    """
    await asyncio.sleep(0.05 if a > 5 else 0)
    return a + b


def two_calls() -> FakeReply:
    calls = (
        ToolCall(id="slow", name="slow_add", arguments='{"a": 9, "b": 1}'),
        ToolCall(id="fast", name="slow_add", arguments='{"a": 1, "b": 1}'),
    )
    return FakeReply("Let me add. ", tool_calls=calls, chunks=("Let ", "me ", "add. "))


async def test_events_in_loop_order(exported) -> None:
    model = ScriptedModel([two_calls(), FakeReply("10 and 2", chunks=("10 ", "and ", "2"))])
    events = [event async for event in Agent(router_with(model), [slow_add]).stream("Add them")]

    kinds = [type(event).__name__ for event in events]
    assert kinds == [
        "StepStarted", "TextDelta", "TextDelta", "TextDelta", "ToolCallsRequested",
        "ToolCallFinished", "ToolCallFinished",
        "StepStarted", "TextDelta", "TextDelta", "TextDelta", "AgentFinished",
    ]  # fmt: skip
    assert events[0] == StepStarted(1)
    assert "".join(event.text for event in events if isinstance(event, TextDelta) and event.step == 2) == "10 and 2"
    requested = next(event for event in events if isinstance(event, ToolCallsRequested))
    assert [call.id for call in requested.calls] == ["slow", "fast"]
    # Results arrive as their calls end: the fast one first.
    finished = [event.result.call_id for event in events if isinstance(event, ToolCallFinished)]
    assert finished == ["fast", "slow"]
    final = events[-1]
    assert isinstance(final, AgentFinished)
    assert final.result.output == "10 and 2"
    assert final.result.summary.stop_reason == "answered"
    # The conversation keeps the requested order, whatever order the calls ended in.
    assert [message.tool_call_id for message in final.result.messages if message.role == "tool"] == ["slow", "fast"]


async def test_stream_matches_run(exported) -> None:
    script = [FakeReply("", tool_calls=(ToolCall(id="c1", name="add", arguments='{"a": 2, "b": 3}'),)), FakeReply("5")]
    streamed = [event async for event in Agent(router_with(ScriptedModel(list(script))), [add]).stream("2 + 3?")]
    ran = await Agent(router_with(ScriptedModel(list(script))), [add]).run("2 + 3?")

    result = streamed[-1].result
    assert result.output == ran.output
    assert result.summary.steps == ran.summary.steps
    assert [message.role for message in result.messages] == [message.role for message in ran.messages]
    assert [call.outcome for call in result.calls] == [call.outcome for call in ran.calls]


async def test_bound_stop_still_finishes(exported) -> None:
    asks = FakeReply("", tool_calls=(ToolCall(id="c", name="add", arguments='{"a": 1, "b": 1}'),))
    model = ScriptedModel(default=lambda request: asks)
    events = [event async for event in Agent(router_with(model), [add], max_steps=2).stream("loop")]

    assert events[-1].result.summary.stop_reason == "max_steps"
    assert sum(isinstance(event, StepStarted) for event in events) == 2


async def test_leaving_early_cancels_run(exported) -> None:
    hang = FakeReply("thinking about it", chunks=("thinking ", "about ", "it"), stall_after=1)
    agent = Agent(router_with(ScriptedModel([hang])), [add])
    events = agent.stream("2 + 3?")
    async for event in events:
        if isinstance(event, TextDelta):
            break
    await events.aclose()

    # The cancelled model call is recorded as such, and no task of the run is left.
    assert [record.error_kind for record in exported.calls] == ["cancelled"]
    leftover = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    assert leftover == []
