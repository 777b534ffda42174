"""The improvement loop on BANKING77, then the current prompt against the improved one on held-out rows.

Splits BANKING77's train.csv at random (seeded) into three parts: 150
held-out rows, `--labelled` rows for the loop, and the rest as the memory
that retrieval searches. The loop splits its rows again into development,
example and held-out rows of its own. No scored row is in the memory, so
none can be retrieved as its own neighbour. Then, in a scratch folder, as
a user would:

    trunkline prompts push examples/intent-triage/prompts
    trunkline improve examples/intent-triage --data labelled.csv --prompt choose=intent-triage@N ...
    trunkline eval examples/intent-triage --data heldout.csv ...                         # A: the template files
    trunkline eval examples/intent-triage --data heldout.csv --prompt choose=BEST ...    # B: the loop's best
    trunkline compare A B --fail-if-worse 0.02

and prints the loop's candidates, both experiments and the comparison.
It exits with a message, and status 0, when the BANKING77 files are missing.

With `--cascade`, the loop improves the cascade workflow
(`examples/intent-triage/cascade.toml`, a retrieval vote before the model)
and may also move its threshold; B is then that workflow with the loop's
best prompt and threshold, and A is still the plain workflow.

    python benchmarks/banking77_improve.py [--labelled 200] [--max-rounds 3] [--cascade] [--seed 7]
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "banking77"
WORKFLOW = str(ROOT / "examples" / "intent-triage")
HELDOUT_ROWS = 150


def split(folder: Path, labelled: int, seed: int) -> dict[str, Path]:
    with (DATA / "train.csv").open(newline="") as file:
        records = [{"text": row["text"], "category": row["category"]} for row in csv.DictReader(file)]
    random.Random(seed).shuffle(records)
    parts = {
        "heldout": records[:HELDOUT_ROWS],
        "labelled": records[HELDOUT_ROWS : HELDOUT_ROWS + labelled],
        "memory": records[HELDOUT_ROWS + labelled :],
    }
    paths = {}
    for name, rows in parts.items():
        paths[name] = folder / f"{name}.csv"
        with paths[name].open("w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=["text", "category"])
            writer.writeheader()
            writer.writerows(rows)
    return paths


def trunkline(folder: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    completed = subprocess.run(
        [sys.executable, "-m", "trunkline", *arguments], cwd=folder, capture_output=True, text=True, check=False
    )
    if completed.returncode not in (0, 1):
        sys.exit(f"trunkline {arguments[0]} failed (exit {completed.returncode}): {completed.stderr}")
    return completed


def evaluate(folder: Path, label: str, workflow: str, heldout: Path, memory: Path, *extra: str) -> str:
    result = json.loads(
        trunkline(folder, "eval", workflow, "--data", str(heldout), "--param", f"memory={memory}", *extra, "--json").stdout
    )
    score = result["scores"]["normalised"]
    print(
        f"{label}: accuracy {score['mean']:.3f} [{score['ci_low']:.3f}, {score['ci_high']:.3f}], "
        f"input tokens {result['input_tokens']:,}, latency p50 {result['latency_p50_ms']:,.0f} ms"
    )
    return result["experiment_id"]


def main() -> None:
    parser = argparse.ArgumentParser(description="Run trunkline improve on BANKING77 and compare its result.")
    parser.add_argument("--labelled", type=int, default=200, help="Rows the loop splits and scores.")
    parser.add_argument("--max-rounds", type=int, default=3, help="Rounds of the loop.")
    parser.add_argument("--adapt", default=None, help="Adaptations the loop tries; default: rewrite,few_shot, and threshold with --cascade.")
    parser.add_argument("--cascade", action="store_true", help="Improve the cascade workflow instead of the plain one.")
    parser.add_argument("--seed", type=int, default=7, help="Seed of the splits.")
    arguments = parser.parse_args()
    if not (DATA / "train.csv").is_file():
        print(f"BANKING77 data not found in {DATA}; nothing to measure")
        return

    improved = str(ROOT / "examples" / "intent-triage" / "cascade.toml") if arguments.cascade else WORKFLOW
    adapt = arguments.adapt or ("rewrite,few_shot,threshold" if arguments.cascade else "rewrite,few_shot")
    folder = Path(tempfile.mkdtemp(prefix="trunkline-b77-improve-"))
    paths = split(folder, arguments.labelled, arguments.seed)
    pushed = trunkline(folder, "prompts", "push", str(ROOT / "examples" / "intent-triage" / "prompts"))
    start = pushed.stdout.split()[0]
    started = time.perf_counter()
    loop = json.loads(
        trunkline(
            folder, "improve", improved, "--data", str(paths["labelled"]), "--prompt", f"choose={start}",
            "--param", f"memory={paths['memory']}", "--target", "0.95", "--budget", "1",
            "--max-rounds", str(arguments.max_rounds), "--adapt", adapt, "--seed", str(arguments.seed),
            "--json",
        ).stdout
    )
    print(
        f"improve: {loop['split']['development']} development rows, {loop['split']['heldout']} held out, "
        f"{loop['split']['pool']} for examples; stopped by {loop['stop_reason']} after {loop['rounds']} "
        f"rounds in {time.perf_counter() - started:,.0f} s"
    )
    for candidate in loop["candidates"]:
        outcome = candidate["rejected"] or f"{candidate['score']:.3f} [{candidate['ci_low']:.3f}, {candidate['ci_high']:.3f}]"
        print(f"  #{candidate['number']} round {candidate['round']} {candidate['description']}: {outcome}")
    print(f"  {loop['verdict']}")
    best = next(candidate for candidate in loop["candidates"] if candidate["number"] == loop["best"])
    settings = [argument for name, value in best["params"].items() for argument in ("--param", f"{name}={value}")]

    a = evaluate(folder, "A (plain workflow, template files)", WORKFLOW, paths["heldout"], paths["memory"])
    b = evaluate(
        folder, f"B ({best['setting']})", improved, paths["heldout"], paths["memory"],
        "--prompt", f"choose={best['prompt']}", *settings,
    )
    compared = trunkline(folder, "compare", a, b, "--fail-if-worse", "0.02")
    print(compared.stdout)
    print(f"gate exit status {compared.returncode}; scratch folder {folder}")


if __name__ == "__main__":
    main()
