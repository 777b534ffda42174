"""The simulated faults, and the limits and budgets a load test reports as binding."""

from __future__ import annotations

from trunkline.config import Settings, SimulatedUpstream
from trunkline.loadtest.engine import LoadTestOptions, run_loadtest
from trunkline.loadtest.faults import FaultModel
from trunkline.loadtest.profile import Profile
from trunkline.loadtest.report import build_report, percentile


def server_error_runs(model: FaultModel, draws: int) -> tuple[float, float]:
    """Return the share of server errors and the mean length of their runs."""
    runs: list[int] = []
    length = 0
    errors = 0
    for _ in range(draws):
        failed = model.draw().outcome == "server_error"
        errors += failed
        if failed:
            length += 1
        elif length:
            runs.append(length)
            length = 0
    return errors / draws, sum(runs) / len(runs)


def test_bursts_keep_rate_and_lengthen_runs() -> None:
    bursty = FaultModel(SimulatedUpstream(server_error_rate=0.1, server_error_burst=10), seed=1)
    spread = FaultModel(SimulatedUpstream(server_error_rate=0.1), seed=1)

    bursty_rate, bursty_run = server_error_runs(bursty, 50_000)
    spread_rate, spread_run = server_error_runs(spread, 50_000)

    assert 0.085 < bursty_rate < 0.115
    assert 0.09 < spread_rate < 0.11
    assert 8.5 < bursty_run < 11.5
    assert spread_run < 1.3


def test_fault_shares_match_rates() -> None:
    behaviour = SimulatedUpstream(
        rate_limit_rate=0.2, server_error_rate=0.1, server_error_burst=4, timeout_rate=0.05
    )
    model = FaultModel(behaviour, seed=2)
    outcomes = [model.draw().outcome for _ in range(40_000)]

    assert 0.19 < outcomes.count("rate_limited") / 40_000 < 0.21
    assert 0.09 < outcomes.count("server_error") / 40_000 < 0.11
    assert 0.045 < outcomes.count("timeout") / 40_000 < 0.055
    assert model.counts.requests == 40_000


def test_same_seed_same_draws() -> None:
    behaviour = SimulatedUpstream(rate_limit_rate=0.3, latency_ms=100, latency_sigma=1.0)
    first = FaultModel(behaviour, seed="7:main")
    second = FaultModel(behaviour, seed="7:main")
    assert [first.draw() for _ in range(200)] == [second.draw() for _ in range(200)]


def test_percentile_nearest_rank() -> None:
    values = [float(value) for value in range(1, 101)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 1.0) == 100.0
    assert percentile([], 0.5) is None


def settings_with(**deployment: object) -> Settings:
    return Settings.model_validate(
        {
            "deployments": {
                "main": {"provider": "openai", "model": "main-model", **deployment},
                "cheap": {"provider": "openai", "model": "cheap-model"},
            },
            "routes": {
                "chat": {
                    "deployments": ["main"],
                    "limit_wait_max_s": 0.0,
                    "downgrade_to": ["cheap"],
                    "downgrade_when": ["rate_limit"],
                },
                "plain": {"deployments": ["main"], "limit_wait_max_s": 30.0},
            },
            "prices": {
                "main-model": {"input_per_mtok": 10.0, "output_per_mtok": 40.0},
                "cheap-model": {"input_per_mtok": 1.0, "output_per_mtok": 4.0},
            },
        }
    )


def profile_on(route: str, rate_rps: float, **extra: object) -> Profile:
    return Profile.model_validate(
        {
            "rate_rps": rate_rps,
            "seed": 5,
            "tasks": [
                {"route": route, "input_tokens": {"median": 100}, "output_tokens": {"median": 50}}
            ],
            "default_upstream": {"latency_ms": 20.0, "latency_sigma": 0.0},
            **extra,
        }
    )


async def test_rpm_binds_and_downgrades() -> None:
    options = LoadTestOptions(duration_s=1.0, drain_s=10.0)

    result = await run_loadtest(settings_with(rpm=10), profile_on("chat", 40.0), options)
    figures = build_report(result).public()

    limits = figures["limits"]
    assert limits["binds_first"] == "rpm"
    rpm = limits["by_limit"][0]
    assert rpm["refused"] == figures["requests"]["finished"] - 10
    assert rpm["deployments"] == ["main"]
    assert figures["upstreams"]["main"]["requests"] == 10
    assert figures["upstreams"]["cheap"]["requests"] == rpm["refused"]
    assert figures["rates"]["downgrades"] == {"rate_limit": rpm["refused"]}


async def test_tpm_binds_before_rpm() -> None:
    options = LoadTestOptions(duration_s=1.0, drain_s=10.0)

    result = await run_loadtest(settings_with(rpm=1000, tpm=1000), profile_on("chat", 40.0), options)
    figures = build_report(result).public()

    limits = figures["limits"]
    assert limits["binds_first"] == "tpm"
    assert [item["limit"] for item in limits["by_limit"]] == ["tpm"]
    refused = limits["by_limit"][0]["refused"]
    assert refused > 0
    assert figures["upstreams"]["main"]["requests"] == figures["requests"]["finished"] - refused


async def test_concurrency_wait_is_measured() -> None:
    options = LoadTestOptions(duration_s=1.0, drain_s=30.0)

    result = await run_loadtest(settings_with(max_concurrent=1), profile_on("plain", 30.0), options)
    figures = build_report(result).public()

    assert figures["limits"]["binds_first"] == "concurrency"
    concurrency = figures["limits"]["by_limit"][0]
    assert concurrency["waited"] > 0
    assert concurrency["refused"] == 0
    waits = figures["limiter_wait_ms"]
    assert waits["waited"] == concurrency["waited"]
    assert waits["requests"] == figures["upstreams"]["main"]["requests"]
    assert waits["max"] >= waits["p50"] > 0
    assert sum(figures["series"]["limiter_waits"]) == concurrency["waited"]


async def test_budget_binds_and_cost_projects() -> None:
    options = LoadTestOptions(duration_s=2.0, drain_s=10.0)
    # Each call costs 100 * 10 / 1e6 + 50 * 40 / 1e6 = $0.003; the budget allows three.
    profile = profile_on("plain", 20.0, budget_usd=0.0095)

    result = await run_loadtest(settings_with(), profile, options)
    figures = build_report(result).public()

    assert figures["requests"]["ok"] == 3
    assert figures["errors_by_kind"] == {"budget_exceeded": figures["requests"]["finished"] - 3}
    assert figures["limits"]["binds_first"] == "budget"
    cost = figures["cost"]
    assert abs(cost["total_usd"] - 0.009) < 1e-12
    assert abs(cost["per_hour_usd"] - 0.009 * 1800) < 1e-9
    assert abs(cost["per_day_usd"] - cost["per_hour_usd"] * 24) < 1e-9
    assert abs(cost["per_month_usd"] - cost["per_day_usd"] * 30) < 1e-9
