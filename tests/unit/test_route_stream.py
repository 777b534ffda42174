"""Streamed calls through the router: deltas, retries before the first one, breaks and stalls."""

from __future__ import annotations

import asyncio

import pytest

from trunkline.errors import CallError, ErrorKind
from trunkline.providers.fake import FakeFailure, FakeReply, ScriptedModel
from unit.helpers import router_with

pytestmark = pytest.mark.looptime


async def collect(stream) -> list[str]:  # noqa: ANN001
    return [delta async for delta in stream]


async def test_deltas_usage_and_time_to_first_token(exported) -> None:
    model = ScriptedModel(
        [FakeReply("Hello there", chunks=("Hel", "lo ", "there"), latency_s=2, chunk_delay_s=1,
                   input_tokens=10, output_tokens=3)]
    )
    stream = router_with(model).stream("hi")
    assert await collect(stream) == ["Hel", "lo ", "there"]
    record = stream.result.record
    assert record.outcome == "ok"
    assert record.output_text == "Hello there"
    assert (record.usage.input_tokens, record.usage.output_tokens) == (10, 3)
    assert record.cost.total_usd == pytest.approx((10 + 6) / 1_000_000)
    assert record.time_to_first_token_ms >= 0
    assert exported.calls == [record]
    assert exported.spans[-1].attributes["stream"] is True


async def test_failures_before_first_delta_retried(exported) -> None:
    first = ScriptedModel([FakeFailure(503), FakeFailure(503)])
    second = ScriptedModel([FakeReply("ok", chunks=("o", "k"))])
    stream = router_with(first, second, max_attempts=2).stream("hi")
    assert "".join(await collect(stream)) == "ok"
    record = stream.result.record
    assert record.deployment == "d1"
    assert [attempt.outcome for attempt in record.attempts] == ["error", "error", "ok"]
    assert record.fallbacks[0].reason == ErrorKind.OVERLOADED


async def test_break_after_first_delta_keeps_partial_text(exported) -> None:
    first = ScriptedModel([FakeReply("abcdef", chunks=("ab", "cd", "ef"), break_after=2)])
    second = ScriptedModel([FakeReply("never")])
    stream = router_with(first, second).stream("hi")
    received: list[str] = []
    with pytest.raises(CallError) as caught:
        async for delta in stream:
            received.append(delta)
    assert received == ["ab", "cd"]
    assert caught.value.kind == ErrorKind.CONNECTION
    record = exported.calls[0]
    assert record.outcome == "error"
    assert record.output_text == "abcd"
    assert record.error_kind == ErrorKind.CONNECTION
    assert record.usage.estimated
    assert second.requests == []
    assert caught.value.record is record


async def test_silent_stream_hits_the_idle_timeout(exported) -> None:
    model = ScriptedModel([FakeReply("abc", chunks=("a", "b", "c"), stall_after=1)])
    started = asyncio.get_running_loop().time()
    stream = router_with(model, stream_idle_timeout_s=7).stream("hi")
    with pytest.raises(CallError) as caught:
        await collect(stream)
    assert caught.value.kind == ErrorKind.TIMEOUT
    assert asyncio.get_running_loop().time() - started == pytest.approx(7, abs=0.1)
    assert exported.calls[0].output_text == "a"


async def test_deadline_applies_while_streaming(exported) -> None:
    model = ScriptedModel([FakeReply("abc", chunks=("a", "b", "c"), chunk_delay_s=4)])
    stream = router_with(model, deadline_s=6, stream_idle_timeout_s=30).stream("hi")
    with pytest.raises(CallError) as caught:
        await collect(stream)
    assert caught.value.kind == ErrorKind.TIMEOUT
    # Chunks arrive at 0 s and 4 s; the third, due at 8 s, is past the deadline.
    assert exported.calls[0].output_text == "ab"


async def test_leaving_early_records_a_cancelled_call(exported) -> None:
    model = ScriptedModel([FakeReply("abc", chunks=("a", "b", "c"))])
    async with router_with(model).stream("hi") as stream:
        async for delta in stream:
            assert delta == "a"
            break
    record = exported.calls[0]
    assert record.error_kind == ErrorKind.CANCELLED
    assert record.output_text == "a"
    assert record.attempts[-1].error_kind == ErrorKind.CANCELLED


async def test_mid_stream_failures_count_against_the_breaker(exported) -> None:
    broken = ScriptedModel([FakeReply("ab", chunks=("a", "b"), break_after=1, break_kind=ErrorKind.SERVER_ERROR)] * 2)
    backup = ScriptedModel(default=FakeReply("fine"))
    router = router_with(broken, backup, breaker_failures=2)
    for _ in range(2):
        with pytest.raises(CallError):
            await collect(router.stream("hi"))
    stream = router.stream("hi")
    assert "".join(await collect(stream)) == "fine"
    assert stream.result.record.fallbacks[0].reason == "circuit_open"
