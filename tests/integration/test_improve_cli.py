"""`trunkline improve` end to end in a subprocess, over scripted fake models."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from integration.cli import run_trunkline
from integration.test_cli import write_project

# The route's first deployment always replies no and the second always yes,
# so moving the step to the second deployment is the one change that helps.
# Neither reply is a usable rewrite, so every rewrite is rejected.
CONFIG = """
default_route = "main"

[deployments.says-no]
provider = "fake"
model = "scripted-model"
options = { mode = "scripted", replies = ['{"label": "no"}'] }

[deployments.says-yes]
provider = "fake"
model = "scripted-model"
options = { mode = "scripted", replies = ['{"label": "yes"}'] }

[routes.main]
deployments = ["says-no", "says-yes"]

[prices.scripted-model]
input_per_mtok = 1.0
output_per_mtok = 4.0
"""

# Every fifth row expects no, so says-no scores about 0.2 and says-yes about 0.8.
ROWS = "".join(f"question {index},{'yes' if index % 5 else 'no'}\n" for index in range(30))
IMPROVE = (
    "improve", "flow", "--data", "flow/rows.csv",
    "--target", "0.75", "--budget", "5", "--pool", "4",
)  # fmt: skip


def flat(text: str) -> str:
    """Join the lines that the console wrapped, so that a message reads as one line."""
    return " ".join(text.split())


@pytest.fixture
def project(tmp_path: Path) -> Path:
    write_project(tmp_path, ROWS)
    (tmp_path / "trunkline.toml").write_text(CONFIG)
    return tmp_path


def test_improve_json_output(project: Path) -> None:
    completed = run_trunkline(project, *IMPROVE, "--max-rounds", "2", "--json")
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout)
    expected_keys = {
        "loop_id", "trace_id", "stop_reason", "rounds", "spent_usd", "unpriced_calls", "split",
        "baseline", "best", "candidates", "heldout", "labelled", "verdict", "notes",
    }
    assert set(result) == expected_keys
    assert result["loop_id"].startswith("imp_")
    assert re.fullmatch(r"[0-9a-f]{32}", result["trace_id"])
    assert result["stop_reason"] == "target"
    assert result["rounds"] == 1
    assert 0 < result["spent_usd"] < 5
    assert result["unpriced_calls"] == 0
    assert result["split"] == {"pool": 4, "development": 17, "heldout": 9}

    candidates = {candidate["number"]: candidate for candidate in result["candidates"]}
    candidate_keys = {
        "number", "round", "adaptation", "description", "setting", "prompt", "route", "params",
        "parent", "score", "ci_low", "ci_high", "cost_usd", "experiment_id", "rejected",
    }
    assert all(set(candidate) == candidate_keys for candidate in candidates.values())
    baseline = candidates[result["baseline"]]
    best = candidates[result["best"]]
    assert baseline["adaptation"] == "baseline"
    assert baseline["setting"] == "yes-no/ask@1"
    assert best["adaptation"] == "model"
    assert best["setting"] == "yes-no/ask@1, route says-yes"
    assert best["parent"] == baseline["number"]
    assert best["score"] > baseline["score"]
    assert best["ci_low"] <= best["score"] <= best["ci_high"]
    assert best["experiment_id"].startswith("exp_")

    rewrites = [
        candidate for candidate in candidates.values() if candidate["adaptation"] == "rewrite"
    ]
    assert len(rewrites) == 1
    assert rewrites[0]["rejected"].startswith("invalid_output")
    assert rewrites[0]["score"] is None

    # A change of deployment keeps the prompt version, so no label moves.
    assert result["labelled"] is None
    assert result["heldout"]["rows"] == 9
    assert "keeps prompt yes-no/ask@1" in result["verdict"]


def test_improve_human_output(project: Path) -> None:
    # A wide console keeps each table cell on one line.
    completed = run_trunkline(project, *IMPROVE, env={"COLUMNS": "200"})
    assert completed.returncode == 0, completed.stderr
    output = flat(completed.stdout)
    assert "Stopped: the target was reached after 1 round(s)" in output
    assert "deployment says-yes instead of says-no" in output
    found = re.search(r"The whole loop: trunkline trace ([0-9a-f]{32})", output)
    assert found is not None, output

    trace = run_trunkline(project, "trace", found.group(1), "--json")
    assert trace.returncode == 0, trace.stderr
    assert "improve yes-no" in trace.stdout


def test_improve_reports_no_candidates(project: Path) -> None:
    # Only rewrites, and every one is rejected: nothing is left to try.
    completed = run_trunkline(project, *IMPROVE, "--adapt", "rewrite", "--json")
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout)
    assert result["stop_reason"] == "no_candidates"
    assert result["best"] == result["baseline"]
    assert result["split"]["pool"] == 0

    table = run_trunkline(project, *IMPROVE, "--adapt", "rewrite")
    assert "Stopped: nothing new was left to try after 1 round(s)" in flat(table.stdout)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (("--target", "1.5"), "--target is a score from 0 to 1, got 1.5"),
        (("--budget", "0"), "--budget must be a finite amount above 0 USD, got 0.0"),
        (("--budget", "-2"), "--budget must be a finite amount above 0 USD, got -2.0"),
        (("--adapt", "telepathy"), "unknown adaptation telepathy"),
    ],
)
def test_improve_rejects_bad_options(
    project: Path, arguments: tuple[str, ...], message: str
) -> None:
    completed = run_trunkline(project, *IMPROVE, *arguments)
    assert completed.returncode == 2
    assert message in flat(completed.stderr)
    assert "Traceback" not in completed.stderr


def test_improve_rejects_too_few_rows(project: Path) -> None:
    (project / "two.csv").write_text("text,gold\nis it,yes\nis it not,no\n")
    completed = run_trunkline(
        project, "improve", "flow", "--data", "two.csv", "--target", "0.9", "--budget", "1"
    )
    assert completed.returncode == 2
    assert "two.csv has 2 rows, which leaves 1 to score candidates" in flat(completed.stderr)


def test_improve_needs_step_choice(project: Path) -> None:
    workflow = project / "flow" / "workflow.toml"
    second_step = (
        '\n[[steps]]\nname = "check"\nkind = "model"\nprompt = "prompt.jinja"\noutput = "checked"\n'
    )
    workflow.write_text(workflow.read_text() + second_step)
    completed = run_trunkline(project, *IMPROVE)
    assert completed.returncode == 2
    message = flat(completed.stderr)
    assert "has 2 model steps (ask, check); name the one to improve with --step" in message


def test_improve_messages_template_needs_prompt(project: Path) -> None:
    flow = project / "flow"
    (flow / "chat.jinja").write_text('[{"role": "user", "content": {{ question | tojson }}}]')
    workflow = flow / "workflow.toml"
    text = workflow.read_text().replace('prompt = "prompt.jinja"', 'messages = "chat.jinja"')
    workflow.write_text(text)
    completed = run_trunkline(project, *IMPROVE)
    assert completed.returncode == 2
    message = flat(completed.stderr)
    assert "renders its messages from chat.jinja" in message
    assert "trunkline prompts push DIR" in message
    assert "--prompt ask=NAME@VERSION" in message
