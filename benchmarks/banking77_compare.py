"""Two retrieval settings of intent triage compared on held-out BANKING77 rows, as a user would.

Splits BANKING77's train.csv at random (seeded) into held-out rows and
memory rows that retrieval searches, then runs, in a scratch folder:

    trunkline eval examples/intent-triage --data heldout.csv --param memory=memory.csv
    trunkline eval ... --param neighbours=4 --param examples=2
    trunkline compare A B --fail-if-worse 0.02

and prints each experiment's accuracy, interval, tokens and latency, then
the comparison. It exits with a message, and status 0, when the BANKING77
files are missing.

    python benchmarks/banking77_compare.py [--rows 150] [--seed 7]
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "banking77"
SETTINGS = {
    "A (8 neighbours, 4 examples)": [],
    "B (4 neighbours, 2 examples)": ["--param", "neighbours=4", "--param", "examples=2"],
}


def split(folder: Path, rows: int, seed: int) -> tuple[Path, Path]:
    with (DATA / "train.csv").open(newline="") as file:
        records = list(csv.DictReader(file))
    random.Random(seed).shuffle(records)
    heldout, memory = folder / "heldout.csv", folder / "memory.csv"
    for path, part in ((heldout, records[:rows]), (memory, records[rows:])):
        with path.open("w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=["text", "category"])
            writer.writeheader()
            writer.writerows(part)
    return heldout, memory


def trunkline(folder: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trunkline", *arguments], cwd=folder, capture_output=True, text=True, check=False
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="Compare two intent-triage settings on BANKING77.")
    parser.add_argument("--rows", type=int, default=150, help="Held-out rows.")
    parser.add_argument("--seed", type=int, default=7, help="Seed of the random split.")
    arguments = parser.parse_args()
    if not (DATA / "train.csv").is_file():
        print(f"BANKING77 data not found in {DATA}; nothing to measure")
        return

    folder = Path(tempfile.mkdtemp(prefix="trunkline-b77-"))
    heldout, memory = split(folder, arguments.rows, arguments.seed)
    workflow = str(ROOT / "examples" / "intent-triage")
    ids = []
    for label, extra in SETTINGS.items():
        completed = trunkline(
            folder, "eval", workflow, "--data", str(heldout), "--param", f"memory={memory}", *extra, "--json"
        )
        if completed.returncode != 0:
            sys.exit(f"eval failed: {completed.stderr}")
        result = json.loads(completed.stdout)
        score = result["scores"]["normalised"]
        ids.append(result["experiment_id"])
        print(
            f"{label}: accuracy {score['mean']:.3f} [{score['ci_low']:.3f}, {score['ci_high']:.3f}], "
            f"input tokens {result['input_tokens']:,}, latency p50 {result['latency_p50_ms']:,.0f} ms"
        )
    compared = trunkline(folder, "compare", *ids, "--fail-if-worse", "0.02", "--json")
    comparison = json.loads(compared.stdout)
    print(
        f"B - A {comparison['difference']:+.3f} [{comparison['ci_low']:+.3f}, {comparison['ci_high']:+.3f}] "
        f"over {comparison['rows']} rows; B wins {comparison['wins']}, ties {comparison['ties']}, "
        f"loses {comparison['losses']}; outputs identical on {comparison['similarity']['exact']:.0%} of rows; "
        f"gate at 0.02 {'fails' if comparison['gate']['failed'] else 'passes'} (exit {compared.returncode})"
    )


if __name__ == "__main__":
    main()
