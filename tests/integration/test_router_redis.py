"""Two routers, as two processes would, sharing rate limits and budgets through a real Redis."""

from __future__ import annotations

import uuid

from trunkline.config import Settings
from trunkline.errors import BudgetExceeded, CallError, ErrorKind
from trunkline.providers.fake import FakeReply, ScriptedModel
from trunkline.resilience.budget import RedisBudgetLedger
from trunkline.resilience.redis_limiter import RedisRateLimiter
from trunkline.routing import Router
from trunkline.tracing import start_run


def shared_settings(deployment: str, **options: object) -> Settings:
    return Settings.model_validate(
        {
            "deployments": {deployment: {"provider": "fake", "model": "m", **options}},
            "routes": {"main": {"deployments": [deployment], "limit_wait_max_s": 0}},
            "default_route": "main",
            "prices": {"m": {"input_per_mtok": 10.0, "output_per_mtok": 30.0}},
        }
    )


async def test_routers_share_one_rpm_through_the_redis_url(redis_url, monkeypatch) -> None:
    monkeypatch.setenv("TRUNKLINE_REDIS_URL", redis_url)
    # A deployment name of its own keeps this test's window apart from others'.
    name = f"shared-{uuid.uuid4().hex[:8]}"
    models = [ScriptedModel(default=FakeReply("ok")) for _ in range(2)]
    routers = [Router(shared_settings(name, rpm=3), providers={name: model}) for model in models]
    assert all(isinstance(router.limiter, RedisRateLimiter) for router in routers)
    sent = 0
    for index in range(6):
        try:
            await routers[index % 2].complete("hi")
            sent += 1
        except CallError as error:
            assert error.kind == ErrorKind.RATE_LIMITED
    assert sent == 3
    assert sum(len(model.requests) for model in models) == 3
    for router in routers:
        await router.aclose()


async def test_routers_share_one_run_budget(redis_url, key_prefix) -> None:
    name = "budgeted"
    models = [ScriptedModel(default=FakeReply("ok", input_tokens=100, output_tokens=50)) for _ in range(2)]
    routers = [
        Router(
            shared_settings(name),
            providers={name: model},
            ledger=RedisBudgetLedger(redis_url, prefix=key_prefix),
        )
        for model in models
    ]
    # Each call costs $0.0025 and reserves about $0.0031 first.
    rejected = 0
    with start_run("shared", run_id=f"run-{uuid.uuid4().hex[:8]}", budget_usd=0.01):
        for index in range(6):
            try:
                await routers[index % 2].complete("hi", max_tokens=100)
            except BudgetExceeded:
                rejected += 1
    assert sum(len(model.requests) for model in models) == 3
    assert rejected == 3
    for router in routers:
        await router.aclose()
