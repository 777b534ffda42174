"""Retries, fallbacks and streams through the real openai and anthropic SDKs and a fake server."""

from __future__ import annotations

import pytest

from fakeserver import FakeServer, PlannedReply, anthropic_error, openai_error
from trunkline.config import Settings
from trunkline.errors import CallError, ErrorKind
from trunkline.routing import Router


@pytest.fixture
def keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_OPENAI_KEY", "sk-test")
    monkeypatch.setenv("FAKE_ANTHROPIC_KEY", "sk-ant-test")


def two_provider_router(server: FakeServer, first: str, **route: object) -> Router:
    deployments = {
        "gpt": {
            "provider": "openai",
            "model": "gpt-4o-mini",
            "base_url": server.openai_base_url,
            "api_key_env": "FAKE_OPENAI_KEY",
            "context_window": 128000,
        },
        "claude": {
            "provider": "anthropic",
            "model": "claude-sonnet-4-5",
            "base_url": server.base_url,
            "api_key_env": "FAKE_ANTHROPIC_KEY",
            "context_window": 200000,
        },
    }
    order = ["gpt", "claude"] if first == "gpt" else ["claude", "gpt"]
    settings = Settings.model_validate(
        {
            "deployments": deployments,
            "routes": {"main": {"deployments": order, "backoff_base_s": 0.001, **route}},
            "default_route": "main",
        }
    )
    return Router(settings)


async def test_retry_after_headers_on_every_attempt(fake_server: FakeServer, keys) -> None:
    fake_server.plan(
        PlannedReply(status=429, body=openai_error("slow down", code="rate_limit_exceeded"),
                     headers={"retry-after-ms": "50"}),
        PlannedReply(status=503, body=openai_error("busy", error_type="server_error"),
                     headers={"retry-after": "0"}),
    )
    router = two_provider_router(fake_server, "gpt")
    result = await router.complete("hi")
    first, second, third = result.record.attempts
    assert (first.status_code, first.error_kind, first.wait_s) == (429, ErrorKind.RATE_LIMITED, 0.05)
    assert (second.status_code, second.error_kind, second.wait_s) == (503, ErrorKind.OVERLOADED, 0.0)
    assert third.outcome == "ok"
    assert third.deployment == "gpt"
    await router.aclose()


async def test_quota_and_auth_fall_back(fake_server: FakeServer, keys) -> None:
    fake_server.plan(
        PlannedReply(status=429, body=openai_error("quota", error_type="insufficient_quota",
                                                    code="insufficient_quota")),
    )
    router = two_provider_router(fake_server, "gpt")
    result = await router.complete("hi")
    assert [hop.reason for hop in result.record.fallbacks] == [ErrorKind.QUOTA_EXCEEDED]
    assert result.record.deployment == "claude"
    assert len(fake_server.requests) == 2

    fake_server.plan(PlannedReply(status=401, body=anthropic_error("authentication_error", "bad key")))
    reverse = two_provider_router(fake_server, "claude")
    result = await reverse.complete("hi")
    assert result.record.fallbacks[0].reason == ErrorKind.AUTH
    assert result.record.attempts[0].status_code == 401
    await router.aclose()
    await reverse.aclose()


async def test_overloaded_anthropic_falls_back_to_openai(fake_server: FakeServer, keys) -> None:
    overloaded = PlannedReply(status=529, body=anthropic_error("overloaded_error", "Overloaded"))
    fake_server.plan(overloaded, overloaded)
    router = two_provider_router(fake_server, "claude", max_attempts=2)
    result = await router.complete("hi")
    assert result.record.deployment == "gpt"
    assert [attempt.status_code for attempt in result.record.attempts] == [529, 529, None]
    assert result.record.fallbacks[0].reason == ErrorKind.OVERLOADED
    await router.aclose()


async def test_context_length_goes_to_the_larger_window(fake_server: FakeServer, keys) -> None:
    message = (
        "This model's maximum context length is 128000 tokens. However, your messages "
        "resulted in 130000 tokens. Please reduce the length of the messages."
    )
    fake_server.plan(
        PlannedReply(status=400, body=openai_error(message, code="context_length_exceeded"))
    )
    router = two_provider_router(fake_server, "gpt", max_attempts=3)
    result = await router.complete("a very long prompt")
    assert result.record.fallbacks[0].reason == ErrorKind.CONTEXT_LENGTH
    assert result.record.deployment == "claude"
    assert len(fake_server.requests) == 2
    await router.aclose()


@pytest.mark.parametrize("first", ["gpt", "claude"])
async def test_stream_records_usage_and_first_token(fake_server: FakeServer, keys, first) -> None:
    router = two_provider_router(fake_server, first)
    stream = router.stream("hi")
    text = "".join([delta async for delta in stream])
    record = stream.result.record
    assert record.outcome == "ok"
    assert record.output_text == text
    assert text
    assert record.usage.input_tokens > 0
    assert not record.usage.estimated
    assert record.time_to_first_token_ms is not None
    await router.aclose()


@pytest.mark.parametrize("mode", ["close", "reset"])
async def test_openai_stream_broken_off(fake_server: FakeServer, keys, mode) -> None:
    fake_server.plan(PlannedReply(status=200, break_after=2, break_mode=mode))
    router = two_provider_router(fake_server, "gpt")
    stream = router.stream("hi")
    received = []
    with pytest.raises(CallError) as caught:
        async for delta in stream:
            received.append(delta)
    record = caught.value.record
    assert caught.value.kind == ErrorKind.CONNECTION
    assert record.output_text == "".join(received)
    assert record.deployment == "gpt"
    await router.aclose()


async def test_anthropic_error_event_mid_stream(fake_server: FakeServer, keys) -> None:
    # Events 1 to 3 are message_start, ping and content_block_start; the 4th is the first delta.
    overloaded = anthropic_error("overloaded_error", "Overloaded")
    fake_server.plan(PlannedReply(status=200, break_after=4, error_event=overloaded))
    router = two_provider_router(fake_server, "claude")
    received = []
    with pytest.raises(CallError) as caught:
        async for delta in router.stream("hi"):
            received.append(delta)
    assert caught.value.kind == ErrorKind.OVERLOADED
    assert caught.value.record.error_kind == ErrorKind.OVERLOADED
    assert caught.value.record.output_text == "".join(received)
    assert received
    await router.aclose()


async def test_error_event_before_any_text_is_retried(fake_server: FakeServer, keys) -> None:
    overloaded = anthropic_error("overloaded_error", "Overloaded")
    fake_server.plan(PlannedReply(status=200, break_after=3, error_event=overloaded))
    router = two_provider_router(fake_server, "claude")
    stream = router.stream("hi")
    text = "".join([delta async for delta in stream])
    attempts = stream.result.record.attempts
    assert text
    assert [attempt.error_kind for attempt in attempts] == [ErrorKind.OVERLOADED, None]
    await router.aclose()


async def test_silent_stream_times_out(fake_server: FakeServer, keys) -> None:
    fake_server.plan(PlannedReply(status=200, chunk_delay_s=2.0))
    router = two_provider_router(fake_server, "gpt", stream_idle_timeout_s=0.3)
    with pytest.raises(CallError) as caught:
        async for _ in router.stream("hi"):
            pass
    assert caught.value.kind == ErrorKind.TIMEOUT
    assert "sent nothing" in str(caught.value)
    await router.aclose()
