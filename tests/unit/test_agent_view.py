"""The dashboard's agent view built from stored spans: content kept as lengths, and a trace cut short."""

from __future__ import annotations

from pathlib import Path

from gateway.agent_trace import record_agent_trace
from trunkline.agents import Agent
from trunkline.providers.fake import FakeReply, ScriptedModel
from trunkline.server.dashboard.agents import find_agents
from trunkline.server.dashboard.traces import load_trace_view, trace_json
from trunkline.store.database import open_store
from trunkline.store.traces import load_trace
from trunkline.store.writer import StoreWriter
from trunkline.types.messages import ToolCall
from unit.helpers import router_with


def add(a: int, b: int) -> int:
    """Add two whole numbers.

    Args:
        a: the first number.
        b: the second number.
    """
    return a + b


async def test_lengths_only_without_content(exported, tmp_path: Path) -> None:
    asks = FakeReply("", tool_calls=(ToolCall(id="c1", name="add", arguments='{"a": 20, "b": 22}'),))
    model = ScriptedModel([asks, FakeReply("42")])
    agent = Agent(router_with(model), [add], record_tool_content=False)
    result = await agent.run("20 + 22?")
    store = open_store(f"sqlite:///{tmp_path / 'view.db'}")
    writer = StoreWriter(store, flush_interval_s=0.01)
    for span in exported.spans:
        writer.export_span(span)
    writer.close()

    [root] = load_trace(store, exported.spans[0].trace_id)
    [view] = find_agents([root], {span.span_id for span in exported.spans})
    store.dispose()
    assert result.summary.stop_reason == "answered"
    assert view.answered
    first, second = view.steps
    assert second.stopped_by is None
    [tool] = first.tools
    assert tool.arguments is None
    assert tool.result is None
    assert tool.arguments_chars == len('{"a": 20, "b": 22}')
    assert tool.result_chars == len("42")
    assert tool.outcome == "ok"


def test_view_follows_span_limit(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'cut.db'}")
    trace = record_agent_trace(store)
    # Seven spans are the agent, step 1 with its call and two tools, and
    # step 2 with its call. Step 3, where max_steps stopped the loop, falls
    # past the limit, so no shown step is marked as the one that stopped it.
    view = load_trace_view(store, trace.trace_id, max_spans=7)
    store.dispose()
    [agent] = view.agents
    assert [step.number for step in agent.steps] == [1, 2]
    assert [tool.tool for tool in agent.steps[0].tools] == ["add", "describe"]
    assert agent.steps[1].tools == []
    assert agent.steps[1].call is not None
    assert agent.steps[1].stopped_by is None


async def test_answer_asked_again_shows_both_calls(exported, tmp_path: Path) -> None:
    schema = {"type": "object", "properties": {"total": {"type": "integer"}}, "required": ["total"]}
    model = ScriptedModel([FakeReply("forty-two"), FakeReply('{"total": 42}')])
    result = await Agent(router_with(model), [add], output=schema).run("20 + 22?")
    store = open_store(f"sqlite:///{tmp_path / 'view.db'}")
    writer = StoreWriter(store, flush_interval_s=0.01)
    for record in exported.calls:
        writer.export_call(record)
    for span in exported.spans:
        writer.export_span(span)
    writer.close()

    view = load_trace_view(store, exported.spans[0].trace_id)
    store.dispose()
    assert result.parsed == {"total": 42}
    [agent] = view.agents
    [step] = agent.steps
    assert [record.output_text for _, record in step.model_calls] == ["forty-two", '{"total": 42}']
    assert step.call.output_text == "forty-two"
    [step_json] = trace_json(view)["agents"][0]["steps"]
    assert [call["call_id"] for call in step_json["calls"]] == [record.call_id for _, record in step.model_calls]
    assert step_json["call"] == step_json["calls"][0]
