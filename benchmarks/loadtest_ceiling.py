"""The highest request rate `trunkline loadtest` sustains on this machine.

The load generator runs in one process on one event loop, so its own
ceiling caps every load test. This script offers rising Poisson rates for
a few seconds each, in several rounds per rate with the targets
alternating. It prints, side by side, the medians of the offered rate, the
rate of finished requests, their ratio and how late the generator sent
requests.
A rate counts as sustained when at least 95 % of the offered rate
finishes and the 99th percentile of the send delay stays under 100 ms.
Each target stops at its first rate that is not sustained. Two targets:

- ``simulated``: the real Router over the in-process simulated providers,
  with a 5 ms latency and no faults;
- ``http``: the real Router with the OpenAI adapter, sending over HTTP to
  `fake_upstream.py` in a separate process on 127.0.0.1.

    python benchmarks/loadtest_ceiling.py --seconds 3 --rounds 3 --rates 500,1000,2000,3000,4000
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
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


async def one_step(rate: float, seconds: float, upstream_url: str | None) -> dict[str, float]:
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


def sustained(step: dict[str, float]) -> bool:
    return (
        step["ratio"] >= SUSTAINED_RATIO
        and step["lag_p99_ms"] < SUSTAINED_LAG_MS
        and not step["errors"]
    )


def median_step(steps: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(step[key] for step in steps) for key in steps[0]}


def measure(
    targets: list[str], rates: list[float], rounds: int, seconds: float, urls: dict[str, str | None]
) -> dict[str, float | None]:
    """Run every rate for each target still sustaining; return the highest sustained rate of each."""
    print(
        f"medians of {rounds} rounds of {seconds:g}s per rate; "
        "targets alternate within each round"
    )
    print(f"{'target':<10} {'offered':>9} {'achieved':>9} {'ratio':>6} {'lag p99ms':>9} {'cpu us/rq':>9} {'sustained':>9}")
    ceilings: dict[str, float | None] = dict.fromkeys(targets)
    open_targets = list(targets)
    for rate in rates:
        steps: dict[str, list[dict[str, float]]] = {target: [] for target in open_targets}
        for _ in range(rounds):
            for target in open_targets:
                steps[target].append(asyncio.run(one_step(rate, seconds, urls[target])))
        for target in list(open_targets):
            step = median_step(steps[target])
            held = sustained(step)
            print(
                f"{target:<10} {step['offered']:>9.0f} {step['achieved']:>9.0f} {step['ratio']:>6.2f} "
                f"{step['lag_p99_ms']:>9.1f} {step['cpu_us']:>9.0f} {'yes' if held else 'no':>9}",
                flush=True,
            )
            if held:
                ceilings[target] = step["achieved"]
            else:
                open_targets.remove(target)
        if not open_targets:
            break
    return ceilings


def main() -> None:
    parser = argparse.ArgumentParser(description="The load generator's own ceiling.")
    parser.add_argument("--seconds", type=float, default=3.0, help="Seconds of arrivals per step.")
    parser.add_argument(
        "--rates", default="500,1000,2000,3000,4000", help="Offered requests per second, rising."
    )
    parser.add_argument("--rounds", type=int, default=3, help="Steps per rate and target; medians are shown.")
    parser.add_argument("--targets", default="simulated,http", help="simulated, http or both.")
    arguments = parser.parse_args()
    rates = sorted(float(rate) for rate in arguments.rates.split(","))
    targets = arguments.targets.split(",")
    # Each step lasts its arrivals plus at most the 10 s drain.
    budget_s = (len(rates) * len(targets) * arguments.rounds + 2) * (arguments.seconds + 12) + 30
    process, url = start_upstream(budget_s)
    urls = {"simulated": None, "http": url}
    try:
        # The first calls of a process pay one-time costs, such as lazy imports,
        # that would show up as send delay, so a short unmeasured run takes them.
        for target in targets:
            asyncio.run(one_step(100.0, 1.0, urls[target]))
        ceilings = measure(targets, rates, arguments.rounds, arguments.seconds, urls)
    finally:
        process.terminate()
        process.wait(timeout=10)
    for target, ceiling in ceilings.items():
        ceiling_text = "below the lowest rate tried" if ceiling is None else f"{ceiling:.0f} requests/s"
        print(f"ceiling {target}: {ceiling_text}")


if __name__ == "__main__":
    main()
