"""Retrieval alone on BANKING77: BM25 against vector memory, as the intent-triage example runs them.

For each message of BANKING77's test.csv, the example's `retrieve` step finds
the nearest labelled messages of a memory file and `vote` picks the intent
with the largest summed score. The intent that vote picks is compared with
the message's category, once with ``retriever=bm25`` and once with
``retriever=vectors`` (all-MiniLM-L6-v2 in an in-memory sqlite-vec index).
No model is called. The memory is the example's memory.csv (5 messages per
intent) by default, or all of train.csv with ``--memory train``.

It prints each retriever's accuracy with a 95% Wilson interval, how often
the right intent is among the candidates shown to the model, the time to
build the index, and the median time per query. It exits with a message,
and status 0, when the BANKING77 files are missing.

    python benchmarks/banking77_retrieval.py [--memory example|train] [--rows 3080]
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "banking77"
EXAMPLE = ROOT / "examples" / "intent-triage"


def wilson(successes: int, total: int, z: float = 1.96) -> tuple[float, float]:
    centre = (successes + z * z / 2) / (total + z * z)
    half = z * math.sqrt(successes * (total - successes) / total + z * z / 4) / (total + z * z)
    return centre - half, centre + half


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--memory", choices=["example", "train"], default="example")
    parser.add_argument("--rows", type=int, default=3080, help="test messages to classify, from the top of test.csv")
    parser.add_argument("--neighbours", type=int, default=8)
    parser.add_argument("--examples", type=int, default=4, help="candidates counted as shown to the model")
    arguments = parser.parse_args()
    if not (DATA / "test.csv").is_file():
        print(f"BANKING77 is not at {DATA}; nothing to measure")
        return

    sys.path.insert(0, str(EXAMPLE))
    import tools

    memory = EXAMPLE / "memory.csv" if arguments.memory == "example" else DATA / "train.csv"
    with (DATA / "test.csv").open(newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))[: arguments.rows]
    print(f"{len(rows)} test messages, memory {memory.name} ({sum(1 for _ in memory.open()) - 1} labelled messages), "
          f"{arguments.neighbours} neighbours", flush=True)

    print(f"{'retriever':<10} {'accuracy':>9} {'95% interval':>16} {'right in top 4':>15} {'index build':>12} {'per query':>10}")
    for retriever in ("bm25", "vectors"):
        started = time.perf_counter()
        tools.retrieve(rows[0]["text"], str(memory), arguments.neighbours, arguments.examples, retriever)
        build = time.perf_counter() - started
        right = shown = 0
        durations = []
        for row in rows:
            started = time.perf_counter()
            found = tools.retrieve(row["text"], str(memory), arguments.neighbours, arguments.examples, retriever)
            chosen = tools.vote(found["candidates"], found["votes"])["answer"]["intent"]
            durations.append(time.perf_counter() - started)
            right += chosen == row["category"]
            shown += row["category"] in found["candidates"][: arguments.examples]
        low, high = wilson(right, len(rows))
        print(f"{retriever:<10} {right / len(rows):9.3f} {f'{low:.3f}-{high:.3f}':>16} {shown / len(rows):15.3f} "
              f"{build:11.2f}s {statistics.median(durations) * 1000:8.2f}ms", flush=True)


if __name__ == "__main__":
    main()
