"""Trunkline's own CPU per call, with no HTTP and no SDK in the way.

`call_overhead.py` compares whole calls, so its figure mixes Trunkline's
bookkeeping with the OpenAI adapter's savings (the adapter posts its body
without the SDK's request transform). This script isolates the bookkeeping:
a provider that returns a ready response at once replaces the network,
and three variants alternate in every round:

- ``provider``: the provider's `complete` alone, the floor;
- ``router``: `Router.complete` with retries, breaker, limits and pricing;
- ``router+store``: the same with every record and span enqueued to a
  SQLite store's background writer, whose commits run in this process too;
- ``router+store+otlp``: the same, with every span also converted and sent
  over OTLP/HTTP to a sink in a separate process on 127.0.0.1.

    python benchmarks/router_cost.py --rounds 7 --calls 3000
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager

from otlp_sink import start_sink
from trunkline.config import Settings
from trunkline.providers.base import Provider
from trunkline.recording import recording
from trunkline.routing import Router
from trunkline.tracing import add_exporter, exporters, remove_exporter
from trunkline.tracing.otlp import OtlpExporter
from trunkline.types.calls import ModelRequest, ModelResponse
from trunkline.types.messages import Message
from trunkline.types.usage import Usage

MESSAGES = [{"role": "user", "content": "Say hello"}]
RESPONSE = ModelResponse(
    text="Hello there!",
    model="gpt-4o-mini-2024-07-18",
    usage=Usage(input_tokens=9, output_tokens=12),
    response_id="chatcmpl-bench",
)


class InstantProvider(Provider):
    """Returns the same response at once, as a zero-latency upstream would."""

    name = "openai"

    async def complete(self, request: ModelRequest) -> ModelResponse:
        return RESPONSE


def bench_settings(store_url: str) -> Settings:
    return Settings.model_validate(
        {
            "deployments": {
                "bench": {
                    "provider": "openai",
                    "model": "gpt-4o-mini",
                    "rpm": 10_000_000,
                    "tpm": 10_000_000_000,
                    "max_concurrent": 1_000,
                }
            },
            "routes": {"bench": {"deployments": ["bench"], "max_attempts": 3}},
            "store": {"url": store_url},
        }
    )


async def per_call_us(
    call: Callable[[], Awaitable[object]], calls: int, settle: Callable[[], object] | None = None
) -> float:
    """Return the process CPU time per call in microseconds.

    `settle` finishes the background work the calls left (store commits,
    span sends) inside the measurement, so that it is charged to them and
    not to the variant measured next.
    """
    start = time.process_time()
    for _ in range(calls):
        await call()
    if settle is not None:
        settle()
    return (time.process_time() - start) / calls * 1e6


async def run(rounds: int, calls: int) -> None:
    settings = bench_settings(f"sqlite:///{tempfile.mkdtemp(prefix='trunkline-bench-')}/bench.db")
    provider = InstantProvider()
    request = ModelRequest(model="gpt-4o-mini", messages=(Message.user("Say hello"),), max_tokens=16)
    bare = Router(settings, providers={"bench": provider})
    recorded = Router(settings, providers={"bench": provider})
    recorder = recording(settings)

    async def provider_call() -> object:
        return await provider.complete(request)

    async def router_call() -> object:
        return await bare.complete(MESSAGES, route="bench", max_tokens=16)

    async def recorded_call() -> object:
        return await recorded.complete(MESSAGES, route="bench", max_tokens=16)

    sink = start_sink()
    exporter = OtlpExporter(sink.endpoint, max_queue=100_000)
    traced = Router(settings, providers={"bench": provider})

    async def traced_call() -> object:
        return await traced.complete(MESSAGES, route="bench", max_tokens=16)

    variants = {
        "provider": provider_call,
        "router": router_call,
        "router+store": recorded_call,
        "router+store+otlp": traced_call,
    }
    results: dict[str, list[float]] = {name: [] for name in variants}
    with recorder as active:

        def settle_store() -> None:
            active.writer.flush()

        def settle_both() -> None:
            active.writer.flush()
            exporter.flush(timeout_s=60)

        settles = {"router+store": settle_store, "router+store+otlp": settle_both}
        for _ in range(rounds + 1):
            for name, call in variants.items():
                if name == "router":
                    # Calls outside the recording block go to no exporter.
                    with _without_exporters():
                        sample = await per_call_us(call, calls)
                elif name == "router+store+otlp":
                    add_exporter(exporter)
                    sample = await per_call_us(call, calls, settle_both)
                    remove_exporter(exporter)
                else:
                    sample = await per_call_us(call, calls, settles.get(name))
                results[name].append(sample)
    # The first round warms caches and connections; it is left out.
    results = {name: samples[1:] for name, samples in results.items()}
    exporter.close()
    sink.stop()
    if exporter.dropped:
        print(f"warning: {exporter.dropped} spans were dropped", file=sys.stderr)
    floor = statistics.median(results["provider"])
    print(f"{rounds} rounds x {calls} calls per variant, median CPU per call")
    print(f"{'variant':<18} {'cpu us/call':>12} {'over provider':>14}")
    for name, samples in results.items():
        value = statistics.median(samples)
        print(f"{name:<18} {value:12.1f} {value - floor:+14.1f}")
    stored = statistics.median(results["router+store"]) - floor
    traced = statistics.median(results["router+store+otlp"]) - floor
    print(f"OTLP export adds {traced / stored - 1:+.1%} to the cost with the store")


@contextmanager
def _without_exporters() -> Iterator[None]:
    """Detach the registered exporters for a block, so a call's record is built but not stored."""
    saved = list(exporters())
    for exporter in saved:
        remove_exporter(exporter)
    try:
        yield
    finally:
        for exporter in saved:
            add_exporter(exporter)


def main() -> None:
    parser = argparse.ArgumentParser(description="Trunkline's own CPU per call, without HTTP.")
    parser.add_argument("--rounds", type=int, default=7, help="Alternating rounds per variant.")
    parser.add_argument("--calls", type=int, default=3000, help="Calls per variant per round.")
    arguments = parser.parse_args()
    asyncio.run(run(arguments.rounds, arguments.calls))


if __name__ == "__main__":
    main()
