"""Local model speed by thread count, on an idle machine and beside a busy process.

llama.cpp's generation threads wait for each other at every token, so one
thread descheduled by another busy process can stall the rest. This script
times the same short JSON-schema call with ``n_threads`` 1 and 2, first with
the machine otherwise idle and then with one CPU-bound neighbour process,
which stops by itself after ``--max-seconds``.

    python benchmarks/local_threads.py --calls 8
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import time

from trunkline.providers.local import LocalProvider
from trunkline.types import Message, ModelRequest

SCHEMA = {
    "type": "object",
    "properties": {
        "intent": {"enum": ["card_arrival", "card_delivery_estimate", "lost_or_stolen_card"]}
    },
    "required": ["intent"],
}
REQUEST = ModelRequest(
    model="smollm2-135m-instruct",
    messages=(
        Message.user(
            'Customer message: "my card has not arrived yet, it has been a week". '
            "Choose the intent. Answer in JSON."
        ),
    ),
    output_schema=SCHEMA,
    max_tokens=40,
)


def spin(seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pass


async def seconds_per_call(threads: int, calls: int) -> float:
    provider = LocalProvider("smollm2-135m-instruct", {"n_threads": threads})
    await provider.complete(REQUEST)  # loads the model
    timings = []
    for _ in range(calls):
        start = time.perf_counter()
        await provider.complete(REQUEST)
        timings.append(time.perf_counter() - start)
    return statistics.median(timings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=8, help="Timed calls per setting.")
    parser.add_argument("--max-seconds", type=float, default=120, help="Lifetime of the busy process.")
    arguments = parser.parse_args()
    print(f"{'neighbour':<10} {'n_threads':>9} {'s/call (median)':>16}")
    for busy in (False, True):
        neighbour = None
        if busy:
            neighbour = multiprocessing.Process(target=spin, args=(arguments.max_seconds,))
            neighbour.start()
        try:
            for threads in (1, 2):
                median = asyncio.run(seconds_per_call(threads, arguments.calls))
                print(f"{'busy' if busy else 'idle':<10} {threads:>9} {median:>16.3f}")
        finally:
            if neighbour is not None:
                neighbour.terminate()
                neighbour.join()


if __name__ == "__main__":
    main()
