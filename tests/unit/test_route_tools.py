"""Tool definitions through the Router: checks, the record, and arguments left to the caller."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from trunkline.errors import ConfigError, ErrorKind, OutputInvalid
from trunkline.providers.fake import FakeReply, ScriptedModel
from trunkline.routing.policies import estimate_input_tokens
from trunkline.types.calls import ModelRequest
from trunkline.types.messages import Message, ToolCall, ToolDefinition
from unit.helpers import router_with

SEARCH = ToolDefinition(
    name="search",
    description="Search the documents.",
    parameters={"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
)
BROKEN_CALL = ToolCall(id="c1", name="search", arguments='{"query": ')


class Answer(BaseModel):
    text: str


async def test_record_keeps_tools_and_choice(exported) -> None:
    model = ScriptedModel([FakeReply("", tool_calls=(ToolCall(id="c1", name="search", arguments="{}"),))])
    result = await router_with(model).complete("find it", tools=[SEARCH], tool_choice="required")

    record = result.record
    assert record.tools == [SEARCH]
    assert record.tool_choice == "required"
    assert record.finish_reason == "tool_calls"
    assert model.requests[0].tools == (SEARCH,)
    assert model.requests[0].tool_choice == "required"


async def test_call_without_tools_records_none(exported) -> None:
    result = await router_with(ScriptedModel([FakeReply("hi")])).complete("hello")

    assert result.record.tools == []
    assert result.record.tool_choice is None


async def test_bad_arguments_reach_caller_with_tools(exported) -> None:
    model = ScriptedModel([FakeReply("", tool_calls=(BROKEN_CALL,))])
    result = await router_with(model).complete("find it", tools=[SEARCH])

    assert result.record.tool_calls == [BROKEN_CALL]
    assert len(model.requests) == 1


async def test_bad_arguments_repaired_without_tools(exported) -> None:
    model = ScriptedModel(default=FakeReply("", tool_calls=(BROKEN_CALL,)))
    with pytest.raises(OutputInvalid) as caught:
        await router_with(model, max_repairs=1).complete("find it")

    assert caught.value.kind == ErrorKind.INVALID_TOOL_ARGUMENTS
    assert len(model.requests) == 2


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"tools": [SEARCH, SEARCH]}, "tool names must be unique, got search more than once"),
        ({"tools": [SEARCH], "output": Answer}, "cannot send tools and an output schema together"),
        ({"tools": [SEARCH], "tool_choice": "browse"}, "tool_choice must be one of auto, none, required"),
        ({"tool_choice": "auto"}, "tool_choice 'auto' was given without tools"),
    ],
)
async def test_invalid_tool_options_rejected(options, fragment) -> None:  # noqa: ANN001
    model = ScriptedModel([FakeReply("never")])
    with pytest.raises(ConfigError, match=fragment):
        await router_with(model).complete("find it", **options)
    assert model.requests == []


def test_estimate_counts_tools_and_calls() -> None:
    plain = ModelRequest(model="m", messages=(Message.user("find it"),))
    with_tools = plain.model_copy(update={"tools": (SEARCH,)})
    with_call = plain.model_copy(
        update={
            "messages": (
                Message.user("find it"),
                Message(role="assistant", content="", tool_calls=(ToolCall(id="c1", name="search", arguments="x" * 400),)),
            )
        }
    )

    assert estimate_input_tokens(with_tools) > estimate_input_tokens(plain) + 10
    assert estimate_input_tokens(with_call) >= estimate_input_tokens(plain) + 100


async def test_stream_records_tool_calls(exported) -> None:
    call = ToolCall(id="c1", name="search", arguments='{"query": "report"}')
    model = ScriptedModel([FakeReply("", tool_calls=(call,))])

    stream = router_with(model).stream("find it", tools=[SEARCH], tool_choice="auto")
    deltas = [delta async for delta in stream]

    assert deltas == []
    record = stream.result.record
    assert record.tool_calls == [call]
    assert record.tools == [SEARCH]
    assert record.finish_reason == "tool_calls"
    assert model.requests[0].tools == (SEARCH,)


async def test_record_redacts_tool_arguments(exported) -> None:
    secret = "sk-live-abcdefghijklmnopqrstuvwxyz"
    call = ToolCall(id="c1", name="search", arguments=f'{{"query": "{secret}"}}')
    model = ScriptedModel([FakeReply("", tool_calls=(call,))])

    result = await router_with(model).complete("find it", tools=[SEARCH])

    assert result.tool_calls == (call,)
    assert secret not in result.record.tool_calls[0].arguments
    assert exported.calls[0].tool_calls == result.record.tool_calls


async def test_stream_result_keeps_raw_tool_calls(exported) -> None:
    secret = "sk-live-abcdefghijklmnopqrstuvwxyz"
    call = ToolCall(id="c1", name="search", arguments=f'{{"query": "{secret}"}}')
    stream = router_with(ScriptedModel([FakeReply("", tool_calls=(call,))])).stream("find it", tools=[SEARCH])

    async for _ in stream:
        pass

    assert stream.result.tool_calls == (call,)
    assert secret not in stream.result.record.tool_calls[0].arguments
