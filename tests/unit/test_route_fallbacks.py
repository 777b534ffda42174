"""Fallback rules and circuit breakers, on a virtual clock (looptime)."""

from __future__ import annotations

import asyncio

import pytest

from trunkline.config import Settings
from trunkline.errors import AllDeploymentsFailed, CallError, ConfigError, ErrorKind
from trunkline.providers.fake import FakeFailure, FakeReply, ScriptedModel
from trunkline.resilience.breaker import BreakerState
from trunkline.routing import Router
from unit.helpers import router_with

pytestmark = pytest.mark.looptime

CONTEXT_BODY = '{"error": {"code": "context_length_exceeded", "message": "too long"}}'


def windowed_router(windows: dict[str, int | None], models: dict[str, ScriptedModel], **route) -> Router:
    settings = Settings.model_validate(
        {
            "deployments": {
                name: {"provider": "fake", "model": name, "context_window": window}
                for name, window in windows.items()
            },
            "routes": {"main": {"deployments": list(windows), "max_attempts": 1, **route}},
            "default_route": "main",
            "prices": {name: {"input_per_mtok": 1, "output_per_mtok": 1} for name in windows},
        }
    )
    return Router(settings, providers=models)


async def test_context_length_falls_back_only_to_larger_windows(exported) -> None:
    models = {
        "small": ScriptedModel([FakeFailure(400, body=CONTEXT_BODY)]),
        "same": ScriptedModel([FakeReply("never")]),
        "unknown": ScriptedModel([FakeReply("never")]),
        "large": ScriptedModel([FakeReply("fits")]),
    }
    router = windowed_router({"small": 8000, "same": 8000, "unknown": None, "large": 128000}, models)
    result = await router.complete("a long prompt")
    assert result.text == "fits"
    hops = [(hop.deployment, hop.reason) for hop in result.record.fallbacks]
    assert hops == [
        ("small", ErrorKind.CONTEXT_LENGTH),
        ("same", "context_window"),
        ("unknown", "context_window"),
    ]
    assert models["same"].requests == []
    assert models["unknown"].requests == []


async def test_content_filter_falls_back_only_to_allowed(exported) -> None:
    models = {
        "strict": ScriptedModel([FakeFailure(400, body='{"error": {"code": "content_filter"}}')]),
        "other": ScriptedModel([FakeReply("never")]),
        "lenient": ScriptedModel([FakeReply("answered")]),
    }
    router = windowed_router(
        {"strict": None, "other": None, "lenient": None},
        models,
        content_filter_fallbacks=["lenient"],
    )
    result = await router.complete("hi")
    assert result.text == "answered"
    assert [hop.reason for hop in result.record.fallbacks] == [
        ErrorKind.CONTENT_FILTER,
        "content_filter_not_allowed",
    ]
    assert models["other"].requests == []


async def test_content_filter_with_no_allowed_fallback_fails(exported) -> None:
    models = {
        "strict": ScriptedModel([FakeFailure(400, body='{"error": {"code": "content_filter"}}')]),
        "other": ScriptedModel([FakeReply("never")]),
    }
    with pytest.raises(CallError) as caught:
        await windowed_router({"strict": None, "other": None}, models).complete("hi")
    assert caught.value.kind == ErrorKind.CONTENT_FILTER
    assert models["other"].requests == []


async def test_fallback_path_records_each_reason(exported) -> None:
    first = ScriptedModel([FakeFailure(503)])
    second = ScriptedModel([FakeFailure(None, kind=ErrorKind.CONNECTION)])
    third = ScriptedModel([FakeReply("third")])
    result = await router_with(first, second, third, max_attempts=1).complete("hi")
    assert [(hop.deployment, hop.reason) for hop in result.record.fallbacks] == [
        ("d0", ErrorKind.OVERLOADED),
        ("d1", ErrorKind.CONNECTION),
    ]
    assert all(hop.detail for hop in result.record.fallbacks)


async def test_breaker_opens_skips_then_probes(exported) -> None:
    flaky = ScriptedModel([FakeFailure(500), FakeFailure(500)])
    backup = ScriptedModel(default=FakeReply("backup"))
    router = router_with(flaky, backup, max_attempts=1, breaker_failures=2, breaker_cooldown_s=30)
    for _ in range(2):
        assert (await router.complete("hi")).text == "backup"
    [status] = [status for status in router.health() if status.deployment == "d0"]
    assert status.state == BreakerState.OPEN
    assert status.consecutive_failures == 2

    skipped = await router.complete("hi")
    assert skipped.record.fallbacks[0].reason == "circuit_open"
    assert len(flaky.requests) == 2

    await asyncio.sleep(31)
    flaky.add(FakeReply("recovered"))
    probe = await router.complete("hi")
    assert probe.text == "recovered"
    assert router.health()[0].state == BreakerState.CLOSED


async def test_failed_probe_reopens_the_breaker(exported) -> None:
    flaky = ScriptedModel([FakeFailure(500)] * 3)
    backup = ScriptedModel(default=FakeReply("backup"))
    router = router_with(flaky, backup, max_attempts=1, breaker_failures=2, breaker_cooldown_s=30)
    await router.complete("hi")
    await router.complete("hi")
    await asyncio.sleep(31)
    await router.complete("hi")
    assert len(flaky.requests) == 3
    assert router.health()[0].state == BreakerState.OPEN
    await router.complete("hi")
    assert len(flaky.requests) == 3


async def test_only_one_probe_at_a_time(exported) -> None:
    flaky = ScriptedModel([FakeFailure(500), FakeReply("probe", latency_s=5)])
    backup = ScriptedModel(default=FakeReply("backup"))
    router = router_with(flaky, backup, max_attempts=1, breaker_failures=1, breaker_cooldown_s=10)
    await router.complete("hi")
    await asyncio.sleep(11)
    results = await asyncio.gather(*(router.complete("hi") for _ in range(3)))
    assert sorted(result.text for result in results) == ["backup", "backup", "probe"]
    assert len(flaky.requests) == 2


async def test_bad_requests_do_not_open_the_breaker(exported) -> None:
    model = ScriptedModel([FakeFailure(400)] * 3 + [FakeReply("fine")])
    router = router_with(model, breaker_failures=2)
    for _ in range(3):
        with pytest.raises(CallError):
            await router.complete("hi")
    assert (await router.complete("hi")).text == "fine"


async def test_every_deployment_skipped_says_why(exported) -> None:
    flaky = ScriptedModel([FakeFailure(500)])
    router = router_with(flaky, max_attempts=1, breaker_failures=1, breaker_cooldown_s=60)
    with pytest.raises(CallError):
        await router.complete("hi")
    with pytest.raises(AllDeploymentsFailed) as caught:
        await router.complete("hi")
    assert "circuit open" in str(caught.value)
    assert caught.value.kind == ErrorKind.OVERLOADED


async def test_probe_released_without_attempt(exported) -> None:
    flaky = ScriptedModel([FakeFailure(500)])
    backup = ScriptedModel(default=FakeReply("backup"))
    router = router_with(flaky, backup, max_attempts=1, breaker_failures=1, breaker_cooldown_s=10)
    await router.complete("hi")
    await asyncio.sleep(11)
    # The script has run out, so the probe call stops with a ConfigError before any attempt.
    with pytest.raises(ConfigError):
        await router.complete("hi")
    flaky.add(FakeReply("recovered"))
    assert (await router.complete("hi")).text == "recovered"


async def test_fallbacks_taken_counts_moves_only(exported) -> None:
    failing = ScriptedModel(default=FakeFailure(401))
    with pytest.raises(CallError):
        await router_with(failing, max_attempts=1).complete("hi")
    lone = exported.calls[-1]
    # The only deployment was left, but there was nowhere to go.
    assert len(lone.fallbacks) == 1
    assert lone.fallbacks_taken == 0
    router = router_with(ScriptedModel(default=FakeFailure(401)), ScriptedModel(default=FakeReply("ok")))
    moved = (await router.complete("hi")).record
    assert moved.fallbacks_taken == 1
