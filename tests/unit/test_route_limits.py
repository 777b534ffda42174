"""Rate limits, budgets and downgrades through the router, on a virtual clock (looptime)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from trunkline.config import Settings
from trunkline.errors import BudgetExceeded, CallError, ErrorKind
from trunkline.providers.fake import FakeReply, ScriptedModel
from trunkline.routing import Router
from trunkline.store.database import open_store
from trunkline.store.experiments import record_experiment
from trunkline.tracing import session, start_run
from trunkline.types.scores import TaskScore

pytestmark = pytest.mark.looptime

PRICES = {"big": (10.0, 30.0), "mid": (1.0, 3.0), "small": (0.1, 0.3)}


def make_router(
    deployments: dict[str, dict], route: dict, *, models=None, budgets=None, scores=None
) -> tuple[Router, dict[str, ScriptedModel]]:
    models = models or {
        name: ScriptedModel(default=FakeReply(f"from {name}", input_tokens=100, output_tokens=50))
        for name in deployments
    }
    settings = Settings.model_validate(
        {
            "deployments": {
                name: {"provider": "fake", "model": name, **options}
                for name, options in deployments.items()
            },
            "routes": {"main": route},
            "default_route": "main",
            "prices": {
                name: {"input_per_mtok": price[0], "output_per_mtok": price[1]}
                for name, price in PRICES.items()
            },
            "budgets": budgets or {},
        }
    )
    return Router(settings, providers=models, scores=scores), models


def stamping(name: str, stamps: list[float], latency_s: float = 1.0) -> ScriptedModel:
    def reply(_request):  # noqa: ANN001, ANN202
        stamps.append(asyncio.get_running_loop().time())
        return FakeReply(name, latency_s=latency_s, input_tokens=100, output_tokens=50)

    return ScriptedModel(default=reply)


def max_in_any_window(stamps: list[float], window_s: float) -> int:
    ordered = sorted(stamps)
    return max(
        sum(1 for other in ordered if start <= other < start + window_s) for start in ordered
    )


async def test_rpm_holds_under_many_concurrent_callers(exported) -> None:
    stamps: list[float] = []
    router, _ = make_router(
        {"big": {"rpm": 3}},
        {"deployments": ["big"], "limit_wait_max_s": 600},
        models={"big": stamping("big", stamps)},
    )
    results = await asyncio.gather(*(router.complete("hi") for _ in range(10)))
    assert len(results) == 10
    assert max_in_any_window(stamps, 60.0) == 3
    queued = [result.record.attempts[0].queued_ms for result in results]
    assert max(queued) >= 180_000


async def test_tpm_counts_prompt_and_output_cap(exported) -> None:
    stamps: list[float] = []
    router, _ = make_router(
        {"big": {"tpm": 1000}},
        {"deployments": ["big"], "limit_wait_max_s": 600},
        models={"big": stamping("big", stamps)},
    )
    # Each request reserves its prompt estimate plus max_tokens=400 until it settles at 150.
    await asyncio.gather(*(router.complete("hi", max_tokens=400) for _ in range(6)))
    assert len(stamps) == 6
    assert max_in_any_window(stamps[:2], 60.0) == 2
    assert stamps[2] > stamps[0]
    # Two reservations of about 405 fit in 1000; the third waits for the first to settle at 1 s.
    assert stamps[1] == stamps[0]
    assert stamps[2] - stamps[0] == pytest.approx(1.0, abs=0.01)


async def test_max_concurrent(exported) -> None:
    in_flight = 0
    peak = 0

    def reply(_request):  # noqa: ANN001, ANN202
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        return FakeReply("x", latency_s=2)

    class Counting(ScriptedModel):
        async def complete(self, request):  # noqa: ANN001, ANN202
            nonlocal in_flight
            try:
                return await super().complete(request)
            finally:
                in_flight -= 1

    router, _ = make_router(
        {"big": {"max_concurrent": 2}},
        {"deployments": ["big"], "limit_wait_max_s": 600},
        models={"big": Counting(default=reply)},
    )
    await asyncio.gather(*(router.complete("hi") for _ in range(7)))
    assert peak == 2


async def test_long_limit_wait_falls_back(exported) -> None:
    router, models = make_router(
        {"big": {"rpm": 1}, "mid": {}},
        {"deployments": ["big", "mid"], "limit_wait_max_s": 5},
    )
    first, second = await asyncio.gather(router.complete("a"), router.complete("b"))
    assert {first.text, second.text} == {"from big", "from mid"}
    routed = first if first.text == "from mid" else second
    assert routed.record.fallbacks[0].reason == "rate_limited"
    assert "rpm" in routed.record.fallbacks[0].detail

    alone, _ = make_router({"big": {"rpm": 1}}, {"deployments": ["big"], "limit_wait_max_s": 5})
    await alone.complete("a")
    with pytest.raises(CallError) as caught:
        await alone.complete("b")
    assert caught.value.kind == ErrorKind.RATE_LIMITED
    assert exported.calls[-1].error_kind == ErrorKind.RATE_LIMITED


async def test_run_budget_rejects_call(exported) -> None:
    router, models = make_router({"big": {}}, {"deployments": ["big"]})
    # Worst case: about 10 input tokens at $10/M plus 1000 output tokens at $30/M = $0.0301.
    with start_run("r", run_id="r1", budget_usd=0.03):
        with pytest.raises(BudgetExceeded) as caught:
            await router.complete("hi", max_tokens=1000)
    assert caught.value.scope == "run:r1"
    assert models["big"].requests == []
    assert exported.calls[0].error_kind == ErrorKind.BUDGET_EXCEEDED
    assert exported.calls[0].fallbacks[0].reason == "budget_exceeded"


async def test_budget_is_charged_with_real_costs(exported) -> None:
    router, models = make_router({"big": {}}, {"deployments": ["big"]})
    # Each call costs 100 * 10 + 50 * 30 = $0.0025 and reserves about $0.0031 first.
    sent = 0
    with start_run("r", run_id="r2", budget_usd=0.01):
        for _ in range(5):
            try:
                await router.complete("hi", max_tokens=100)
            except BudgetExceeded:
                break
            sent += 1
    assert sent == 3
    assert await router.ledger.spent("run:r2") == pytest.approx(0.0075)


async def test_session_and_tag_budgets(exported) -> None:
    router, _ = make_router(
        {"big": {}}, {"deployments": ["big"]}, budgets={"tags": {"team=search": 0.004}}
    )
    with session("s1", team="search"):
        await router.complete("hi", max_tokens=100)
        with pytest.raises(BudgetExceeded) as caught:
            await router.complete("hi", max_tokens=100)
    assert caught.value.scope == "tag:team=search"

    with session("s2", budget_usd=0.001):
        with pytest.raises(BudgetExceeded) as caught:
            await router.complete("hi", max_tokens=100)
    assert caught.value.scope == "session:s2"


async def test_concurrent_calls_never_overspend(exported) -> None:
    router, models = make_router({"big": {}}, {"deployments": ["big"]})
    with start_run("r", run_id="r3", budget_usd=0.02):
        outcomes = await asyncio.gather(
            *(router.complete("hi", max_tokens=100) for _ in range(20)), return_exceptions=True
        )
    sent = [outcome for outcome in outcomes if not isinstance(outcome, Exception)]
    assert len(models["big"].requests) == len(sent)
    assert sum(result.record.cost.total_usd for result in sent) <= 0.02


async def test_unpriced_model_cannot_be_budgeted(exported) -> None:
    router, models = make_router({"unpriced": {}}, {"deployments": ["unpriced"]})
    with start_run("r", run_id="r4", budget_usd=1.0):
        with pytest.raises(BudgetExceeded) as caught:
            await router.complete("hi")
    assert "no price is known" in str(caught.value)
    assert models["unpriced"].requests == []


DOWNGRADE_ROUTE = {"deployments": ["big"], "downgrade_to": ["mid", "small"]}


async def test_downgrade_when_the_budget_cannot_cover_the_preferred(exported) -> None:
    router, models = make_router({"big": {}, "mid": {}, "small": {}}, DOWNGRADE_ROUTE)
    with start_run("r", run_id="r5", budget_usd=0.001):
        result = await router.complete("hi", max_tokens=1000)
    assert result.text == "from small"
    [downgrade] = result.record.downgrades
    assert (downgrade.from_deployment, downgrade.to_deployment, downgrade.reason) == (
        "big", "small", "budget",
    )
    assert models["big"].requests == []


async def test_downgrade_when_the_preferred_rate_limit_is_spent(exported) -> None:
    router, _ = make_router(
        {"big": {"rpm": 1}, "mid": {}, "small": {}}, {**DOWNGRADE_ROUTE, "limit_wait_max_s": 600}
    )
    first = await router.complete("a")
    second = await router.complete("b")
    assert first.text == "from big"
    assert not first.record.downgrades
    assert second.text == "from small"
    assert second.record.downgrades[0].reason == "rate_limit"


async def test_downgrade_reason_not_allowed(exported) -> None:
    router, _ = make_router(
        {"big": {"rpm": 1}, "mid": {}, "small": {}},
        {**DOWNGRADE_ROUTE, "downgrade_when": ["budget"], "limit_wait_max_s": 600},
    )
    await router.complete("a")
    second = await router.complete("b")
    assert second.text == "from big"
    assert second.record.attempts[0].queued_ms >= 59_000


def scores_of(**values: tuple[float, str]):  # noqa: ANN201
    def read(task: str, prompt: str | None = None) -> dict[str, TaskScore]:
        return {
            name: TaskScore(name, score, 50, digest, f"e-{name}", datetime.now(UTC))
            for name, (score, digest) in values.items()
        }

    return read


@pytest.mark.parametrize(
    ("scores", "served"),
    [
        ({"big": (0.90, "h"), "mid": (0.95, "h"), "small": (0.89, "h")}, "from small"),
        ({"big": (0.90, "h"), "mid": (0.89, "h"), "small": (0.70, "h")}, "from mid"),
        ({"big": (0.90, "h"), "mid": (0.70, "h"), "small": (0.70, "h")}, "from big"),
        ({"big": (0.90, "h"), "small": (0.95, "other rows")}, "from big"),
        ({"small": (0.95, "h")}, "from big"),
    ],
)
async def test_downgrade_by_golden_set_scores(exported, scores, served) -> None:
    router, _ = make_router(
        {"big": {}, "mid": {}, "small": {}}, DOWNGRADE_ROUTE, scores=scores_of(**scores)
    )
    result = await router.complete("hi")
    assert result.text == served
    if served != "from big":
        assert result.record.downgrades[0].reason == "scores"
        assert "tolerance" in result.record.downgrades[0].detail


async def test_scores_are_read_from_the_store(exported, tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'scores.db'}"
    store = open_store(url)
    for deployment, score in (("big", 0.91), ("small", 0.90)):
        record_experiment(
            store, task="triage", deployment=deployment, dataset_hash="h", row_count=40,
            mean_score=score, golden=True,
        )
    store.dispose()
    router, _ = make_router(
        {"big": {}, "mid": {}, "small": {}}, {**DOWNGRADE_ROUTE, "task": "triage"}
    )
    router.settings.store.url = url
    result = await router.complete("hi")
    assert result.text == "from small"


async def test_scores_of_the_calls_prompt_version_decide(exported, tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'scores.db'}"
    store = open_store(url)
    # Version 1 loses accuracy on the small model; version 2 does not.
    for version, small in (("1", 0.70), ("2", 0.90)):
        for deployment, score in (("big", 0.91), ("small", small)):
            record_experiment(
                store, task="triage", deployment=deployment, dataset_hash="h", row_count=40,
                mean_score=score, golden=True, prompt_name="triage", prompt_version=version,
            )
    store.dispose()
    router, _ = make_router({"big": {}, "mid": {}, "small": {}}, {**DOWNGRADE_ROUTE, "task": "triage"})
    router.settings.store.url = url
    first = await router.complete("hi", prompt_name="triage", prompt_version="1")
    second = await router.complete("hi", prompt_name="triage", prompt_version="2")
    unscored = await router.complete("hi", prompt_name="triage", prompt_version="3")
    assert first.text == "from big"
    assert second.text == "from small"
    assert "with prompt triage@2" in second.record.downgrades[0].detail
    # A version never scored falls back to the task's latest results (version 2's).
    assert unscored.text == "from small"
    assert "with prompt" not in unscored.record.downgrades[0].detail


async def test_small_tpm_names_the_fix(exported) -> None:
    router, models = make_router({"big": {"tpm": 1000}}, {"deployments": ["big"], "limit_wait_max_s": 600})
    with pytest.raises(CallError) as caught:
        await router.complete("hi")
    assert "max_output_tokens (4096)" in str(caught.value)
    assert models["big"].requests == []


async def test_explicit_max_tokens_over_tpm_is_rejected(exported) -> None:
    router, models = make_router({"big": {"tpm": 1000}}, {"deployments": ["big"], "limit_wait_max_s": 600})
    with pytest.raises(CallError) as caught:
        await router.complete("hi", max_tokens=5000)
    assert caught.value.kind == ErrorKind.RATE_LIMITED
    assert models["big"].requests == []
