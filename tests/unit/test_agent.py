"""The agent loop over scripted fake models: tool calls, failures, bounds, spans and summary."""

from __future__ import annotations

import asyncio
import json

import pytest

from otlp_receiver import decode_request
from trunkline.agents import Agent
from trunkline.errors import ConfigError, ToolErrorKind
from trunkline.providers.fake import FakeFailure, FakeReply, ScriptedModel
from trunkline.tools import Tool
from trunkline.tracing.otel import encode_request, resource, span_from_record
from trunkline.types.messages import Message, ToolCall
from unit.helpers import router_with


def add(a: int, b: int) -> int:
    """Add two whole numbers.

    Args:
        a: the first number.
        b: the second number.
    """
    return a + b


async def lookup(key: str) -> str:
    """Return the value stored under a key."""
    return {"colour": "blue"}.get(key, "unknown")


async def explode(reason: str) -> str:
    raise RuntimeError(reason)


async def hang(seconds: int) -> str:
    await asyncio.Event().wait()
    return "never"


def call(name: str, arguments: str, call_id: str) -> ToolCall:
    return ToolCall(id=call_id, name=name, arguments=arguments)


def asks(*calls: ToolCall, tokens: int = 10) -> FakeReply:
    """A reply that requests `calls`."""
    return FakeReply("", tool_calls=calls, input_tokens=tokens, output_tokens=tokens)


def answer(text: str) -> FakeReply:
    return FakeReply(text, input_tokens=10, output_tokens=5)


def tool_messages(result) -> list[Message]:  # noqa: ANN001
    return [message for message in result.messages if message.role == "tool"]


async def test_single_tool_call(exported) -> None:
    model = ScriptedModel([asks(call("add", '{"a": 2, "b": 3}', "c1")), answer("5")])
    result = await Agent(router_with(model), [add]).run("What is 2 + 3?")

    assert result.output == "5"
    assert result.answered
    assert result.summary.stop_reason == "answered"
    assert result.summary.steps == 2
    assert result.summary.model_calls == 2
    assert result.summary.tool_calls == {("add", "ok"): 1}
    assert [message.role for message in result.messages] == ["user", "assistant", "tool", "assistant"]
    assert result.messages[2] == Message.tool("c1", "5")
    [first_tool_result] = result.tool_results
    assert first_tool_result.outcome == "ok"
    assert first_tool_result.step == 1


async def test_requests_carry_tools_and_conversation(exported) -> None:
    model = ScriptedModel([asks(call("add", '{"a": 1, "b": 1}', "c1")), answer("2")])
    await Agent(router_with(model), [add], instructions="Use tools.").run("1 + 1?")

    first, second = model.requests
    assert [tool.name for tool in first.tools] == ["add"]
    assert first.tools[0].parameters["required"] == ["a", "b"]
    assert first.messages[0] == Message.system("Use tools.")
    assert second.messages[-1] == Message.tool("c1", "2")
    assert second.messages[-2].tool_calls == (call("add", '{"a": 1, "b": 1}', "c1"),)


async def test_call_records_keep_tool_messages(exported) -> None:
    model = ScriptedModel([asks(call("lookup", '{"key": "colour"}', "c1")), answer("blue")])
    result = await Agent(router_with(model), [lookup]).run("Colour?")

    first, second = result.calls
    assert first.tool_calls == [call("lookup", '{"key": "colour"}', "c1")]
    assert first.finish_reason == "tool_calls"
    assert [tool.name for tool in first.tools] == ["lookup"]
    assert [message.role for message in second.messages] == ["user", "assistant", "tool"]
    assert second.messages[-1].content == "blue"
    assert exported.calls == result.calls


async def test_parallel_calls_keep_order_and_bound(exported) -> None:
    active = 0
    peak = 0

    async def measure(label: str) -> str:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        for _ in range(3):
            await asyncio.sleep(0)
        active -= 1
        return label.upper()

    calls = [call("measure", json.dumps({"label": name}), f"c{index}") for index, name in enumerate("abcd")]
    model = ScriptedModel([asks(*calls), answer("done")])
    result = await Agent(router_with(model), [measure], max_parallel_tools=2).run("go")

    assert [message.content for message in tool_messages(result)] == ["A", "B", "C", "D"]
    assert [message.tool_call_id for message in tool_messages(result)] == ["c0", "c1", "c2", "c3"]
    assert peak == 2
    assert result.summary.tool_calls == {("measure", "ok"): 4}


@pytest.mark.parametrize(
    ("tool_call", "kind", "fragment"),
    [
        (call("divide", "{}", "c1"), ToolErrorKind.UNKNOWN_TOOL, "there is no tool named 'divide'"),
        (call("add", '{"a": 1}', "c1"), ToolErrorKind.INVALID_ARGUMENTS, "b: Field required"),
        (call("add", '{"a": 1, "b":', "c1"), ToolErrorKind.ARGUMENTS_NOT_JSON, "not valid JSON"),
        (call("explode", '{"reason": "disk full"}', "c1"), ToolErrorKind.EXCEPTION, "RuntimeError: disk full"),
    ],
)
async def test_tool_failure_returned_to_model(exported, tool_call, kind, fragment) -> None:  # noqa: ANN001
    model = ScriptedModel([asks(tool_call), answer("recovered")])
    result = await Agent(router_with(model), [add, explode]).run("go")

    assert result.output == "recovered"
    assert result.summary.stop_reason == "answered"
    [message] = tool_messages(result)
    assert message.is_error
    assert message.tool_call_id == "c1"
    assert fragment in message.content
    assert model.requests[1].messages[-1] == message
    assert result.summary.tool_errors == {kind: 1}
    assert result.summary.tool_calls == {(tool_call.name, "error"): 1}
    [tool_span] = [span for span in exported.spans if span.kind == "tool"]
    assert tool_span.status == "error"
    assert tool_span.attributes["error_kind"] == kind.value


async def test_hanging_tool_times_out(exported) -> None:
    calls = [call("hang", '{"seconds": 100}', "c1"), call("add", '{"a": 1, "b": 2}', "c2")]
    model = ScriptedModel([asks(*calls), answer("partly")])
    result = await Agent(router_with(model), [hang, add], tool_timeout_s=0.05).run("go")

    timed_out, added = tool_messages(result)
    assert timed_out.is_error
    assert "did not finish within 0.05 s" in timed_out.content
    assert added.content == "3"
    assert result.summary.tool_errors == {ToolErrorKind.TIMEOUT: 1}
    assert result.output == "partly"


async def test_tool_timeout_of_its_own_wins(exported) -> None:
    model = ScriptedModel([asks(call("hang", '{"seconds": 1}', "c1")), answer("ok")])
    quick = Tool(hang, timeout_s=0.02)
    result = await Agent(router_with(model), [quick], tool_timeout_s=600).run("go")

    [message] = tool_messages(result)
    assert "within 0.02 s" in message.content


async def test_step_limit_stops(exported) -> None:
    model = ScriptedModel(default=asks(call("add", '{"a": 1, "b": 1}', "c1")))
    result = await Agent(router_with(model), [add], max_steps=3).run("loop")

    assert result.summary.stop_reason == "max_steps"
    assert not result.answered
    assert result.summary.steps == 3
    assert result.summary.model_calls == 3
    # The last step's calls are not run, since no step is left to read their results.
    assert result.summary.tool_calls == {("add", "ok"): 2}


async def test_tool_call_limit_stops(exported) -> None:
    two = asks(call("add", '{"a": 1, "b": 1}', "c1"), call("add", '{"a": 2, "b": 2}', "c2"))
    model = ScriptedModel([two, two, answer("never")])
    result = await Agent(router_with(model), [add], max_tool_calls=3).run("go")

    assert result.summary.stop_reason == "max_tool_calls"
    assert result.summary.tool_call_count == 2
    assert len(model.requests) == 2


async def test_tool_error_limit_stops(exported) -> None:
    model = ScriptedModel(default=asks(call("explode", '{"reason": "again"}', "c1")))
    result = await Agent(router_with(model), [explode], max_tool_errors=2).run("go")

    assert result.summary.stop_reason == "max_tool_errors"
    assert result.summary.tool_errors == {ToolErrorKind.EXCEPTION: 3}
    assert result.summary.steps == 3


async def test_budget_stops(exported) -> None:
    # At $1 and $2 a million tokens, each reply costs $0.003 and each call
    # may cost up to about $0.002 with max_tokens 1000.
    expensive = asks(call("add", '{"a": 1, "b": 1}', "c1"), tokens=1000)
    model = ScriptedModel([expensive, expensive, answer("never")])
    agent = Agent(router_with(model), [add], budget_usd=0.004, call_options={"max_tokens": 1000})
    result = await agent.run("go")

    assert result.summary.stop_reason == "budget"
    assert len(model.requests) == 1
    assert result.summary.model_calls == 2
    assert result.calls[-1].error_kind == "budget_exceeded"
    assert result.summary.cost_usd == pytest.approx(0.003)
    assert "budget" in (result.error or "")


async def test_deadline_stops_hanging_tool(exported) -> None:
    model = ScriptedModel([asks(call("hang", '{"seconds": 100}', "c1")), answer("never")])
    result = await Agent(router_with(model), [hang], deadline_s=0.05).run("go")

    assert result.summary.stop_reason == "deadline"
    assert len(model.requests) == 1
    [step_span] = [span for span in exported.spans if span.kind == "step"]
    assert step_span.status == "error"


async def test_deadline_stops_slow_model(exported) -> None:
    model = ScriptedModel([FakeReply("late", latency_s=30)])
    result = await Agent(router_with(model), [add], deadline_s=0.05).run("go")

    assert result.summary.stop_reason == "deadline"
    assert result.output == ""
    assert result.calls == []
    [cancelled] = exported.calls
    assert cancelled.error_kind == "cancelled"


async def test_failed_model_call_stops(exported) -> None:
    model = ScriptedModel([FakeFailure(400, body="bad request")])
    result = await Agent(router_with(model), [add]).run("go")

    assert result.summary.stop_reason == "call_failed"
    assert result.calls[0].outcome == "error"
    assert "bad request" in (result.error or "")
    [agent_span] = [span for span in exported.spans if span.kind == "agent"]
    assert agent_span.status == "error"
    assert "call_failed" in (agent_span.error or "")


async def test_spans_form_a_tree(exported) -> None:
    calls = [call("add", '{"a": 1, "b": 2}', "c1"), call("lookup", '{"key": "colour"}', "c2")]
    model = ScriptedModel([asks(*calls), answer("3 and blue")])
    await Agent(router_with(model), [add, lookup], name="helper").run("go")

    spans = {span.span_id: span for span in exported.spans}
    [agent_span] = [span for span in spans.values() if span.kind == "agent"]
    steps = [span for span in spans.values() if span.kind == "step"]
    tools = [span for span in spans.values() if span.kind == "tool"]
    model_calls = [span for span in spans.values() if span.kind == "call"]
    assert agent_span.name == "invoke_agent helper"
    assert agent_span.status == "ok"
    assert agent_span.attributes["stop_reason"] == "answered"
    assert json.loads(agent_span.attributes["tool_calls_by_tool"]) == {
        "add": {"ok": 1},
        "lookup": {"ok": 1},
    }
    assert sorted(span.attributes["step"] for span in steps) == [1, 2]
    assert all(span.parent_span_id == agent_span.span_id for span in steps)
    first_step = next(span for span in steps if span.attributes["step"] == 1)
    assert {span.parent_span_id for span in tools} == {first_step.span_id}
    assert {span.parent_span_id for span in model_calls} == {span.span_id for span in steps}
    add_span = next(span for span in tools if span.name == "execute_tool add")
    assert add_span.attributes["gen_ai.tool.call.arguments"] == '{"a": 1, "b": 2}'
    assert add_span.attributes["gen_ai.tool.call.result"] == "3"
    assert add_span.attributes["outcome"] == "ok"


async def test_span_content_redacted_or_left_out(exported) -> None:
    secret = "sk-live-abcdefghijklmnopqrstuvwxyz"
    reply = asks(call("lookup", json.dumps({"key": secret}), "c1"))
    model = ScriptedModel([reply, answer("done"), reply, answer("done")])
    router = router_with(model)

    await Agent(router, [lookup]).run("go")
    await Agent(router, [lookup], record_tool_content=False).run("go")

    shown, hidden = [span for span in exported.spans if span.kind == "tool"]
    assert secret not in shown.attributes["gen_ai.tool.call.arguments"]
    assert "[REDACTED]" in shown.attributes["gen_ai.tool.call.arguments"]
    assert "gen_ai.tool.call.arguments" not in hidden.attributes
    assert hidden.attributes["arguments_chars"] == len(json.dumps({"key": secret}))


async def test_summary_adds_tokens_and_cost(exported) -> None:
    model = ScriptedModel([asks(call("add", '{"a": 1, "b": 1}', "c1"), tokens=100), answer("2")])
    result = await Agent(router_with(model), [add]).run("go")

    assert result.summary.input_tokens == 110
    assert result.summary.output_tokens == 105
    assert result.summary.cost_usd == pytest.approx(sum(record.cost.total_usd for record in result.calls))
    assert result.summary.by_tool() == {"add": {"ok": 1}}


def test_run_sync(exported) -> None:
    model = ScriptedModel([answer("hello")])
    result = Agent(router_with(model), [add]).run_sync([{"role": "user", "content": "hi"}])

    assert result.output == "hello"
    assert result.summary.steps == 1


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"max_steps": 0}, "max_steps must be a whole number of 1 or more"),
        ({"max_parallel_tools": 0}, "max_parallel_tools"),
        ({"max_tool_errors": -1}, "max_tool_errors"),
        ({"tool_timeout_s": 0}, "tool_timeout_s"),
        ({"deadline_s": float("inf")}, "deadline_s"),
        ({"budget_usd": -1.0}, "budget_usd"),
        ({"call_options": {"tools": []}}, "call_options cannot set tools"),
    ],
)
def test_invalid_bounds_rejected(options, fragment) -> None:  # noqa: ANN001
    with pytest.raises(ConfigError, match=fragment):
        Agent(router_with(ScriptedModel()), [add], **options)


def test_duplicate_tool_names_rejected() -> None:
    with pytest.raises(ConfigError, match="two tools are named 'add'"):
        Agent(router_with(ScriptedModel()), [add, Tool(lookup, name="add")])


async def test_tool_span_keeps_genai_names_over_otlp(exported) -> None:
    model = ScriptedModel([asks(call("add", '{"a": 1, "b": 2}', "c1")), answer("3")])
    await Agent(router_with(model), [add]).run("go")
    [tool_span] = [span for span in exported.spans if span.kind == "tool"]

    _, [received] = decode_request(encode_request([span_from_record(tool_span)], resource("test", "0")))

    assert received.name == "execute_tool add"
    assert received.attributes["gen_ai.tool.name"] == "add"
    assert received.attributes["gen_ai.tool.call.id"] == "c1"
    assert received.attributes["trunkline.outcome"] == "ok"
    assert received.attributes["trunkline.span_kind"] == "tool"


async def test_records_redact_tool_arguments(exported) -> None:
    secret = "sk-live-abcdefghijklmnopqrstuvwxyz"
    arguments = json.dumps({"key": secret})
    model = ScriptedModel([asks(call("lookup", arguments, "c1")), answer("done")])
    result = await Agent(router_with(model), [lookup]).run("go")

    first, second = result.calls
    assert secret not in first.tool_calls[0].arguments
    assert "[REDACTED]" in first.tool_calls[0].arguments
    assert secret not in second.messages[1].tool_calls[0].arguments
    # The tool itself and the next request received the arguments as the model sent them.
    assert result.tool_results[0].arguments == arguments
    assert model.requests[1].messages[1].tool_calls[0].arguments == arguments
