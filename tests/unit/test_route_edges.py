"""Edge cases of the router: early exits, bad arguments and failures outside the providers."""

from __future__ import annotations

import asyncio

import pytest

from trunkline.config import Settings
from trunkline.errors import CallError, ConfigError, ErrorKind
from trunkline.providers.base import parse_retry_after
from trunkline.providers.fake import FakeFailure, FakeReply, ScriptedModel
from trunkline.routing import Router
from trunkline.tracing import session, start_run
from unit.helpers import router_with

pytestmark = pytest.mark.looptime


def limited_router(model: ScriptedModel, **deployment: object) -> Router:
    settings = Settings.model_validate(
        {
            "deployments": {"a": {"provider": "fake", "model": "m", **deployment}},
            "routes": {"main": {"deployments": ["a"], "limit_wait_max_s": 0}},
            "default_route": "main",
            "prices": {"m": {"input_per_mtok": 1.0, "output_per_mtok": 1.0}},
        }
    )
    return Router(settings, providers={"a": model})


async def test_breaking_out_of_a_stream_frees_its_slot(exported) -> None:
    model = ScriptedModel(default=FakeReply("one two three", chunks=("one ", "two ", "three")))
    router = limited_router(model, max_concurrent=1)
    with start_run("r", run_id="r1", budget_usd=0.01):
        for _ in range(3):
            async for _delta in router.stream("hi", max_tokens=100):
                break
            # The dropped generator is closed by the event loop's finalizer hook.
            for _ in range(5):
                await asyncio.sleep(0)
        assert await router.ledger.spent("run:r1") < 0.0005
    assert [record.error_kind for record in exported.calls] == [ErrorKind.CANCELLED] * 3
    assert len(model.requests) == 3


async def test_concurrency_wait_names_the_concurrency_limit(exported) -> None:
    router = limited_router(ScriptedModel(default=FakeReply("x", latency_s=5)), max_concurrent=1)
    first = asyncio.create_task(router.complete("a"))
    await asyncio.sleep(0.1)
    with pytest.raises(CallError) as caught:
        await router.complete("b")
    assert caught.value.kind == ErrorKind.RATE_LIMITED
    assert "max_concurrent" in str(caught.value) or "concurrent" in str(caught.value)
    assert "rpm" not in str(caught.value)
    await first


@pytest.mark.parametrize("budget", [-1.0, 0.0, float("nan"), float("inf")])
def test_invalid_budgets_are_rejected_early(budget) -> None:
    with pytest.raises(ConfigError, match="budget_usd"):
        with start_run("r", run_id="r", budget_usd=budget):
            pass
    with pytest.raises(ConfigError, match="budget_usd"):
        with session("s", budget_usd=budget):
            pass


@pytest.mark.parametrize("max_tokens", [0, -5])
async def test_invalid_max_tokens_is_rejected(exported, max_tokens) -> None:
    model = ScriptedModel([FakeReply("never")])
    with pytest.raises(ConfigError, match="max_tokens"):
        await router_with(model).complete("hi", max_tokens=max_tokens)
    assert model.requests == []


async def test_non_string_tags_are_rejected_before_sending(exported) -> None:
    model = ScriptedModel([FakeReply("never")])
    with pytest.raises(ConfigError, match="tag values"):
        await router_with(model).complete("hi", tags={"team": 5})
    assert model.requests == []


async def test_invalid_json_schema_is_a_config_error(exported) -> None:
    with pytest.raises(ConfigError, match="not a valid JSON Schema"):
        await router_with(ScriptedModel()).complete("hi", output={"type": "nonsense"})


async def test_configuration_error_mid_route_keeps_the_record(exported, monkeypatch) -> None:
    monkeypatch.delenv("TRUNKLINE_MISSING_KEY", raising=False)
    settings = Settings.model_validate(
        {
            "deployments": {
                "a": {"provider": "fake", "model": "m"},
                "b": {"provider": "openai", "model": "gpt-4o-mini", "api_key_env": "TRUNKLINE_MISSING_KEY"},
            },
            "routes": {"main": {"deployments": ["a", "b"], "max_attempts": 2, "backoff_base_s": 0.001}},
            "default_route": "main",
        }
    )
    router = Router(settings, providers={"a": ScriptedModel([FakeFailure(500)] * 2)})
    with pytest.raises(ConfigError, match="TRUNKLINE_MISSING_KEY") as caught:
        await router.complete("hi")
    [record] = exported.calls
    assert record.error_kind == ErrorKind.CONFIGURATION
    assert len(record.attempts) == 2
    assert caught.value.record is record


async def test_unreachable_redis_is_a_clear_config_error(exported, closed_port_url) -> None:
    port = closed_port_url.rsplit(":", 1)[1]
    settings = Settings.model_validate(
        {
            "deployments": {"a": {"provider": "fake", "model": "m", "rpm": 10}},
            "routes": {"main": {"deployments": ["a"]}},
            "default_route": "main",
            "redis_url": f"redis://:secret@127.0.0.1:{port}/0",
        }
    )
    router = Router(settings, providers={"a": ScriptedModel([FakeReply("never")])})
    with pytest.raises(ConfigError) as caught:
        await router.complete("hi")
    message = str(caught.value)
    assert "TRUNKLINE_REDIS_URL" in message
    assert "secret" not in message
    assert exported.calls[0].error_kind == ErrorKind.CONFIGURATION


async def test_deadline_names_deployments_not_tried(exported) -> None:
    slow = ScriptedModel([FakeReply("late", latency_s=60)])
    other = ScriptedModel([FakeReply("never")])
    with pytest.raises(CallError) as caught:
        await router_with(slow, other, timeout_s=5, deadline_s=5, max_attempts=1).complete("hi")
    assert caught.value.kind == ErrorKind.TIMEOUT
    assert "deadline of 5s" in str(caught.value)
    hops = [(hop.deployment, hop.reason) for hop in exported.calls[0].fallbacks]
    assert hops == [("d0", ErrorKind.TIMEOUT), ("d1", "deadline")]
    assert other.requests == []


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "soon"])
def test_non_finite_retry_after_ignored(value) -> None:
    assert parse_retry_after({"retry-after": value}) is None
    assert parse_retry_after({"retry-after-ms": value}) is None
