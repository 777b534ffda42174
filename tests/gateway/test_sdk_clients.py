"""The official OpenAI and Anthropic SDKs, unchanged, against the gateway over loopback HTTP.

The gateway's routes lead to the fake server, so every response here went
through the router, an upstream HTTP call and the store.
"""

from __future__ import annotations

import json
from typing import Any

import anthropic
import openai
import pydantic
import pytest

from fakeserver import (
    FakeServer,
    PlannedReply,
    anthropic_error,
    anthropic_message,
    anthropic_text_block,
    openai_completion,
    openai_error,
)
from gateway.harness import GatewayServer
from trunkline.store.keys import NewKey, Role

USER = [{"role": "user", "content": "Hello"}]
FAKE_TEXT = "Hello from the fake server."


class City(pydantic.BaseModel):
    name: str
    population: int


def openai_client(gateway: GatewayServer, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0)


def anthropic_client(gateway: GatewayServer, key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.url, api_key=key, max_retries=0)


def only_call(gateway: GatewayServer, key: NewKey) -> dict[str, Any]:
    """Return the one call row in the store, checked to belong to `key`."""
    rows = gateway.calls()
    assert len(rows) == 1
    assert rows[0]["api_key_id"] == key.key.key_id
    return rows[0]


def assert_fake_tokens(row: dict[str, Any]) -> None:
    """The fake server's default reply reports 12 input and 5 output tokens."""
    assert row["input_tokens"] == 12
    assert row["output_tokens"] == 5


@pytest.fixture
def developer(gateway: GatewayServer) -> NewKey:
    return gateway.new_key(Role.DEVELOPER)


# OpenAI SDK


def test_openai_plain(gateway: GatewayServer, developer: NewKey, fake_server: FakeServer) -> None:
    client = openai_client(gateway, developer.secret)
    completion = client.chat.completions.create(model="chat", messages=USER)
    assert completion.choices[0].message.content == FAKE_TEXT
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == "chat"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == 12
    assert completion.usage.completion_tokens == 5
    assert fake_server.requests[-1].body["messages"] == USER
    row = only_call(gateway, developer)
    assert_fake_tokens(row)
    assert row["outcome"] == "ok"
    assert completion.id == f"chatcmpl-{row['call_id']}"


def test_openai_stream(gateway: GatewayServer, developer: NewKey) -> None:
    client = openai_client(gateway, developer.secret)
    chunks = list(client.chat.completions.create(model="chat", messages=USER, stream=True))
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == FAKE_TEXT
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(chunk.usage is None for chunk in chunks)
    assert_fake_tokens(only_call(gateway, developer))


def test_openai_stream_usage(gateway: GatewayServer, developer: NewKey) -> None:
    client = openai_client(gateway, developer.secret)
    stream = client.chat.completions.create(
        model="chat", messages=USER, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.prompt_tokens == 12
    assert last.usage.completion_tokens == 5
    assert last.usage.total_tokens == 17
    assert_fake_tokens(only_call(gateway, developer))


async def test_openai_async(gateway: GatewayServer, developer: NewKey) -> None:
    client = openai.AsyncOpenAI(
        base_url=f"{gateway.url}/v1", api_key=developer.secret, max_retries=0
    )
    async with client:
        completion = await client.chat.completions.create(model="chat", messages=USER)
        stream = await client.chat.completions.create(model="claude", messages=USER, stream=True)
        pieces = [chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices]
    assert completion.choices[0].message.content == FAKE_TEXT
    assert "".join(pieces) == FAKE_TEXT
    rows = gateway.calls()
    assert [row["route"] for row in rows] == ["chat", "claude"]
    for row in rows:
        assert row["api_key_id"] == developer.key.key_id
        assert_fake_tokens(row)


def test_openai_json_schema(
    gateway: GatewayServer, developer: NewKey, fake_server: FakeServer
) -> None:
    fake_server.plan(PlannedReply(body=openai_completion('{"name": "Oslo", "population": 709000}')))
    schema = City.model_json_schema()
    client = openai_client(gateway, developer.secret)
    completion = client.chat.completions.create(
        model="chat",
        messages=USER,
        response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": schema}},
    )
    parsed = json.loads(completion.choices[0].message.content)
    assert parsed == {"name": "Oslo", "population": 709000}
    sent = fake_server.requests[-1].body["response_format"]
    assert sent["type"] == "json_schema"
    assert sent["json_schema"]["schema"]["required"] == ["name", "population"]
    assert_fake_tokens(only_call(gateway, developer))


def test_openai_json_object(
    gateway: GatewayServer, developer: NewKey, fake_server: FakeServer
) -> None:
    reply = anthropic_message([anthropic_text_block('{"ok": true}')])
    fake_server.plan(PlannedReply(body=reply))
    client = openai_client(gateway, developer.secret)
    completion = client.chat.completions.create(
        model="claude", messages=USER, response_format={"type": "json_object"}
    )
    assert json.loads(completion.choices[0].message.content) == {"ok": True}
    assert_fake_tokens(only_call(gateway, developer))


def test_openai_parse(gateway: GatewayServer, developer: NewKey, fake_server: FakeServer) -> None:
    fake_server.plan(PlannedReply(body=openai_completion('{"name": "Oslo", "population": 709000}')))
    client = openai_client(gateway, developer.secret)
    completion = client.chat.completions.parse(model="chat", messages=USER, response_format=City)
    assert completion.choices[0].message.parsed == City(name="Oslo", population=709000)
    assert_fake_tokens(only_call(gateway, developer))


def test_openai_parse_repaired(
    gateway: GatewayServer, developer: NewKey, fake_server: FakeServer
) -> None:
    # The first reply lacks a field, so the router sends a repair request (the route's
    # max_repairs allows one).
    fake_server.plan(
        PlannedReply(body=openai_completion('{"name": "Oslo"}')),
        PlannedReply(body=openai_completion('{"name": "Oslo", "population": 709000}')),
    )
    client = openai_client(gateway, developer.secret)
    completion = client.chat.completions.parse(model="chat", messages=USER, response_format=City)
    assert completion.choices[0].message.parsed == City(name="Oslo", population=709000)
    assert len(fake_server.requests) == 2


def test_openai_models(gateway: GatewayServer) -> None:
    viewer = gateway.key(Role.VIEWER)
    names = [model.id for model in openai_client(gateway, viewer).models.list()]
    assert names[:3] == ["chat", "claude", "priced"]
    assert set(names) == {"chat", "claude", "priced", "fake-gpt", "fake-claude", "fake-priced"}


def test_openai_model_retrieve(gateway: GatewayServer) -> None:
    client = openai_client(gateway, gateway.key(Role.VIEWER, routes=("chat", "fake-claude")))
    model = client.models.retrieve("chat")
    assert (model.id, model.object, model.owned_by) == ("chat", "model", "trunkline")
    assert client.models.retrieve("fake-claude").id == "fake-claude"
    for name in ("gpt-9", "claude"):
        with pytest.raises(openai.NotFoundError) as caught:
            client.models.retrieve(name)
        assert caught.value.code == "model_not_found"
        assert caught.value.body["type"] == "not_found_error"


def test_openai_models_restricted(gateway: GatewayServer) -> None:
    key = gateway.key(Role.DEVELOPER, routes=("claude", "priced"))
    names = [model.id for model in openai_client(gateway, key).models.list()]
    assert names == ["claude", "priced"]


# Anthropic SDK


def test_anthropic_plain(gateway: GatewayServer, developer: NewKey) -> None:
    client = anthropic_client(gateway, developer.secret)
    message = client.messages.create(model="claude", max_tokens=100, messages=USER)
    assert message.content[0].type == "text"
    assert message.content[0].text == FAKE_TEXT
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens == 12
    assert message.usage.output_tokens == 5
    row = only_call(gateway, developer)
    assert_fake_tokens(row)
    assert message.id == f"msg_{row['call_id']}"


def test_anthropic_system(
    gateway: GatewayServer, developer: NewKey, fake_server: FakeServer
) -> None:
    client = anthropic_client(gateway, developer.secret)
    client.messages.create(
        model="claude", max_tokens=100, system="Answer in French.", messages=USER
    )
    sent = fake_server.requests[-1].body
    assert sent["system"] == "Answer in French."
    assert sent["messages"] == USER
    assert_fake_tokens(only_call(gateway, developer))


def test_anthropic_system_to_openai(
    gateway: GatewayServer, developer: NewKey, fake_server: FakeServer
) -> None:
    client = anthropic_client(gateway, developer.secret)
    message = client.messages.create(
        model="chat", max_tokens=100, system="Answer in French.", messages=USER
    )
    assert message.content[0].text == FAKE_TEXT
    sent = fake_server.requests[-1].body["messages"]
    assert sent == [{"role": "system", "content": "Answer in French."}, *USER]


def test_anthropic_content_blocks(
    gateway: GatewayServer, developer: NewKey, fake_server: FakeServer
) -> None:
    client = anthropic_client(gateway, developer.secret)
    blocks = [{"type": "text", "text": "Hello, "}, {"type": "text", "text": "world."}]
    conversation = [
        {"role": "user", "content": blocks},
        {"role": "assistant", "content": [{"type": "text", "text": "Hi."}]},
        {"role": "user", "content": "Again."},
    ]
    client.messages.create(
        model="claude",
        max_tokens=100,
        system=[{"type": "text", "text": "Be brief."}],
        messages=conversation,
    )
    sent = fake_server.requests[-1].body
    assert sent["system"] == "Be brief."
    assert [message["role"] for message in sent["messages"]] == ["user", "assistant", "user"]
    assert sent["messages"][0]["content"] == "Hello, world."
    assert_fake_tokens(only_call(gateway, developer))


def test_anthropic_stream(gateway: GatewayServer, developer: NewKey) -> None:
    client = anthropic_client(gateway, developer.secret)
    with client.messages.stream(model="claude", max_tokens=100, messages=USER) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert "".join(pieces) == FAKE_TEXT
    assert len(pieces) > 1
    assert final.content[0].text == FAKE_TEXT
    assert final.stop_reason == "end_turn"
    assert final.usage.input_tokens == 12
    assert final.usage.output_tokens == 5
    assert_fake_tokens(only_call(gateway, developer))


async def test_anthropic_async(gateway: GatewayServer, developer: NewKey) -> None:
    client = anthropic.AsyncAnthropic(base_url=gateway.url, api_key=developer.secret, max_retries=0)
    async with client:
        message = await client.messages.create(model="chat", max_tokens=100, messages=USER)
        async with client.messages.stream(model="chat", max_tokens=100, messages=USER) as stream:
            pieces = [piece async for piece in stream.text_stream]
            final = await stream.get_final_message()
    assert message.content[0].text == FAKE_TEXT
    assert "".join(pieces) == FAKE_TEXT
    assert final.usage.output_tokens == 5
    rows = gateway.calls()
    assert len(rows) == 2
    for row in rows:
        assert row["api_key_id"] == developer.key.key_id
        assert_fake_tokens(row)


# Failures, as each SDK raises them


def test_openai_upstream_429(
    gateway: GatewayServer, developer: NewKey, fake_server: FakeServer
) -> None:
    fake_server.plan(
        PlannedReply(
            status=429,
            body=openai_error("Rate limit reached", error_type="rate_limit_error"),
            headers={"retry-after": "7"},
        )
    )
    with pytest.raises(openai.RateLimitError) as caught:
        client = openai_client(gateway, developer.secret)
        client.chat.completions.create(model="chat", messages=USER)
    assert caught.value.status_code == 429
    assert caught.value.response.headers["retry-after"] == "7"
    assert caught.value.code == "rate_limit_exceeded"
    row = only_call(gateway, developer)
    assert row["outcome"] == "error"
    assert row["error_kind"] == "rate_limited"


def test_anthropic_upstream_429(
    gateway: GatewayServer, developer: NewKey, fake_server: FakeServer
) -> None:
    fake_server.plan(
        PlannedReply(
            status=429,
            body=anthropic_error("rate_limit_error", "Rate limited"),
            headers={"retry-after": "7"},
        )
    )
    with pytest.raises(anthropic.RateLimitError) as caught:
        anthropic_client(gateway, developer.secret).messages.create(
            model="claude", max_tokens=100, messages=USER
        )
    assert caught.value.response.headers["retry-after"] == "7"
    assert caught.value.body["type"] == "error"
    assert caught.value.body["error"]["type"] == "rate_limit_error"
    assert only_call(gateway, developer)["error_kind"] == "rate_limited"


def test_openai_upstream_500(
    gateway: GatewayServer, developer: NewKey, fake_server: FakeServer
) -> None:
    fake_server.plan(PlannedReply(status=500, body=openai_error("boom", error_type="server_error")))
    with pytest.raises(openai.InternalServerError) as caught:
        client = openai_client(gateway, developer.secret)
        client.chat.completions.create(model="chat", messages=USER)
    assert caught.value.status_code == 502
    assert caught.value.code == "upstream_error"
    assert only_call(gateway, developer)["error_kind"] == "server_error"


def test_anthropic_upstream_500(
    gateway: GatewayServer, developer: NewKey, fake_server: FakeServer
) -> None:
    fake_server.plan(PlannedReply(status=500, body=anthropic_error("api_error", "boom")))
    with pytest.raises(anthropic.InternalServerError) as caught:
        anthropic_client(gateway, developer.secret).messages.create(
            model="claude", max_tokens=100, messages=USER
        )
    assert caught.value.status_code == 502
    assert caught.value.body["error"]["type"] == "api_error"


def test_anthropic_upstream_overloaded(
    gateway: GatewayServer, developer: NewKey, fake_server: FakeServer
) -> None:
    fake_server.plan(PlannedReply(status=529, body=anthropic_error("overloaded_error", "busy")))
    with pytest.raises(anthropic.APIStatusError) as caught:
        anthropic_client(gateway, developer.secret).messages.create(
            model="claude", max_tokens=100, messages=USER
        )
    assert caught.value.status_code == 503
    assert caught.value.body["error"]["type"] == "overloaded_error"


def test_openai_stream_broken_early(
    gateway: GatewayServer, developer: NewKey, fake_server: FakeServer
) -> None:
    # Only the role chunk comes before the connection ends, so no text reached the gateway.
    fake_server.plan(PlannedReply(break_after=1, break_mode="reset"))
    client = openai_client(gateway, developer.secret)
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="chat", messages=USER, stream=True)
    assert caught.value.status_code == 502
    row = only_call(gateway, developer)
    assert row["outcome"] == "error"
    assert row["error_kind"] == "connection"


def test_anthropic_stream_broken_early(
    gateway: GatewayServer, developer: NewKey, fake_server: FakeServer
) -> None:
    # message_start and ping, then the end of the body.
    fake_server.plan(PlannedReply(break_after=2))
    client = anthropic_client(gateway, developer.secret)
    with pytest.raises(anthropic.InternalServerError) as caught:
        with client.messages.stream(model="claude", max_tokens=100, messages=USER) as stream:
            list(stream.text_stream)
    assert caught.value.status_code == 502
    assert caught.value.body["type"] == "error"
    assert only_call(gateway, developer)["outcome"] == "error"


def test_openai_stream_error_event(
    gateway: GatewayServer, developer: NewKey, fake_server: FakeServer
) -> None:
    # Role chunk and three words, then an error event: the answer has begun with status 200.
    error = openai_error("lost the model", error_type="server_error")
    fake_server.plan(PlannedReply(break_after=4, error_event=error))
    client = openai_client(gateway, developer.secret)
    pieces = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in client.chat.completions.create(model="chat", messages=USER, stream=True):
            if chunk.choices:
                pieces.append(chunk.choices[0].delta.content or "")
    assert "".join(pieces) == "Hello from the "
    assert "lost the model" in caught.value.message
    assert caught.value.body["type"] == "server_error"
    row = only_call(gateway, developer)
    assert row["outcome"] == "error"


def test_anthropic_stream_error_event(
    gateway: GatewayServer, developer: NewKey, fake_server: FakeServer
) -> None:
    # message_start, ping, content_block_start and two deltas, then an error event.
    error = anthropic_error("overloaded_error", "Overloaded")
    fake_server.plan(PlannedReply(break_after=5, error_event=error))
    client = anthropic_client(gateway, developer.secret)
    pieces = []
    with pytest.raises(anthropic.APIStatusError) as caught:
        with client.messages.stream(model="claude", max_tokens=100, messages=USER) as stream:
            for piece in stream.text_stream:
                pieces.append(piece)
    assert "".join(pieces) == "Hello from "
    assert caught.value.body["type"] == "error"
    assert caught.value.body["error"]["type"] == "overloaded_error"
    assert only_call(gateway, developer)["error_kind"] == "overloaded"


def test_openai_unknown_key(gateway: GatewayServer) -> None:
    client = openai_client(gateway, "tk-000000000000-not-a-key")
    with pytest.raises(openai.AuthenticationError) as caught:
        client.chat.completions.create(model="chat", messages=USER)
    assert caught.value.code == "invalid_api_key"
    assert gateway.calls() == []


def test_anthropic_unknown_key(gateway: GatewayServer) -> None:
    client = anthropic_client(gateway, "tk-000000000000-not-a-key")
    with pytest.raises(anthropic.AuthenticationError) as caught:
        client.messages.create(model="claude", max_tokens=100, messages=USER)
    assert caught.value.body["error"]["type"] == "authentication_error"


def test_openai_viewer_forbidden(gateway: GatewayServer, fake_server: FakeServer) -> None:
    client = openai_client(gateway, gateway.key(Role.VIEWER))
    with pytest.raises(openai.PermissionDeniedError) as caught:
        client.chat.completions.create(model="chat", messages=USER)
    assert caught.value.code == "permission_denied"
    assert fake_server.requests == []


def test_anthropic_viewer_forbidden(gateway: GatewayServer) -> None:
    client = anthropic_client(gateway, gateway.key(Role.VIEWER))
    with pytest.raises(anthropic.PermissionDeniedError) as caught:
        client.messages.create(model="claude", max_tokens=100, messages=USER)
    assert caught.value.body["error"]["type"] == "permission_error"


def test_openai_route_forbidden(gateway: GatewayServer, fake_server: FakeServer) -> None:
    client = openai_client(gateway, gateway.key(Role.DEVELOPER, routes=("claude",)))
    with pytest.raises(openai.PermissionDeniedError) as caught:
        client.chat.completions.create(model="chat", messages=USER)
    assert caught.value.code == "model_not_allowed"
    assert fake_server.requests == []


def test_openai_unknown_model(gateway: GatewayServer, developer: NewKey) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client = openai_client(gateway, developer.secret)
        client.chat.completions.create(model="gpt-9", messages=USER)
    assert caught.value.code == "model_not_found"
    assert caught.value.param == "model"


def test_anthropic_unknown_model(gateway: GatewayServer, developer: NewKey) -> None:
    with pytest.raises(anthropic.NotFoundError) as caught:
        anthropic_client(gateway, developer.secret).messages.create(
            model="claude-9", max_tokens=100, messages=USER
        )
    assert caught.value.body["error"]["type"] == "not_found_error"


def test_openai_malformed_body(gateway: GatewayServer, developer: NewKey) -> None:
    client = openai_client(gateway, developer.secret)
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        client.chat.completions.create(model="chat", messages=[{"role": "wizard", "content": "hi"}])
    assert caught.value.param == "messages.0.role"
    assert gateway.calls() == []


def test_anthropic_malformed_body(gateway: GatewayServer, developer: NewKey) -> None:
    client = anthropic_client(gateway, developer.secret)
    with pytest.raises(anthropic.UnprocessableEntityError) as caught:
        client.messages.create(model="claude", max_tokens=0, messages=USER)
    assert "max_tokens" in caught.value.body["error"]["message"]


def test_openai_context_length(
    gateway: GatewayServer, developer: NewKey, fake_server: FakeServer
) -> None:
    error = openai_error(
        "This model's maximum context length is 128000 tokens.", code="context_length_exceeded"
    )
    fake_server.plan(PlannedReply(status=400, body=error))
    with pytest.raises(openai.BadRequestError) as caught:
        client = openai_client(gateway, developer.secret)
        client.chat.completions.create(model="chat", messages=USER)
    assert caught.value.code == "context_length_exceeded"
    assert only_call(gateway, developer)["error_kind"] == "context_length"


def test_anthropic_context_length(
    gateway: GatewayServer, developer: NewKey, fake_server: FakeServer
) -> None:
    error = anthropic_error(
        "invalid_request_error", "prompt is too long: 250000 tokens > 200000 maximum"
    )
    fake_server.plan(PlannedReply(status=400, body=error))
    with pytest.raises(anthropic.BadRequestError) as caught:
        anthropic_client(gateway, developer.secret).messages.create(
            model="claude", max_tokens=100, messages=USER
        )
    assert caught.value.body["error"]["type"] == "invalid_request_error"
    assert only_call(gateway, developer)["error_kind"] == "context_length"

