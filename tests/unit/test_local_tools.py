"""The local model's tool calls as constrained JSON: prompt, schema and reply parsing."""

from __future__ import annotations

import json

import pytest

from trunkline.providers.local import _chat_arguments
from trunkline.providers.local_tools import chat_messages, parse_reply, reply_schema, uses_tools
from trunkline.types.calls import ModelRequest
from trunkline.types.messages import Message, ToolCall, ToolDefinition

SEARCH = ToolDefinition(
    name="search",
    description="Search the documents.",
    parameters={"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
)
LOCATE = ToolDefinition(
    name="locate",
    parameters={
        "$defs": {"Place": {"type": "object", "properties": {"city": {"type": "string"}}}},
        "type": "object",
        "properties": {"place": {"$ref": "#/$defs/Place"}},
        "required": ["place"],
    },
)


def request_with(**fields: object) -> ModelRequest:
    return ModelRequest(model="local", messages=(Message.user("Find the report."),), **fields)


def test_auto_allows_answer_or_calls() -> None:
    schema = reply_schema(request_with(tools=(SEARCH, LOCATE)))

    answer, calls = schema["anyOf"]
    assert answer["required"] == ["answer"]
    options = calls["properties"]["tool_calls"]["items"]["anyOf"]
    assert [option["properties"]["name"] for option in options] == [{"const": "search"}, {"const": "locate"}]
    assert options[0]["properties"]["arguments"] == SEARCH.parameters


def test_nested_definitions_move_to_root() -> None:
    schema = reply_schema(request_with(tools=(LOCATE,)))

    assert schema["$defs"] == {"Place": LOCATE.parameters["$defs"]["Place"]}
    arguments = schema["anyOf"][1]["properties"]["tool_calls"]["items"]["anyOf"][0]["properties"]["arguments"]
    assert "$defs" not in arguments


def test_required_and_named_choice_force_calls() -> None:
    required = reply_schema(request_with(tools=(SEARCH, LOCATE), tool_choice="required"))
    named = reply_schema(request_with(tools=(SEARCH, LOCATE), tool_choice="locate"))

    assert required["required"] == ["tool_calls"]
    assert len(required["properties"]["tool_calls"]["items"]["anyOf"]) == 2
    [only] = named["properties"]["tool_calls"]["items"]["anyOf"]
    assert only["properties"]["name"] == {"const": "locate"}


def test_choice_none_sends_no_schema() -> None:
    request = request_with(tools=(SEARCH,), tool_choice="none")

    assert not uses_tools(request)
    assert "response_format" not in _chat_arguments(request)


def test_messages_describe_tools_and_past_calls() -> None:
    conversation = (
        Message.user("Find the report."),
        Message(role="assistant", content="", tool_calls=(ToolCall(id="c1", name="search", arguments='{"query": "report"}'),)),
        Message.tool("c1", "no results", is_error=True),
    )
    messages = chat_messages(ModelRequest(model="local", messages=conversation, tools=(SEARCH,)))

    assert messages[0]["role"] == "system"
    assert '"name": "search"' in messages[0]["content"]
    assert messages[1] == {"role": "user", "content": "Find the report."}
    assert json.loads(messages[2]["content"]) == {"tool_calls": [{"name": "search", "arguments": {"query": "report"}}]}
    assert messages[3] == {"role": "user", "content": "search failed: no results"}


def test_chat_arguments_constrain_reply() -> None:
    arguments = _chat_arguments(request_with(tools=(SEARCH,)))

    assert arguments["response_format"]["type"] == "json_object"
    assert arguments["response_format"]["schema"] == reply_schema(request_with(tools=(SEARCH,)))
    assert arguments["messages"][0]["role"] == "system"


@pytest.mark.parametrize(
    ("text", "answer", "names"),
    [
        ('{"answer": "Paris"}', "Paris", []),
        ('{"tool_calls": [{"name": "search", "arguments": {"query": "a"}}, {"name": "locate", "arguments": {}}]}', "", ["search", "locate"]),
        ('{"tool_calls": [{"name": "sea', '{"tool_calls": [{"name": "sea', []),
        ("[1, 2]", "[1, 2]", []),
    ],
)
def test_parse_reply(text: str, answer: str, names: list[str]) -> None:
    parsed_answer, calls = parse_reply(text)

    assert parsed_answer == answer
    assert [call.name for call in calls] == names
    assert len({call.id for call in calls}) == len(calls)


def test_one_call_without_parallel_calls() -> None:
    single = reply_schema(request_with(tools=(SEARCH,), tool_choice="required", parallel_tool_calls=False))
    several = reply_schema(request_with(tools=(SEARCH,), tool_choice="required"))

    assert single["properties"]["tool_calls"]["maxItems"] == 1
    assert "maxItems" not in several["properties"]["tool_calls"]
