"""Per-call overhead and throughput of Trunkline over the raw `openai` SDK, side by side.

Every variant calls the same zero-latency fake server (`fake_upstream.py`,
started here as a subprocess on 127.0.0.1):

- ``openai-sdk``: `AsyncOpenAI.chat.completions.create`, SDK retries off;
- ``trunkline``: `Router.complete` on an OpenAI deployment with the whole
  resilience path on: up to 3 attempts, a circuit breaker, requests- and
  tokens-per-minute limits and a concurrency limit set high enough never to
  bind, pricing, and each record enqueued to a SQLite store's background
  writer;
- ``trunkline+otlp``: the same, with every span also sent over OTLP/HTTP
  to a sink in a separate process on 127.0.0.1, as with
  ``OTEL_EXPORTER_OTLP_ENDPOINT`` set;
- ``litellm`` (with ``--peers``, where installed): `litellm.acompletion`.

Each Trunkline variant's background work (store commits, span sends) is
finished inside its own measurement, so that it is charged to the calls
that caused it.

Two measurements, each alternating the variants in every round (A, B, C,
then B, C, A, ...) so that drift in the machine's speed, and any work one
variant leaves behind, hit all of them alike:

- concurrency 1: median wall time and process CPU time per call, the
  overhead over the SDK in microseconds, and the ratio;
- concurrency 64: calls per second with 64 tasks calling at once, and the
  ratio to the SDK's throughput.

    python benchmarks/call_overhead.py --rounds 7 --calls 300 --peers
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from otlp_sink import start_sink

Call = Callable[[], Awaitable[None]]
MESSAGES = [{"role": "user", "content": "Say hello"}]
MODEL = "gpt-4o-mini"


def _nothing() -> None:
    return None


@dataclass
class Variant:
    call: Call
    close: Callable[[], Awaitable[None]]
    #: Finishes the background work the calls left; runs inside the timing.
    settle: Callable[[], None] = _nothing
    #: Run before and after each measurement, outside the timing.
    activate: Callable[[], None] = _nothing
    deactivate: Callable[[], None] = _nothing


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_upstream(port: int, max_seconds: float) -> subprocess.Popen:
    script = Path(__file__).with_name("fake_upstream.py")
    process = subprocess.Popen(
        [sys.executable, str(script), "--port", str(port), "--max-seconds", str(max_seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    line = process.stdout.readline() if process.stdout else ""
    if "listening" not in line:
        process.kill()
        raise RuntimeError(f"fake upstream did not start: {line!r}")
    return process


async def make_openai(base_url: str) -> Variant:
    import openai

    client = openai.AsyncOpenAI(base_url=base_url, api_key="sk-bench", max_retries=0)

    async def call() -> None:
        completion = await client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=16)
        assert completion.usage.total_tokens == 21

    return Variant(call, client.close)


async def make_trunkline(base_url: str, store_url: str, otlp_sink: str) -> tuple[Variant, Variant]:
    """Return the ``trunkline`` and ``trunkline+otlp`` variants, which share one store."""
    from trunkline.config import Settings
    from trunkline.recording import recording
    from trunkline.routing import Router
    from trunkline.tracing import add_exporter, remove_exporter
    from trunkline.tracing.otlp import OtlpExporter

    settings = Settings.model_validate(
        {
            "deployments": {
                "bench": {
                    "provider": "openai",
                    "model": MODEL,
                    "base_url": base_url,
                    "api_key_env": "TRUNKLINE_BENCH_KEY",
                    "rpm": 10_000_000,
                    "tpm": 10_000_000_000,
                    "max_concurrent": 1_000,
                }
            },
            "routes": {"bench": {"deployments": ["bench"], "max_attempts": 3}},
            "store": {"url": store_url},
        }
    )
    os.environ["TRUNKLINE_BENCH_KEY"] = "sk-bench"
    context = recording(settings)
    recorder = context.__enter__()
    plain, traced = Router(settings), Router(settings)
    # Big enough that no span of a round is dropped; the defaults otherwise.
    exporter = OtlpExporter(otlp_sink, max_queue=100_000)

    def call_with(router: Router) -> Call:
        async def call() -> None:
            result = await router.complete(MESSAGES, route="bench", max_tokens=16)
            assert result.record.usage.total_tokens == 21

        return call

    def settle_store() -> None:
        recorder.writer.flush()

    def settle_both() -> None:
        recorder.writer.flush()
        exporter.flush(timeout_s=120)

    async def close_plain() -> None:
        await plain.aclose()

    async def close_traced() -> None:
        await traced.aclose()
        exporter.close()
        context.__exit__(None, None, None)
        if exporter.dropped:
            print(f"warning: {exporter.dropped} spans were dropped", file=sys.stderr)

    return (
        Variant(call_with(plain), close_plain, settle=settle_store),
        Variant(
            call_with(traced),
            close_traced,
            settle=settle_both,
            activate=lambda: add_exporter(exporter),
            deactivate=lambda: remove_exporter(exporter),
        ),
    )


async def make_litellm(base_url: str) -> Variant | None:
    for key, value in {
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_TELEMETRY": "False",
        "NO_PROXY": "*",
    }.items():
        os.environ.setdefault(key, value)
    try:
        import litellm
    except ImportError:
        return None

    async def call() -> None:
        response = await litellm.acompletion(
            model=f"openai/{MODEL}", messages=MESSAGES, max_tokens=16, api_base=base_url, api_key="sk-bench"
        )
        assert response.usage.total_tokens == 21

    async def close() -> None:
        return None

    return Variant(call, close)


async def measure(variant: Variant, calls: int) -> tuple[float, float]:
    """Return the median wall time and the CPU time per call, in microseconds."""
    variant.activate()
    latencies = []
    cpu_start = time.process_time()
    for _ in range(calls):
        start = time.perf_counter()
        await variant.call()
        latencies.append(time.perf_counter() - start)
    variant.settle()
    cpu = (time.process_time() - cpu_start) / calls
    variant.deactivate()
    return statistics.median(latencies) * 1e6, cpu * 1e6


async def measure_throughput(variant: Variant, calls: int, concurrency: int) -> float:
    """Return calls per second with `concurrency` tasks sharing `calls` calls."""
    remaining = calls

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await variant.call()

    variant.activate()
    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    variant.settle()
    elapsed = time.perf_counter() - start
    variant.deactivate()
    return calls / elapsed


def rotated(names: list[str], number: int) -> list[str]:
    """Return `names` starting at a different one each round, so that no variant always follows the same one."""
    start = number % len(names)
    return names[start:] + names[:start]


async def run(
    rounds: int, calls: int, concurrency: int, parallel_calls: int, with_peers: bool
) -> None:
    port = free_port()
    upstream = start_upstream(port, max_seconds=rounds * calls * 0.1 + 300)
    sink = start_sink(max_seconds=rounds * calls * 0.1 + 300)
    base_url = f"http://127.0.0.1:{port}/v1"
    folder = tempfile.mkdtemp(prefix="trunkline-bench-")
    plain, traced = await make_trunkline(
        base_url, f"sqlite:///{folder}/bench.db", sink.endpoint
    )
    variants = {"openai-sdk": await make_openai(base_url), "trunkline": plain, "trunkline+otlp": traced}
    if with_peers:
        litellm_variant = await make_litellm(base_url)
        if litellm_variant is None:
            print("litellm is not installed; its row is left out", file=sys.stderr)
        else:
            variants["litellm"] = litellm_variant
    sequential: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    parallel: dict[str, list[float]] = {name: [] for name in variants}
    try:
        # Concurrency 1 runs first: once 64 calls have run at once, each
        # client's pool contains 64 connections, and httpcore scans them all on
        # every request, which would slow the sequential calls of every variant.
        for variant in variants.values():
            await measure(variant, 100)
        for number in range(rounds):
            for name in rotated(list(variants), number):
                sequential[name].append(await measure(variants[name], calls))
        for variant in variants.values():
            await measure_throughput(variant, 200, concurrency)
        for number in range(rounds):
            for name in rotated(list(variants), number):
                parallel[name].append(await measure_throughput(variants[name], parallel_calls, concurrency))
    finally:
        for variant in variants.values():
            await variant.close()
        upstream.terminate()
        upstream.wait(timeout=10)
        sink.stop()
    report(sequential, parallel, rounds, calls, concurrency, parallel_calls)


def report(
    sequential: dict[str, list[tuple[float, float]]],
    parallel: dict[str, list[float]],
    rounds: int,
    calls: int,
    concurrency: int,
    parallel_calls: int,
) -> None:
    walls = {name: statistics.median(wall for wall, _ in samples) for name, samples in sequential.items()}
    cpus = {name: statistics.median(cpu for _, cpu in samples) for name, samples in sequential.items()}
    rates = {name: statistics.median(samples) for name, samples in parallel.items()}
    base_wall, base_rate = walls["openai-sdk"], rates["openai-sdk"]
    print(f"concurrency 1: {rounds} rounds x {calls} calls per variant, medians over rounds")
    print(f"{'variant':<15} {'wall us/call':>13} {'cpu us/call':>12} {'overhead us':>12} {'ratio':>7}")
    for name, wall in walls.items():
        print(f"{name:<15} {wall:13.0f} {cpus[name]:12.0f} {wall - base_wall:+12.0f} {wall / base_wall:7.2f}")
    litellm_overhead = walls.get("litellm", base_wall) - base_wall
    if litellm_overhead > 0:
        print(f"trunkline's overhead is {(walls['trunkline'] - base_wall) / litellm_overhead:.3f} of litellm's")
    print()
    print(f"concurrency {concurrency}: {rounds} rounds x {parallel_calls} calls per variant, medians")
    print(f"{'variant':<15} {'calls/s':>10} {'ratio':>7}")
    for name, rate in rates.items():
        print(f"{name:<15} {rate:10.0f} {rate / base_rate:7.2f}")
    print()
    print("OTLP export on, against trunkline without it:")
    print(f"  wall per call at concurrency 1  {walls['trunkline+otlp'] / walls['trunkline'] - 1:+.1%}")
    print(f"  cpu per call at concurrency 1   {cpus['trunkline+otlp'] / cpus['trunkline'] - 1:+.1%}")
    print(f"  time per call at concurrency {concurrency} {rates['trunkline'] / rates['trunkline+otlp'] - 1:+.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description="Trunkline's per-call overhead over the openai SDK.")
    parser.add_argument("--rounds", type=int, default=7, help="Alternating rounds per variant.")
    parser.add_argument("--calls", type=int, default=300, help="Sequential calls per variant per round.")
    parser.add_argument(
        "--concurrency", type=int, default=64, help="Tasks calling at once in the throughput test."
    )
    parser.add_argument(
        "--parallel-calls", type=int, default=2000, help="Calls per variant per round at that concurrency."
    )
    parser.add_argument("--peers", action="store_true", help="Add litellm.acompletion where installed.")
    arguments = parser.parse_args()
    asyncio.run(
        run(
            arguments.rounds,
            arguments.calls,
            arguments.concurrency,
            arguments.parallel_calls,
            arguments.peers,
        )
    )


if __name__ == "__main__":
    main()
