"""An agent's answer checked against an output schema, and a forced tool choice used once."""

from __future__ import annotations

import json

import pytest
from pydantic import BaseModel

from trunkline.agents import Agent
from trunkline.errors import ConfigError, ToolErrorKind
from trunkline.providers.fake import FakeReply, ScriptedModel
from trunkline.tools import Tool
from trunkline.types.messages import Message, ToolCall, plain_messages
from unit.helpers import router_with


class Sum(BaseModel):
    total: int
    explanation: str


def add(a: int, b: int) -> int:
    """Add two whole numbers.

    Args:
        a: the first number.
        b: the second number.
    """
    return a + b


ASK_ADD = FakeReply(
    "", tool_calls=(ToolCall(id="c1", name="add", arguments='{"a": 2, "b": 3}'),), input_tokens=10, output_tokens=5
)


async def test_matching_answer_one_call(exported) -> None:
    model = ScriptedModel([ASK_ADD, FakeReply('{"total": 5, "explanation": "2 + 3"}')])
    result = await Agent(router_with(model), [add], output=Sum).run("2 + 3?")

    assert result.answered
    assert result.parsed == Sum(total=5, explanation="2 + 3")
    assert result.summary.model_calls == 2


async def test_prose_answer_requested_again(exported) -> None:
    model = ScriptedModel(
        [ASK_ADD, FakeReply("The total is 5."), FakeReply('{"total": 5, "explanation": "added"}')]
    )
    result = await Agent(router_with(model), [add], output=Sum).run("2 + 3?")

    assert result.answered
    assert result.parsed == Sum(total=5, explanation="added")
    assert json.loads(result.output) == {"total": 5, "explanation": "added"}
    assert result.summary.model_calls == 3
    assert result.summary.steps == 2
    last = model.requests[-1]
    assert last.tools == ()
    assert last.output_schema == Sum.model_json_schema()
    # The tool call and its result travel as text, since the call carries no tools.
    assert [message.role for message in last.messages] == ["user", "assistant", "user", "assistant", "user"]
    assert "add returned: 5" in last.messages[2].content
    assert "does not match the required format" in last.messages[-1].content
    assert result.messages[-1] == Message.assistant(result.output)


async def test_mismatch_stops_invalid_output(exported) -> None:
    model = ScriptedModel([ASK_ADD, FakeReply("five"), FakeReply("still five"), FakeReply("{}")])
    result = await Agent(router_with(model, max_repairs=1), [add], output=Sum).run("2 + 3?")

    assert not result.answered
    assert result.summary.stop_reason == "invalid_output"
    assert result.parsed is None
    assert result.calls[-1].validation is not None
    assert not result.calls[-1].validation.valid
    assert "total" in (result.error or "")


async def test_json_schema_dict_gives_decoded_json(exported) -> None:
    schema = {"type": "object", "properties": {"total": {"type": "integer"}}, "required": ["total"]}
    model = ScriptedModel([ASK_ADD, FakeReply('Here: {"total": 5}')])
    result = await Agent(router_with(model), [add], output=schema).run("2 + 3?")

    assert result.parsed == {"total": 5}


async def test_forced_tool_choice_used_once(exported) -> None:
    model = ScriptedModel([ASK_ADD, FakeReply("5")])
    result = await Agent(router_with(model), [add], tool_choice="required").run("2 + 3?")

    assert result.answered
    assert [request.tool_choice for request in model.requests] == ["required", "auto"]


async def test_forced_choice_answer_ends_run(exported) -> None:
    model = ScriptedModel([FakeReply("no tool yet"), ASK_ADD, FakeReply("5")])
    result = await Agent(router_with(model), [add], tool_choice="add", max_steps=2).run("2 + 3?")

    # A reply without tool calls ends the run, forced or not.
    assert result.answered
    assert [request.tool_choice for request in model.requests] == ["add"]


def test_plain_messages_write_tool_blocks_as_text() -> None:
    conversation = [
        Message.user("2 + 3?"),
        Message(role="assistant", content="", tool_calls=(ToolCall(id="c1", name="add", arguments='{"a": 2}'),)),
        Message.tool("c1", "missing b", is_error=True),
    ]
    plain = plain_messages(conversation)

    assert [message.role for message in plain] == ["user", "assistant", "user"]
    assert json.loads(plain[1].content) == {"tool_calls": [{"name": "add", "arguments": {"a": 2}}]}
    assert plain[2].content == "add failed: missing b"
    assert all(not message.tool_calls and message.tool_call_id is None for message in plain)


def ask_add(call_id: str, a: int = 2) -> FakeReply:
    return FakeReply("", tool_calls=(ToolCall(id=call_id, name="add", arguments=f'{{"a": {a}, "b": 3}}'),))


async def test_repeated_call_returns_earlier_result(exported) -> None:
    model = ScriptedModel([ask_add("c1"), ask_add("c2"), FakeReply("5")])
    result = await Agent(router_with(model), [add], allow_repeated_calls=False).run("2 + 3?")

    first, second = result.tool_results
    assert first.outcome == "ok"
    assert second.outcome == "error"
    assert second.error_kind == ToolErrorKind.REPEATED_CALL
    assert "already called with these arguments and returned: 5" in second.content
    assert result.summary.tool_errors == {ToolErrorKind.REPEATED_CALL: 1}


async def test_repeat_in_one_step_runs_once(exported) -> None:
    both = FakeReply("", tool_calls=(*ask_add("c1").tool_calls, *ask_add("c2").tool_calls))
    model = ScriptedModel([both, ask_add("c3", a=4), FakeReply("5 and 7")])
    result = await Agent(router_with(model), [add], allow_repeated_calls=False).run("2 + 3, twice?")

    outcomes = [(item.call_id, item.outcome) for item in result.tool_results]
    assert outcomes == [("c1", "ok"), ("c2", "error"), ("c3", "ok")]
    assert "in this step" in result.tool_results[1].content


async def test_repeats_run_by_default(exported) -> None:
    model = ScriptedModel([ask_add("c1"), ask_add("c2"), FakeReply("5")])
    result = await Agent(router_with(model), [add]).run("2 + 3?")

    assert [item.outcome for item in result.tool_results] == ["ok", "ok"]


async def test_used_up_tool_not_offered(exported) -> None:
    once = Tool(add, max_uses=1)
    model = ScriptedModel([ask_add("c1"), FakeReply("5")])
    result = await Agent(router_with(model), [once, Tool(add, name="plus")]).run("2 + 3?")

    assert result.answered
    offered = [[tool.name for tool in request.tools] for request in model.requests]
    assert offered == [["add", "plus"], ["plus"]]


async def test_used_up_tool_called_again(exported) -> None:
    both = FakeReply("", tool_calls=(*ask_add("c1").tool_calls, *ask_add("c2", a=4).tool_calls))
    model = ScriptedModel([both, FakeReply("5")])
    result = await Agent(router_with(model), [Tool(add, max_uses=1)]).run("2 + 3?")

    first, second = result.tool_results
    assert first.outcome == "ok"
    assert second.error_kind == ToolErrorKind.USED_UP
    assert "may be called 1 time(s) in a run" in second.content
    # With no tool left to offer, the next call carries no tools and no tool choice.
    assert model.requests[1].tools == ()
    assert model.requests[1].tool_choice is None


async def test_failed_call_uses_nothing(exported) -> None:
    bad = FakeReply("", tool_calls=(ToolCall(id="c0", name="add", arguments='{"a": "x", "b": 3}'),))
    model = ScriptedModel([bad, ask_add("c1"), FakeReply("5")])
    result = await Agent(router_with(model), [Tool(add, max_uses=1)]).run("2 + 3?")

    assert [item.outcome for item in result.tool_results] == ["error", "ok"]
    assert result.answered


def test_max_uses_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="max_uses of tool 'add' must be a whole number of 1 or more, got 0"):
        Tool(add, max_uses=0)


async def test_parallel_tool_calls_sent_with_tools(exported) -> None:
    model = ScriptedModel([ask_add("c1"), FakeReply("5")])
    await Agent(router_with(model), [Tool(add, max_uses=1)], parallel_tool_calls=False).run("2 + 3?")

    # The second call offers no tool, so it carries no parallel_tool_calls either.
    assert [request.parallel_tool_calls for request in model.requests] == [False, None]


async def test_parallel_tool_calls_need_tools() -> None:
    router = router_with(ScriptedModel([FakeReply("5")]))

    with pytest.raises(ConfigError, match="parallel_tool_calls was given without tools"):
        await router.complete("2 + 3?", parallel_tool_calls=False)


def reserved_name(model_config: str) -> str:
    """Return nothing.

    Args:
        model_config: a name Pydantic keeps for itself.
    """
    return model_config


@pytest.mark.parametrize(
    ("build", "fragment"),
    [
        (lambda: Tool(add, max_uses=True), "max_uses of tool 'add' must be a whole number"),
        (lambda: Tool(add, timeout_s="5"), "timeout_s of tool 'add' must be a number of seconds"),
        (lambda: Tool(reserved_name), "parameter 'model_config' of tool 'reserved_name' has a name that Pydantic reserves"),
        (lambda: Agent(router_with(ScriptedModel([])), Tool(add)), "tools must be a list of tools or functions"),
        (lambda: Agent(router_with(ScriptedModel([])), ["tools:add"]), "is a string; pass the function or Tool"),
        (lambda: Agent(router_with(ScriptedModel([])), [add], max_steps=True), "max_steps must be a whole number"),
        (lambda: Agent(router_with(ScriptedModel([])), [add], deadline_s="5"), "deadline_s must be a finite number"),
        (lambda: Agent(router_with(ScriptedModel([])), [add], output=int), "JSON Schema dict, got int"),
    ],
)
def test_invalid_settings_rejected(build, fragment) -> None:  # noqa: ANN001
    with pytest.raises(ConfigError, match=fragment):
        build()


async def test_no_tool_left_asks_in_schema(exported) -> None:
    model = ScriptedModel([ask_add("c1"), FakeReply('{"total": 5, "explanation": "2 + 3"}')])
    result = await Agent(router_with(model), [Tool(add, max_uses=1)], output=Sum).run("2 + 3?")

    assert result.parsed == Sum(total=5, explanation="2 + 3")
    assert result.summary.model_calls == 2
    second = model.requests[1]
    assert second.tools == ()
    assert second.output_schema == Sum.model_json_schema()
