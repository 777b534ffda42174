"""Retries, Retry-After, timeouts and deadlines, on a virtual clock (looptime)."""

from __future__ import annotations

import asyncio
import email.utils
import time

import pytest

from trunkline.errors import CallError, ErrorKind, ProviderError
from trunkline.providers.fake import FakeFailure, FakeReply, ScriptedModel
from unit.helpers import router_with

pytestmark = pytest.mark.looptime


def now() -> float:
    return asyncio.get_running_loop().time()


async def test_retry_after_is_honoured_on_every_attempt(exported) -> None:
    model = ScriptedModel(
        [
            FakeFailure(429, headers={"retry-after": "7"}),
            FakeFailure(503, headers={"retry-after-ms": "2500"}),
            FakeReply("ok"),
        ]
    )
    started = now()
    result = await router_with(model, max_attempts=3).complete("hi")
    first, second, third = result.record.attempts
    assert (first.wait_s, first.wait_reason) == (7.0, "retry-after")
    assert (second.wait_s, second.wait_reason) == (2.5, "retry-after")
    assert third.outcome == "ok"
    assert now() - started == pytest.approx(9.5, abs=0.01)


async def test_retry_after_as_http_date(exported) -> None:
    moment = email.utils.formatdate(time.time() + 30, usegmt=True)
    model = ScriptedModel([FakeFailure(429, headers={"Retry-After": moment}), FakeReply("ok")])
    result = await router_with(model).complete("hi")
    assert result.record.attempts[0].wait_s == pytest.approx(30, abs=1.5)


async def test_retry_after_over_cap_falls_back(exported) -> None:
    first = ScriptedModel([FakeFailure(429, headers={"retry-after": "300"})])
    second = ScriptedModel([FakeReply("elsewhere")])
    started = now()
    result = await router_with(first, second, retry_after_max_s=60).complete("hi")
    assert result.text == "elsewhere"
    attempt = result.record.attempts[0]
    assert attempt.wait_s is None
    assert "exceeds the cap" in attempt.wait_reason
    assert result.record.fallbacks[0].reason == ErrorKind.RATE_LIMITED
    assert now() - started < 1


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (400, "missing field messages", ErrorKind.BAD_REQUEST),
        (401, "invalid api key", ErrorKind.AUTH),
        (404, "no such model", ErrorKind.NOT_FOUND),
        (400, '{"error": {"code": "context_length_exceeded"}}', ErrorKind.CONTEXT_LENGTH),
        (400, '{"error": {"code": "content_filter"}}', ErrorKind.CONTENT_FILTER),
    ],
)
async def test_requests_that_cannot_succeed_are_sent_once(exported, status, body, kind) -> None:
    model = ScriptedModel([FakeFailure(status, body=body), FakeReply("never")])
    with pytest.raises(CallError) as caught:
        await router_with(model, max_attempts=5).complete("hi")
    assert caught.value.kind == kind
    assert len(model.requests) == 1
    assert exported.calls[0].attempts[0].wait_reason == f"{kind.value} is not retryable"


async def test_backoff_is_capped_and_attempts_bounded(exported) -> None:
    model = ScriptedModel([FakeFailure(500)] * 4)
    with pytest.raises(ProviderError):
        await router_with(model, max_attempts=4, backoff_base_s=1.0, backoff_max_s=2.0).complete("hi")
    waits = [attempt.wait_s for attempt in exported.calls[0].attempts]
    assert len(waits) == 4
    assert waits[-1] is None
    assert all(0.0 <= wait <= 2.0 for wait in waits[:-1])
    assert exported.calls[0].attempts[-1].wait_reason == "attempts spent (4)"


async def test_attempt_timeout_on_virtual_clock(exported) -> None:
    model = ScriptedModel([FakeReply("slow", latency_s=600), FakeReply("fast")])
    started = now()
    result = await router_with(model, timeout_s=5).complete("hi")
    assert result.record.attempts[0].error_kind == ErrorKind.TIMEOUT
    assert result.text == "fast"
    assert now() - started < 6


async def test_deadline_bounds_the_whole_call(exported) -> None:
    model = ScriptedModel(default=FakeReply("slow", latency_s=600))
    started = now()
    with pytest.raises(CallError) as caught:
        await router_with(model, timeout_s=3, deadline_s=5, max_attempts=10).complete("hi")
    elapsed = now() - started
    assert caught.value.kind == ErrorKind.TIMEOUT
    assert elapsed == pytest.approx(5, abs=0.1)
    attempts = exported.calls[0].attempts
    assert [attempt.error_kind for attempt in attempts] == [ErrorKind.TIMEOUT] * 2


async def test_retry_never_starts_past_the_deadline(exported) -> None:
    model = ScriptedModel(
        [FakeFailure(503, headers={"retry-after": "4"}, latency_s=2), FakeReply("too late")]
    )
    with pytest.raises(ProviderError):
        await router_with(model, deadline_s=5).complete("hi")
    assert len(model.requests) == 1
    assert "deadline" in exported.calls[0].attempts[0].wait_reason


async def test_fallback_not_started_past_the_deadline(exported) -> None:
    first = ScriptedModel([FakeFailure(500, latency_s=6)])
    second = ScriptedModel([FakeReply("never")])
    with pytest.raises(CallError) as caught:
        await router_with(first, second, deadline_s=5, timeout_s=10, max_attempts=1).complete("hi")
    assert caught.value.kind == ErrorKind.TIMEOUT
    assert second.requests == []
