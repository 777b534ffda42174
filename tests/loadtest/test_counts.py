"""A load test's counts against what the upstream received, in process and over HTTP."""

from __future__ import annotations

from trunkline.config import Settings, SimulatedUpstream
from trunkline.loadtest.engine import LoadTestOptions, run_loadtest
from trunkline.loadtest.http_upstream import SimulatedHttpUpstream
from trunkline.loadtest.profile import Profile
from trunkline.loadtest.report import build_report
from trunkline.providers.openai import OpenAIProvider

#: Attempt classes that both the router's records and the upstream count.
CLASSES = ("requests", "ok", "rate_limited", "server_error", "timeout")

FAULTY = {
    "latency_ms": 2.0,
    "latency_sigma": 0.3,
    "rate_limit_rate": 0.1,
    "retry_after_s": 0.01,
    "server_error_rate": 0.1,
    "server_error_burst": 3.0,
    "timeout_rate": 0.05,
    "hang_s": 0.02,
}


def settings_for(*, max_attempts: int = 4, timeout_s: float = 5.0) -> Settings:
    return Settings.model_validate(
        {
            "deployments": {
                "main": {"provider": "openai", "model": "main-model"},
                "spare": {"provider": "openai", "model": "spare-model"},
            },
            "routes": {
                "chat": {
                    "deployments": ["main", "spare"],
                    "max_attempts": max_attempts,
                    "timeout_s": timeout_s,
                    "backoff_base_s": 0.001,
                    "backoff_max_s": 0.005,
                    "breaker_failures": 1000,
                }
            },
            "prices": {
                "main-model": {"input_per_mtok": 1.0, "output_per_mtok": 4.0},
                "spare-model": {"input_per_mtok": 2.0, "output_per_mtok": 8.0},
            },
        }
    )


def profile_for(rate_rps: float, **extra: object) -> Profile:
    return Profile.model_validate(
        {
            "rate_rps": rate_rps,
            "seed": 11,
            "tasks": [
                {
                    "route": "chat",
                    "input_tokens": {"median": 200, "sigma": 0.4},
                    "output_tokens": {"samples": [20, 40, 80]},
                }
            ],
            "upstreams": {"main": FAULTY, "spare": {"latency_ms": 1.0, "latency_sigma": 0.0}},
            **extra,
        }
    )


async def test_simulated_counts_match_upstream() -> None:
    profile = profile_for(40.0)
    options = LoadTestOptions(scale=2.0, duration_s=2.0, drain_s=10.0)

    result = await run_loadtest(settings_for(), profile, options)
    figures = build_report(result).public()

    requests = figures["requests"]
    assert requests["planned"] > 100
    assert requests["finished"] == requests["planned"]
    assert requests["unfinished"] == 0
    assert requests["skipped"] == 0
    upstreams = figures["upstreams"]
    recorded = figures["attempts"]["by_deployment"]
    for name in ("main", "spare"):
        seen = upstreams[name]
        for key in CLASSES:
            assert recorded.get(name, {}).get(key, 0) == seen[key], (name, key)
        assert seen["abandoned"] == 0
    main = upstreams["main"]
    assert main["rate_limited"] > 0
    assert main["server_error"] > 0
    assert main["timeout"] > 0
    total_upstream = sum(counts["requests"] for counts in upstreams.values())
    calls_that_reached_spare = upstreams["spare"]["requests"]
    assert figures["rates"]["retries"] == total_upstream - requests["finished"] - calls_that_reached_spare
    ok_upstream = sum(counts["ok"] for counts in upstreams.values())
    assert requests["ok"] == ok_upstream
    assert figures["rates"]["fallbacks"] == calls_that_reached_spare


async def test_simulated_run_is_reproducible() -> None:
    profile = profile_for(30.0)
    options = LoadTestOptions(scale=1.0, duration_s=1.0, drain_s=10.0)

    first = await run_loadtest(settings_for(), profile, options)
    second = await run_loadtest(settings_for(), profile, options)

    assert first.planned == second.planned
    assert first.upstreams["main"].requests == second.upstreams["main"].requests


async def test_router_timeout_counts_as_abandoned() -> None:
    profile = profile_for(
        20.0,
        upstreams={
            "main": {"latency_ms": 1.0, "timeout_rate": 0.3, "hang_s": 60.0},
            "spare": {"latency_ms": 1.0},
        },
    )
    options = LoadTestOptions(scale=1.0, duration_s=1.0, drain_s=10.0)

    result = await run_loadtest(settings_for(max_attempts=1, timeout_s=0.5), profile, options)
    figures = build_report(result).public()

    main = figures["upstreams"]["main"]
    assert main["timeout"] > 0
    assert figures["attempts"]["by_deployment"]["main"]["timeout"] == main["timeout"]
    assert main["requests"] == main["ok"] + main["timeout"]
    assert figures["rates"]["fallbacks"] == main["timeout"]


async def test_http_upstream_counts_match_report() -> None:
    behaviour = SimulatedUpstream.model_validate(FAULTY)
    profile = profile_for(30.0)
    options = LoadTestOptions(scale=1.0, duration_s=2.0, drain_s=10.0)

    with SimulatedHttpUpstream(behaviour, seed=5) as upstream:
        adapter = OpenAIProvider.create(
            "main-model", api_key="sk-test", base_url=upstream.openai_base_url
        )
        result = await run_loadtest(settings_for(), profile, options, providers={"main": adapter})
    figures = build_report(result).public()

    seen = upstream.counts
    recorded = figures["attempts"]["by_deployment"]["main"]
    assert figures["requests"]["finished"] == figures["requests"]["planned"]
    assert recorded["requests"] == seen.requests
    assert recorded["ok"] == seen.ok
    assert recorded["rate_limited"] == seen.rate_limited
    assert recorded["server_error"] == seen.server_error
    assert recorded["timeout"] == seen.timeout
    assert seen.abandoned == 0
    assert seen.rate_limited > 0
    assert seen.server_error > 0
    assert "main" not in figures["upstreams"]


async def test_gateway_target_counts_match_upstream() -> None:
    behaviour = SimulatedUpstream.model_validate(FAULTY)
    profile = profile_for(30.0)

    with SimulatedHttpUpstream(behaviour, seed=9) as upstream:
        options = LoadTestOptions(
            scale=1.0, duration_s=1.5, drain_s=10.0, target=upstream.base_url, api_key="tk-test"
        )
        result = await run_loadtest(settings_for(), profile, options)
    figures = build_report(result).public()

    seen = upstream.counts
    samples = result.outcome.samples
    assert figures["mode"] == "gateway"
    assert figures["requests"]["finished"] == seen.requests
    assert figures["requests"]["ok"] == seen.ok
    assert sum(1 for sample in samples if sample.status_code == 429) == seen.rate_limited
    assert sum(1 for sample in samples if sample.status_code == 503) == seen.server_error
    assert sum(1 for sample in samples if sample.status_code == 504) == seen.timeout
    assert figures["attempts"] is None
    assert figures["upstreams"] is None
