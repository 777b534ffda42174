"""Invalid tool payloads: a 400 in each API's error shape that names the field, and no upstream call."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx
import openai
import pytest

from fakeserver import FakeServer
from gateway.harness import GatewayServer
from gateway.test_sdk_clients import anthropic_client, openai_client
from trunkline.store.keys import Role

USER = [{"role": "user", "content": "Hello"}]
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}}
OPENAI_TOOL = {"type": "function", "function": {"name": "weather", "parameters": SCHEMA}}
ANTHROPIC_TOOL = {"name": "weather", "input_schema": SCHEMA}


@pytest.fixture
def client(gateway: GatewayServer) -> httpx.Client:
    with gateway.client(gateway.key(Role.DEVELOPER)) as client:
        yield client


def chat(**fields: Any) -> dict[str, Any]:
    return {"model": "chat", "messages": USER, **fields}


def messages(**fields: Any) -> dict[str, Any]:
    return {"model": "claude", "max_tokens": 50, "messages": USER, **fields}


OPENAI_CASES = {
    "tool without name": (
        chat(tools=[{"type": "function", "function": {"parameters": SCHEMA}}]),
        "tools[0].function.name",
        ["must be a name of 1 to 64 letters", "got nothing (the field is missing)"],
    ),
    "parameters not an object": (
        chat(tools=[{"type": "function", "function": {"name": "weather", "parameters": "city"}}]),
        "tools[0].function.parameters",
        ["must be a JSON Schema object", 'got "city"', '{"type": "object"'],
    ),
    "tool type not function": (
        chat(tools=[{"type": "web_search"}]),
        "tools[0].type",
        ['must be "function"', 'got "web_search"'],
    ),
    "tool message without id": (
        chat(messages=[*USER, {"role": "tool", "content": "12 C"}], tools=[OPENAI_TOOL]),
        "messages[1].tool_call_id",
        [
            "must be the id of the tool call whose result",
            "copy the id from the assistant message's tool_calls",
        ],
    ),
    "choice names unknown tool": (
        chat(tools=[OPENAI_TOOL], tool_choice={"type": "function", "function": {"name": "clock"}}),
        "tool_choice",
        ["names the tool 'clock', which is not in tools (weather)"],
    ),
    "choice of unknown form": (
        chat(tools=[OPENAI_TOOL], tool_choice="always"),
        "tool_choice",
        ['must be "auto", "none", "required"', 'got "always"'],
    ),
    "choice without tools": (
        chat(tool_choice="required"),
        "tool_choice",
        ["was sent without tools"],
    ),
    "parameters not an object schema": (
        chat(tools=[{"type": "function", "function": {"name": "weather", "parameters": {"type": "string"}}}]),
        "tools[0].function.parameters",
        ["must be a JSON Schema object", '"type": "string"'],
    ),
    "duplicate tool names": (
        chat(tools=[OPENAI_TOOL, OPENAI_TOOL]),
        "tools[1].name",
        ["'weather' is the name of an earlier tool too"],
    ),
    "user message without content": (
        chat(messages=[{"role": "user"}]),
        "messages[0].content",
        ["only an assistant message with tool_calls may leave out its content"],
    ),
}


@pytest.mark.parametrize("body, param, fragments", OPENAI_CASES.values(), ids=OPENAI_CASES.keys())
def test_openai_invalid_tools(
    client: httpx.Client, fake_server: FakeServer, body: dict, param: str, fragments: list[str]
) -> None:
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "invalid_request"
    assert error["param"] == param
    for fragment in fragments:
        assert fragment in error["message"]
    assert fake_server.requests == []


ANTHROPIC_CASES = {
    "tool without name": (
        messages(tools=[{"input_schema": SCHEMA}]),
        ["tools[0].name must be a name of 1 to 64 letters", "got nothing (the field is missing)"],
    ),
    "schema not an object": (
        messages(tools=[{"name": "weather", "input_schema": ["city"]}]),
        ['tools[0].input_schema must be a JSON Schema object, got ["city"]'],
    ),
    "schema missing": (
        messages(tools=[{"name": "weather"}]),
        ["tools[0].input_schema must be a JSON Schema object, got nothing"],
    ),
    "server tool": (
        messages(tools=[{"type": "web_search_20250305", "name": "web_search"}]),
        ['tools[0].type must be "custom" or no type', "server tools are not forwarded"],
    ),
    "result without id": (
        messages(
            messages=[{"role": "user", "content": [{"type": "tool_result", "content": "12 C"}]}]
        ),
        [
            "messages[0].content[0].tool_use_id must be the id of the tool_use block whose result this is"
        ],
    ),
    "tool use in user turn": (
        messages(
            messages=[
                {
                    "role": "user",
                    "content": [{"type": "tool_use", "id": "t", "name": "weather", "input": {}}],
                }
            ]
        ),
        ['messages[0].content[0].type must be "text" or "tool_result" in a user message'],
    ),
    "choice names unknown tool": (
        messages(tools=[ANTHROPIC_TOOL], tool_choice={"type": "tool", "name": "clock"}),
        ["tool_choice names the tool 'clock', which is not in tools (weather)"],
    ),
    "choice of unknown type": (
        messages(tools=[ANTHROPIC_TOOL], tool_choice={"type": "required"}),
        ['tool_choice must be an object of type "auto", "any" or "none"', '{"type": "required"}'],
    ),
    "parallel switch not a boolean": (
        messages(tools=[ANTHROPIC_TOOL], tool_choice={"type": "auto", "disable_parallel_tool_use": "yes"}),
        ["tool_choice.disable_parallel_tool_use must be true or false", "send a JSON boolean"],
    ),
}


@pytest.mark.parametrize("body, fragments", ANTHROPIC_CASES.values(), ids=ANTHROPIC_CASES.keys())
def test_anthropic_invalid_tools(
    client: httpx.Client, fake_server: FakeServer, body: dict, fragments: list[str]
) -> None:
    response = client.post("/v1/messages", json=body)
    assert response.status_code == 400
    payload = response.json()
    assert payload["type"] == "error"
    assert payload["error"]["type"] == "invalid_request_error"
    for fragment in fragments:
        assert fragment in payload["error"]["message"]
    assert fake_server.requests == []


def test_openai_sdk_bad_request(gateway: GatewayServer, fake_server: FakeServer) -> None:
    client = openai_client(gateway, gateway.key(Role.DEVELOPER))
    tool = {"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="chat",
            messages=USER,
            tools=[tool],
            tool_choice={"type": "function", "function": {"name": "x"}},
        )
    assert caught.value.param == "tool_choice"
    assert fake_server.requests == []


def test_anthropic_sdk_bad_request(gateway: GatewayServer, fake_server: FakeServer) -> None:
    client = anthropic_client(gateway, gateway.key(Role.DEVELOPER))
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(
            model="claude", max_tokens=50, messages=USER, tools=[{"name": "", "input_schema": {}}]
        )
    assert "tools[0].name" in caught.value.message
    assert fake_server.requests == []


def test_tools_need_auth(gateway: GatewayServer, fake_server: FakeServer) -> None:
    with gateway.client() as anonymous:
        response = anonymous.post("/v1/chat/completions", json=chat(tools=[OPENAI_TOOL]))
    assert response.status_code == 401
    assert fake_server.requests == []


def test_tools_with_response_format(client: httpx.Client, fake_server: FakeServer) -> None:
    body = chat(tools=[OPENAI_TOOL], response_format={"type": "json_object"})
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 400
    assert "cannot send tools and an output schema together" in response.json()["error"]["message"]
    assert fake_server.requests == []


def test_parallel_switch_must_be_boolean(client: httpx.Client, fake_server: FakeServer) -> None:
    body = chat(tools=[OPENAI_TOOL], parallel_tool_calls="yes")
    response = client.post("/v1/chat/completions", json=body)

    assert response.status_code == 422
    assert "parallel_tool_calls" in response.text
    assert fake_server.requests == []
