"""The full BANKING77 run of the intent-triage example: accuracy, speed and memory.

Runs the main job as a user would, in a subprocess from the repository root:

    trunkline run examples/intent-triage --data ../shared/data/banking77/test.csv \\
        --param memory=../shared/data/banking77/train.csv --json

and prints the run's summary with its wall time, rows per second and the
peak resident memory of the process. Extra arguments (such as ``--limit 300``)
are passed on to ``trunkline run``. It exits with a message, and status 0,
when the BANKING77 files are missing.

    python benchmarks/banking77_run.py [--limit N] [--concurrency N]
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "banking77"


def main() -> None:
    if not (DATA / "test.csv").is_file():
        print(f"BANKING77 data not found in {DATA}; nothing to measure")
        return
    command = [
        sys.executable,
        "-m",
        "trunkline",
        "run",
        "examples/intent-triage",
        "--data",
        str(DATA / "test.csv"),
        "--param",
        f"memory={DATA / 'train.csv'}",
        "--json",
        *sys.argv[1:],
    ]
    started = time.perf_counter()
    completed = subprocess.run(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    wall_s = time.perf_counter() - started
    if completed.returncode != 0:
        sys.exit(f"trunkline run failed with status {completed.returncode}")
    summary = json.loads(completed.stdout)
    # ru_maxrss of children is in KiB on Linux.
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps(summary, indent=2))
    print(f"wall time        {wall_s:,.0f} s")
    print(f"rows per second  {summary['rows'] / wall_s:.2f}")
    print(f"peak memory      {peak_mib:,.0f} MiB (max RSS of the trunkline process)")


if __name__ == "__main__":
    main()
