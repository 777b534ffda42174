"""A BM25 vote first and the local model on the rest, on BANKING77, as a user would run it.

Splits BANKING77's train.csv at random (seeded) into three disjoint parts:
held-out rows, development rows, and memory rows that retrieval searches.
In a scratch folder it then runs:

1. On the development rows, the cascade at each threshold, and the model
   on every row for reference::

       trunkline eval examples/intent-triage/cascade.toml --data dev.csv \\
           --param memory=memory.csv --param vote_threshold=T --json
       trunkline eval examples/intent-triage --data dev.csv \\
           --param memory=memory.csv --param neighbours=10 --json

   The chosen threshold is the one above 0 (threshold 0 is the vote alone)
   with the best development accuracy. Ties go to the one that sends fewer
   rows to the model.
2. On the held-out rows: the vote alone (threshold 0), the model alone
   (examples/intent-triage with the cascade's 10 neighbours), and the cascade
   at the chosen threshold and at each of `--heldout-thresholds`. Then
   `trunkline compare` of the model alone with the chosen cascade gives the
   paired difference in accuracy.

The vote's confidence is the top intent's share of the summed BM25 scores of
the neighbours. At threshold 0 the vote settles every row except those that
share no word with memory, which have no vote and still go to the model. At
1.0 the vote settles a row only when every neighbour agrees.

Each experiment's run id comes from `eval --json`. The share of rows each
stage answered comes from that run's summary in `trunkline runs --json`, and
the count of model calls from `trunkline costs --by run --json`.

The local model's built-in price is $0, so costs read $0 unless
--input-price and --output-price set one. It exits with a message, and
status 0, when the BANKING77 files are missing.

    python benchmarks/banking77_cascade.py [--rows 150] [--dev-rows 150] [--seed 7]
        [--thresholds 0,0.3,0.5,0.7,0.9,1.0] [--input-price USD] [--output-price USD]
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "banking77"
EXAMPLE = ROOT / "examples" / "intent-triage"
CASCADE = EXAMPLE / "cascade.toml"
# The cascade's retrieval default; the model-alone runs use it too, so that
# every run shows the model the same neighbours.
NEIGHBOURS = 10
# The model of the built-in `local` deployment (trunkline.config.LOCAL_MODEL).
LOCAL_MODEL = "smollm2-135m-instruct"


@dataclass
class Experiment:
    """One `trunkline eval` result, with its run's cascade summary and call count."""

    label: str
    result: dict[str, Any]
    seconds: float
    cascade: dict[str, Any] | None = None
    model_calls: int = 0

    @property
    def accuracy(self) -> dict[str, float]:
        return self.result["scores"]["normalised"]

    @property
    def run_id(self) -> str:
        return self.result["run_ids"][0]

    @property
    def model_rows(self) -> int:
        """Return the rows on which the model ran: every row when there is no cascade."""
        if self.cascade is None:
            return self.result["rows"]
        return self.cascade["last_stage_rows"]

    @property
    def tokens(self) -> int:
        return self.result["input_tokens"] + self.result["output_tokens"]


def split(folder: Path, rows: int, dev_rows: int, seed: int) -> tuple[Path, Path, Path]:
    """Write heldout.csv, dev.csv and memory.csv, disjoint parts of a seeded shuffle of train."""
    with (DATA / "train.csv").open(newline="", encoding="utf-8") as file:
        records = list(csv.DictReader(file))
    if rows + dev_rows >= len(records):
        sys.exit(
            f"--rows {rows} and --dev-rows {dev_rows} leave no memory rows out of "
            f"{len(records)} in train.csv; lower them"
        )
    random.Random(seed).shuffle(records)
    parts = {
        "heldout.csv": records[:rows],
        "dev.csv": records[rows : rows + dev_rows],
        "memory.csv": records[rows + dev_rows :],
    }
    for name, part in parts.items():
        with (folder / name).open("w", newline="", encoding="utf-8") as file:
            writer = csv.DictWriter(file, fieldnames=["text", "category"])
            writer.writeheader()
            writer.writerows({"text": row["text"], "category": row["category"]} for row in part)
    return folder / "heldout.csv", folder / "dev.csv", folder / "memory.csv"


def write_prices(folder: Path, input_price: float, output_price: float) -> None:
    """Price the local model in the scratch folder's trunkline.toml, in USD per million tokens."""
    (folder / "trunkline.toml").write_text(
        f'[prices."{LOCAL_MODEL}"]\n'
        f"input_per_mtok = {input_price!r}\n"
        f"output_per_mtok = {output_price!r}\n"
    )


def trunkline(folder: Path, timeout_s: float, *arguments: str) -> str:
    """Run one trunkline command in `folder` and return its stdout; exit on failure or timeout."""
    command = [sys.executable, "-m", "trunkline", *arguments]
    try:
        completed = subprocess.run(
            command, cwd=folder, capture_output=True, text=True, check=False, timeout=timeout_s
        )
    except subprocess.TimeoutExpired:
        subcommand = " ".join(arguments[:2])
        sys.exit(f"trunkline {subcommand} timed out after {timeout_s:.0f} s; raise --timeout")
    if completed.returncode != 0:
        command_line = " ".join(arguments)
        status = completed.returncode
        sys.exit(f"trunkline {command_line} failed (exit {status}):\n{completed.stderr}")
    return completed.stdout


def evaluate(
    folder: Path,
    timeout_s: float,
    label: str,
    workflow: Path,
    data: Path,
    memory: Path,
    *params: str,
) -> Experiment:
    arguments = ["eval", str(workflow), "--data", str(data), "--param", f"memory={memory}"]
    for param in params:
        arguments += ["--param", param]
    started = time.perf_counter()
    stdout = trunkline(folder, timeout_s, *arguments, "--name", label, "--json")
    experiment = Experiment(label, json.loads(stdout), time.perf_counter() - started)
    print(f"  {label}: {experiment.seconds:,.0f} s", flush=True)
    return experiment


def attach_run_figures(folder: Path, timeout_s: float, experiments: list[Experiment]) -> None:
    """Fill each experiment's cascade summary and model call count from the store."""
    limit = str(len(experiments) + 10)
    runs_output = trunkline(folder, timeout_s, "runs", "--limit", limit, "--json")
    summaries = {}
    for line in runs_output.splitlines():
        run = json.loads(line)
        summaries[run["run_id"]] = run["summary"] or {}
    costs_output = trunkline(folder, timeout_s, "costs", "--by", "run", "--json")
    calls = {}
    for line in costs_output.splitlines():
        row = json.loads(line)
        calls[row["key"]] = row["calls"]
    for experiment in experiments:
        if experiment.run_id not in summaries:
            sys.exit(f"run {experiment.run_id} of {experiment.label} not found by `trunkline runs`")
        experiment.cascade = summaries[experiment.run_id].get("cascades", {}).get("answer")
        experiment.model_calls = calls.get(experiment.run_id, 0)


def choose_threshold(sweep: dict[float, Experiment]) -> float:
    """Return the threshold above 0 with the best accuracy; on a tie, the one with fewer model rows."""

    def rank(threshold: float) -> tuple[float, int]:
        return -sweep[threshold].accuracy["mean"], sweep[threshold].model_rows

    return min((threshold for threshold in sweep if threshold > 0), key=rank)


def format_cost(value: float | None) -> str:
    return "unknown" if value is None else f"${value:.6f}"


def print_table(title: str, experiments: list[Experiment]) -> None:
    print(f"\n{title}")
    header = (
        f"{'':<26} {'accuracy [95% interval]':<25} {'to model':>9} {'calls':>6} "
        f"{'tokens':>9} {'cost':>10} {'p50 ms':>7} {'wall s':>7}"
    )
    print(header)
    for experiment in experiments:
        score = experiment.accuracy
        rows = experiment.result["rows"]
        interval = f"{score['mean']:.3f} [{score['ci_low']:.3f}, {score['ci_high']:.3f}]"
        latency = experiment.result["latency_p50_ms"]
        print(
            f"{experiment.label:<26} {interval:<25} {experiment.model_rows / rows:>9.0%} "
            f"{experiment.model_calls:>6} {experiment.tokens:>9,} "
            f"{format_cost(experiment.result['cost_usd']):>10} "
            f"{'-' if latency is None else f'{latency:,.0f}':>7} {experiment.seconds:>7.0f}"
        )


def print_savings(cascade: Experiment, model: Experiment, comparison: dict[str, Any]) -> None:
    """Print the cascade's savings against the model alone: measured, then as its run estimates."""
    summary = cascade.cascade
    assert summary is not None
    answered = ", ".join(
        f"{stage} {summary['share'][stage]:.0%} ({count})"
        for stage, count in summary["answered"].items()
    )
    print(f"\nCascade at threshold {summary['threshold']:g} on {summary['rows']} held-out rows")
    print(f"  answered by: {answered}")

    fewer_calls = 1 - cascade.model_calls / max(model.model_calls, 1)
    print(
        f"  model calls: {cascade.model_calls} against {model.model_calls} "
        f"for the model alone ({fewer_calls:.0%} fewer)"
    )
    fewer_tokens = 1 - cascade.tokens / max(model.tokens, 1)
    print(
        f"  tokens: {cascade.tokens:,} against {model.tokens:,} "
        f"for the model alone ({fewer_tokens:.0%} fewer)"
    )

    print(
        f"  cost: {format_cost(cascade.result['cost_usd'])} against "
        f"{format_cost(model.result['cost_usd'])} for the model alone"
    )
    if summary["tokens_if_last_only"] is None:
        print("  the run summary has no estimate for the model alone: no row reached the model")
    else:
        print(
            f"  the run summary's estimate for the model alone: "
            f"~{summary['tokens_if_last_only']:,.0f} tokens, "
            f"{format_cost(summary['cost_if_last_only_usd'])}, "
            f"saved {format_cost(summary['saved_usd'])}"
        )

    interval = f"[{comparison['ci_low']:+.3f}, {comparison['ci_high']:+.3f}]"
    print(
        f"  accuracy, cascade - model alone, paired: {comparison['difference']:+.3f} {interval} "
        f"over {comparison['rows']} rows; cascade wins {comparison['wins']}, "
        f"ties {comparison['ties']}, loses {comparison['losses']}"
    )


def parse_thresholds(text: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        sys.exit(f"--thresholds expects numbers separated by commas, got {text!r}")
    if not values or any(not 0.0 <= value <= 1.0 for value in values):
        sys.exit(f"--thresholds expects numbers from 0 to 1, got {text!r}")
    return sorted(set(values))


def main() -> None:
    parser = argparse.ArgumentParser(
        description="Sweep and measure the intent-triage cascade on BANKING77."
    )
    parser.add_argument("--rows", type=int, default=150, help="Held-out rows.")
    parser.add_argument(
        "--dev-rows", type=int, default=150, help="Development rows for the threshold sweep."
    )
    parser.add_argument("--seed", type=int, default=7, help="Seed of the random split.")
    parser.add_argument(
        "--thresholds",
        default="0,0.3,0.4,0.5,0.7,0.9,1.0",
        help="Comma-separated vote thresholds from 0 to 1 to sweep on the development rows.",
    )
    parser.add_argument(
        "--heldout-thresholds",
        default="0.3,0.5,0.7",
        help="Comma-separated thresholds to run on the held-out rows besides the chosen one.",
    )
    parser.add_argument(
        "--input-price", type=float, help="Local model input price, USD per million tokens."
    )
    parser.add_argument(
        "--output-price", type=float, help="Local model output price, USD per million tokens."
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=1200.0,
        help="Seconds each trunkline command may take before the script stops.",
    )
    arguments = parser.parse_args()
    thresholds = parse_thresholds(arguments.thresholds)
    heldout_thresholds = parse_thresholds(arguments.heldout_thresholds)
    if not any(threshold > 0 for threshold in thresholds):
        sys.exit("--thresholds needs at least one threshold above 0, which is the vote alone")
    if arguments.rows < 1 or arguments.dev_rows < 1:
        sys.exit("--rows and --dev-rows must be at least 1")
    if (arguments.input_price is None) != (arguments.output_price is None):
        sys.exit("set both --input-price and --output-price, or neither")
    if not (DATA / "train.csv").is_file():
        print(f"BANKING77 data not found in {DATA}; nothing to measure")
        return

    started = time.perf_counter()
    folder = Path(tempfile.mkdtemp(prefix="trunkline-b77-cascade-"))
    heldout, dev, memory = split(folder, arguments.rows, arguments.dev_rows, arguments.seed)
    if arguments.input_price is not None:
        write_prices(folder, arguments.input_price, arguments.output_price)
    timeout_s = arguments.timeout
    print(f"scratch folder {folder}; seed {arguments.seed}")

    print(f"development sweep on {arguments.dev_rows} rows:", flush=True)
    neighbours = f"neighbours={NEIGHBOURS}"
    sweep = {}
    for threshold in thresholds:
        label = f"dev cascade {threshold:g}"
        sweep[threshold] = evaluate(
            folder, timeout_s, label, CASCADE, dev, memory, f"vote_threshold={threshold}"
        )
    dev_model = evaluate(folder, timeout_s, "dev model alone", EXAMPLE, dev, memory, neighbours)
    attach_run_figures(folder, timeout_s, [*sweep.values(), dev_model])
    chosen = choose_threshold(sweep)

    print(f"held-out runs on {arguments.rows} rows:", flush=True)
    vote = evaluate(
        folder, timeout_s, "vote alone (threshold 0)", CASCADE, heldout, memory, "vote_threshold=0"
    )
    model = evaluate(folder, timeout_s, "model alone", EXAMPLE, heldout, memory, neighbours)
    cascades = {}
    for threshold in sorted({chosen, *(value for value in heldout_thresholds if value > 0)}):
        label = f"cascade {threshold:g}" + (" (chosen)" if threshold == chosen else "")
        cascades[threshold] = evaluate(
            folder, timeout_s, label, CASCADE, heldout, memory, f"vote_threshold={threshold}"
        )
    cascade = cascades[chosen]
    held_out = [vote, model, *cascades.values()]
    attach_run_figures(folder, timeout_s, held_out)

    dev_title = f"Development rows ({arguments.dev_rows}): threshold sweep"
    print_table(dev_title, [*sweep.values(), dev_model])
    print(
        f"\nchosen threshold: {chosen:g} (best development accuracy above 0, ties to fewer model rows)"
    )
    print_table(f"Held-out rows ({arguments.rows})", held_out)
    compared = trunkline(
        folder,
        timeout_s,
        "compare",
        model.result["experiment_id"],
        cascade.result["experiment_id"],
        "--json",
    )
    print_savings(cascade, model, json.loads(compared))
    print(f"\nwall time {time.perf_counter() - started:,.0f} s")


if __name__ == "__main__":
    main()
