"""Streaming from the fake models, with the waits on looptime's virtual clock."""

from __future__ import annotations

import asyncio

import pytest

from trunkline.errors import ConfigError, ErrorKind, ProviderError
from trunkline.providers.fake import (
    FakeFailure,
    FakeReply,
    ScriptedModel,
    SimulatedModel,
    fake_from_options,
)
from trunkline.types.calls import ModelRequest, ModelResponse
from trunkline.types.messages import Message

TEXT = "The Louvre is in Paris."


def user_request() -> ModelRequest:
    return ModelRequest(model="fake-model", messages=(Message.user("Where is the Louvre?"),))


async def stream_all(model: ScriptedModel | SimulatedModel) -> list[str | ModelResponse]:
    return [item async for item in model.stream(user_request())]


async def stream_until_error(
    model: ScriptedModel | SimulatedModel,
) -> tuple[list[str | ModelResponse], ProviderError]:
    received: list[str | ModelResponse] = []
    with pytest.raises(ProviderError) as caught:
        async for item in model.stream(user_request()):
            received.append(item)
    return received, caught.value


# Chunks


def test_default_chunks_split_words() -> None:
    reply = FakeReply(text="The Louvre  is\nin Paris.")

    assert reply.stream_chunks() == ("The ", "Louvre  ", "is\n", "in ", "Paris.")


def test_default_chunks_empty_text() -> None:
    assert FakeReply(text="").stream_chunks() == ()


def test_chunks_must_join_to_text() -> None:
    with pytest.raises(ConfigError, match="do not join"):
        FakeReply(text=TEXT, chunks=("The Louvre", " is in Rome."))


@pytest.mark.parametrize("field", ["break_after", "stall_after"])
def test_chunk_count_limits(field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        FakeReply(text="one two", **{field: 3})


async def test_stream_yields_chunks_then_response() -> None:
    model = ScriptedModel([FakeReply(text=TEXT, input_tokens=9, output_tokens=6)])

    *deltas, final = await stream_all(model)

    assert deltas == ["The ", "Louvre ", "is ", "in ", "Paris."]
    assert isinstance(final, ModelResponse)
    assert final.text == TEXT
    assert final.usage.input_tokens == 9
    assert final.usage.output_tokens == 6
    assert final.usage.estimated is False
    assert model.requests == [user_request()]


async def test_stream_explicit_chunks() -> None:
    model = ScriptedModel([FakeReply(text=TEXT, chunks=("The Louvre is", " in Paris."))])

    items = await stream_all(model)

    assert items[:-1] == ["The Louvre is", " in Paris."]


async def test_stream_empty_text() -> None:
    model = ScriptedModel([FakeReply(text="", finish_reason="length")])

    [final] = await stream_all(model)

    assert isinstance(final, ModelResponse)
    assert final.finish_reason == "length"


async def test_complete_ignores_stream_fields() -> None:
    model = ScriptedModel([FakeReply(text=TEXT, break_after=1, stall_after=2)])

    response = await model.complete(user_request())

    assert response.text == TEXT


async def test_script_shared_with_complete() -> None:
    model = ScriptedModel([FakeReply(text="first"), FakeReply(text="second reply")])

    first = await model.complete(user_request())
    items = await stream_all(model)

    assert first.text == "first"
    assert items[:-1] == ["second ", "reply"]
    assert len(model.requests) == 2


async def test_stream_script_ran_out() -> None:
    model = ScriptedModel([])

    with pytest.raises(ConfigError, match="ran out"):
        await stream_all(model)


# Failures


async def test_failure_before_first_chunk() -> None:
    model = ScriptedModel([FakeFailure(status=429, headers={"retry-after": "2"})])

    received, error = await stream_until_error(model)

    assert received == []
    assert error.kind is ErrorKind.RATE_LIMITED
    assert error.retry_after_s == pytest.approx(2.0)


async def test_break_after_chunks() -> None:
    model = ScriptedModel([FakeReply(text=TEXT, break_after=2)])

    received, error = await stream_until_error(model)

    assert received == ["The ", "Louvre "]
    assert error.kind is ErrorKind.CONNECTION
    assert error.provider == "fake"


async def test_break_with_given_kind() -> None:
    model = ScriptedModel([FakeReply(text=TEXT, break_after=0, break_kind=ErrorKind.OVERLOADED)])

    received, error = await stream_until_error(model)

    assert received == []
    assert error.kind is ErrorKind.OVERLOADED


async def test_break_after_last_chunk() -> None:
    model = ScriptedModel([FakeReply(text=TEXT, break_after=5)])

    received, _ = await stream_until_error(model)

    # Every chunk arrives, but the final response does not.
    assert received == ["The ", "Louvre ", "is ", "in ", "Paris."]


# Waits on the virtual clock


@pytest.mark.looptime
async def test_latency_and_chunk_delay() -> None:
    loop = asyncio.get_running_loop()
    model = ScriptedModel([FakeReply(text=TEXT, latency_s=2.0, chunk_delay_s=0.5)])
    arrivals: list[float] = []

    async for _ in model.stream(user_request()):
        arrivals.append(loop.time())

    # The first chunk comes after the latency, the next four 0.5 s apart, then the response.
    assert arrivals == pytest.approx([2.0, 2.5, 3.0, 3.5, 4.0, 4.0])


@pytest.mark.looptime
async def test_stall_until_timeout() -> None:
    loop = asyncio.get_running_loop()
    model = ScriptedModel([FakeReply(text=TEXT, stall_after=3)])
    received: list[str | ModelResponse] = []

    async def consume() -> None:
        async for item in model.stream(user_request()):
            received.append(item)

    with pytest.raises(TimeoutError):
        await asyncio.wait_for(consume(), timeout=30.0)

    assert received == ["The ", "Louvre ", "is "]
    assert loop.time() == pytest.approx(30.0)


@pytest.mark.looptime
async def test_simulated_model_streams() -> None:
    loop = asyncio.get_running_loop()
    model = SimulatedModel(text="one two three", latency_ms=100.0, chunk_delay_ms=20.0)

    *deltas, final = await stream_all(model)

    assert deltas == ["one ", "two ", "three"]
    assert isinstance(final, ModelResponse)
    assert final.usage.output_tokens == 16
    assert loop.time() == pytest.approx(0.14)


async def test_simulated_model_stream_failure() -> None:
    model = SimulatedModel(error_rate=1.0, error_status=503)

    received, error = await stream_until_error(model)

    assert received == []
    assert error.kind is ErrorKind.OVERLOADED
    assert error.status_code == 503


def test_simulated_negative_chunk_delay() -> None:
    with pytest.raises(ConfigError, match="chunk_delay_ms"):
        SimulatedModel(chunk_delay_ms=-1.0)


@pytest.mark.looptime
async def test_options_set_chunk_delay() -> None:
    loop = asyncio.get_running_loop()
    model = fake_from_options("sim", {"mode": "simulated", "text": "a b", "chunk_delay_ms": 250})

    items = [item async for item in model.stream(user_request())]

    assert items[:-1] == ["a ", "b"]
    assert loop.time() == pytest.approx(0.25)
