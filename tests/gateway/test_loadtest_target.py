"""`trunkline loadtest --target` against a real gateway whose deployment is a simulated upstream."""

from __future__ import annotations

from pathlib import Path

from trunkline.config import Settings, SimulatedUpstream
from trunkline.loadtest.engine import LoadTestOptions, run_loadtest
from trunkline.loadtest.http_upstream import SimulatedHttpUpstream
from trunkline.loadtest.profile import Profile
from trunkline.loadtest.report import build_report
from gateway.harness import running_gateway


async def test_gateway_load_matches_upstream(tmp_path: Path) -> None:
    behaviour = SimulatedUpstream(
        latency_ms=2.0, rate_limit_rate=0.15, retry_after_s=0.01, server_error_rate=0.1
    )
    profile = Profile.model_validate(
        {
            "rate_rps": 25,
            "seed": 3,
            "tasks": [{"route": "chat", "input_tokens": {"median": 50}, "output_tokens": {"median": 10}}],
        }
    )

    with SimulatedHttpUpstream(behaviour, seed=4) as upstream:
        settings = Settings.model_validate(
            {
                "deployments": {
                    "sim": {"provider": "openai", "model": "gpt-4o-mini", "base_url": upstream.openai_base_url}
                },
                "routes": {
                    "chat": {
                        "deployments": ["sim"],
                        "max_attempts": 2,
                        "backoff_base_s": 0.001,
                        # An open breaker would fail calls with no attempt, which
                        # the upstream never sees; this test counts attempts.
                        "breaker_failures": 1000,
                    }
                },
                "store": {"flush_interval_s": 0.05},
            }
        )
        with running_gateway(settings, tmp_path) as gateway:
            options = LoadTestOptions(
                duration_s=1.5, drain_s=20.0, target=gateway.url, api_key=gateway.key()
            )
            result = await run_loadtest(settings, profile, options)
            recorded = gateway.calls()
    figures = build_report(result).public()

    seen = upstream.counts
    assert figures["requests"]["finished"] == figures["requests"]["planned"]
    assert figures["requests"]["finished"] == len(recorded)
    assert figures["requests"]["ok"] == seen.ok
    assert figures["requests"]["ok"] == sum(1 for row in recorded if row["outcome"] == "ok")
    assert sum(row["attempt_count"] for row in recorded) == seen.requests
    assert sum(row["retry_count"] for row in recorded) == seen.requests - len(recorded)
    assert seen.rate_limited + seen.server_error > 0
    assert figures["cost"]["total_usd"] > 0
