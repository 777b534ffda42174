"""The highest request rate `trunkline loadtest` sustains on this machine.

The load generator runs in one process on one event loop, so its own
ceiling caps every load test. This script offers rising Poisson rates for
a few seconds each and prints, side by side, the offered rate, the rate of
finished requests, their ratio and how late the generator sent requests.
A step counts as sustained when at least 95 % of the offered rate
finishes and the 99th percentile of the send delay stays under 100 ms.
It stops at the first step that is not sustained. Two targets:

- ``simulated``: the real Router over the in-process simulated providers,
  with a 5 ms latency and no faults;
- ``http``: the real Router with the OpenAI adapter, sending over HTTP to
  `fake_upstream.py` in a separate process on 127.0.0.1.

    python benchmarks/loadtest_ceiling.py --seconds 3 --rates 250,500,1000,2000
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import sys
import time
from pathlib import Path

from trunkline.config import Settings
from trunkline.loadtest.engine import LoadTestOptions, run_loadtest
from trunkline.loadtest.profile import Profile
from trunkline.loadtest.report import build_report
from trunkline.providers.openai import OpenAIProvider

HERE = Path(__file__).resolve().parent
#: Share of the offered rate that must finish for a step to count as sustained.
SUSTAINED_RATIO = 0.95
#: Largest 99th percentile of the send delay, in milliseconds, for a sustained step.
SUSTAINED_LAG_MS = 100.0


def bench_settings() -> Settings:
    return Settings.model_validate(
        {
            "deployments": {"bench": {"provider": "openai", "model": "gpt-4o-mini"}},
            "routes": {"bench": {"deployments": ["bench"], "max_attempts": 3}},
        }
    )


def bench_profile(rate_rps: float) -> Profile:
    return Profile.model_validate(
        {
            "rate_rps": rate_rps,
            "seed": 1,
            "tasks": [
                {
                    "route": "bench",
                    "input_tokens": {"median": 200, "sigma": 0.5},
                    "output_tokens": {"median": 50, "sigma": 0.5},
                }
            ],
            "default_upstream": {"latency_ms": 5.0, "latency_sigma": 0.0},
        }
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_upstream(max_seconds: float) -> tuple[subprocess.Popen[str], str]:
    """Start fake_upstream.py on a free port; it stops by itself after `max_seconds`."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(HERE / "fake_upstream.py"), "--port", str(port), "--max-seconds", str(max_seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    process.stdout.readline()
    return process, f"http://127.0.0.1:{port}/v1"


async def one_step(target: str, rate: float, seconds: float, upstream_url: str | None) -> dict[str, float]:
    providers = None
    if upstream_url is not None:
        providers = {"bench": OpenAIProvider.create("gpt-4o-mini", api_key="sk-bench", base_url=upstream_url)}
    options = LoadTestOptions(duration_s=seconds, drain_s=10.0, max_requests=200_000)
    cpu = time.process_time()
    result = await run_loadtest(bench_settings(), bench_profile(rate), options, providers=providers)
    cpu = time.process_time() - cpu
    figures = build_report(result).public()
    finished = figures["requests"]["finished"]
    last_end = max((sample.ended_s for sample in result.outcome.samples), default=seconds)
    achieved = finished / max(last_end, seconds)
    offered = figures["throughput"]["offered_rps"]
    return {
        "offered": offered,
        "achieved": achieved,
        "ratio": achieved / offered,
        "lag_p99_ms": figures["generator_lag_ms"]["p99"] or 0.0,
        "errors": figures["requests"]["errors"],
        "cpu_us": cpu / max(finished, 1) * 1e6,
    }


async def ramp(target: str, rates: list[float], seconds: float, upstream_url: str | None) -> float | None:
    """Run the steps of one target in rising order; return the highest sustained rate."""
    ceiling = None
    for rate in rates:
        step = await one_step(target, rate, seconds, upstream_url)
        sustained = (
            step["ratio"] >= SUSTAINED_RATIO
            and step["lag_p99_ms"] < SUSTAINED_LAG_MS
            and not step["errors"]
        )
        print(
            f"{target:<10} {step['offered']:>9.0f} {step['achieved']:>9.0f} {step['ratio']:>6.2f} "
            f"{step['lag_p99_ms']:>9.1f} {step['cpu_us']:>9.0f} {'yes' if sustained else 'no':>9}",
            flush=True,
        )
        if not sustained:
            break
        ceiling = step["achieved"]
    return ceiling


def main() -> None:
    parser = argparse.ArgumentParser(description="The load generator's own ceiling.")
    parser.add_argument("--seconds", type=float, default=3.0, help="Seconds of arrivals per step.")
    parser.add_argument(
        "--rates", default="250,500,1000,2000,4000", help="Offered requests per second, rising."
    )
    parser.add_argument("--targets", default="simulated,http", help="simulated, http or both.")
    arguments = parser.parse_args()
    rates = sorted(float(rate) for rate in arguments.rates.split(","))
    targets = arguments.targets.split(",")

    print(f"{'target':<10} {'offered':>9} {'achieved':>9} {'ratio':>6} {'lag p99ms':>9} {'cpu us/rq':>9} {'sustained':>9}")
    ceilings: dict[str, float | None] = {}
    if "simulated" in targets:
        ceilings["simulated"] = asyncio.run(ramp("simulated", rates, arguments.seconds, None))
    if "http" in targets:
        # Each step lasts its arrivals plus at most the 10 s drain.
        process, url = start_upstream(len(rates) * (arguments.seconds + 15) + 30)
        try:
            ceilings["http"] = asyncio.run(ramp("http", rates, arguments.seconds, url))
        finally:
            process.terminate()
            process.wait(timeout=10)
    for target, ceiling in ceilings.items():
        ceiling_text = "below the lowest rate tried" if ceiling is None else f"{ceiling:.0f} requests/s"
        print(f"ceiling {target}: {ceiling_text}")


if __name__ == "__main__":
    main()
