"""`trunkline eval`, `compare` and `experiments` end to end in a subprocess, over scripted fake models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from integration.cli import run_trunkline
from integration.test_cli import write_project

# Two deployments that always reply yes or always no, so a change of route
# is a known change of score.
CONFIG = """
default_route = "says-yes"

[deployments.says-yes]
provider = "fake"
model = "scripted-model"
options = { mode = "scripted", replies = ['{"label": "yes"}'] }

[deployments.says-no]
provider = "fake"
model = "scripted-model"
options = { mode = "scripted", replies = ['{"label": "no"}'] }

[prices.scripted-model]
input_per_mtok = 1.0
output_per_mtok = 4.0
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    rows = "".join(f"question {index},{'yes' if index % 5 else 'no'}\n" for index in range(30))
    write_project(tmp_path, rows)
    (tmp_path / "trunkline.toml").write_text(CONFIG)
    return tmp_path


def evaluate(project: Path, *arguments: str) -> dict:
    completed = run_trunkline(project, "eval", "flow", "--json", *arguments)
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout)


def test_eval_scores_with_an_interval(project: Path) -> None:
    result = evaluate(project, "--model", "says-yes", "--scorer", "exact", "--scorer", "fuzzy", "--repeat", "2")
    exact = result["scores"]["exact"]
    # Every fifth row expects no: 24 of 30 rows match, in both repeats.
    assert exact["mean"] == pytest.approx(0.8)
    assert exact["count"] == 60
    assert exact["ci_low"] < 0.8 < exact["ci_high"]
    assert result["rows"] == 30
    assert result["deployment"] == "says-yes"
    assert len(result["run_ids"]) == 2
    assert result["cost_usd"] > 0

    listed = [json.loads(line) for line in run_trunkline(project, "experiments", "--json").stdout.splitlines()]
    assert listed[0]["experiment_id"] == result["experiment_id"]
    assert listed[0]["mean_score"] == pytest.approx(0.8)


def test_compare_gate_fails_a_worse_model(project: Path) -> None:
    baseline = evaluate(project, "--model", "says-yes")["experiment_id"]
    worse = evaluate(project, "--model", "says-no")["experiment_id"]

    itself = run_trunkline(project, "compare", baseline, baseline[:12], "--fail-if-worse", "0.05", "--json")
    assert itself.returncode == 0, itself.stderr
    same = json.loads(itself.stdout)
    assert (same["wins"], same["ties"], same["losses"]) == (0, 30, 0)
    assert same["similarity"]["exact"] == 1.0

    failed = run_trunkline(project, "compare", baseline, worse, "--fail-if-worse", "0.05", "--json")
    assert failed.returncode == 1
    comparison = json.loads(failed.stdout)
    assert comparison["difference"] == pytest.approx(0.2 - 0.8)
    assert (comparison["wins"], comparison["losses"]) == (6, 24)
    assert comparison["ci_high"] < -0.05
    assert comparison["gate"]["failed"] is True
    assert comparison["similarity"]["exact"] == 0.0
    assert comparison["most_changed"][0]["score_a"] != comparison["most_changed"][0]["score_b"]

    embedded = json.loads(run_trunkline(project, "compare", baseline, worse, "--embedding", "--json").stdout)
    assert 0.0 <= embedded["similarity"]["embedding"] < 1.0

    table = run_trunkline(project, "compare", baseline, worse)
    assert table.returncode == 0
    assert "B wins 6, ties 0, loses 24" in table.stdout


def test_eval_errors(project: Path) -> None:
    unknown = run_trunkline(project, "eval", "flow", "--scorer", "telepathy")
    assert unknown.returncode == 2
    assert "unknown scorer 'telepathy'" in unknown.stderr
    missing = run_trunkline(project, "compare", "exp_nothere", "exp_nothere2")
    assert missing.returncode == 2
    assert "no experiment with id 'exp_nothere'" in missing.stderr


JUDGE_CONFIG = """
default_route = "lenient"

[deployments.lenient]
provider = "fake"
model = "judge-model"
options = { mode = "scripted", replies = ['{"reasoning": "fine", "verdict": "pass"}'] }

[deployments.rambling]
provider = "fake"
model = "judge-model"
options = { mode = "scripted", replies = ["I think it is quite good overall."] }

[prices.judge-model]
input_per_mtok = 1.0
output_per_mtok = 1.0
"""


def test_judge_check_reports_agreement(tmp_path: Path) -> None:
    (tmp_path / "trunkline.toml").write_text(JUDGE_CONFIG)
    (tmp_path / "rubric.txt").write_text("The answer names the capital of the country.")
    (tmp_path / "labelled.csv").write_text(
        "output,expected,label\nParis,Paris,pass\nRome,Rome,pass\nBerlin,Berlin,pass\nLyon,Paris,fail\n"
    )
    arguments = ("evals", "judge-check", "--data", "labelled.csv", "--rubric", "rubric.txt")
    completed = run_trunkline(tmp_path, *arguments, "--json")
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout)
    # The judge passes everything: it agrees on the three passes and misses the one fail.
    assert result["agreement"] == 0.75
    assert result["kappa"] == 0.0
    assert (result["both_pass"], result["judge_pass_human_fail"], result["both_fail"]) == (3, 1, 0)

    rambling = run_trunkline(tmp_path, *arguments, "--route", "rambling")
    assert rambling.returncode == 2
    assert "no usable verdict" in rambling.stderr


def test_python_and_json_schema_scorers(project: Path) -> None:
    (project / "myscore.py").write_text(
        "def starts_yes(output, expected, row):\n    return str(output).startswith('y')\n\n"
        "def boom(output, expected, row):\n    raise ValueError('boom')\n"
    )
    (project / "label.json").write_text('{"type": "string", "enum": ["yes", "no"]}')
    result = evaluate(project, "--model", "says-yes", "--scorer", "python=myscore:starts_yes", "--scorer", "json_schema=label.json")
    assert result["scores"]["python:myscore:starts_yes"]["mean"] == 1.0
    assert list(result["scores"]) == ["python:myscore:starts_yes", "json_schema"]

    failed = run_trunkline(project, "eval", "flow", "--scorer", "python=myscore:boom")
    assert failed.returncode == 2
    assert "scorer python:myscore:boom failed on row 0: ValueError: boom" in failed.stderr
    assert "Traceback" not in failed.stderr


DOWNGRADE_CONFIG = """
default_route = "main"

[deployments.dear]
provider = "fake"
model = "dear-model"
options = { mode = "scripted", replies = ['{"label": "yes"}'] }

[deployments.cheap]
provider = "fake"
model = "cheap-model"
options = { mode = "scripted", replies = ['{"label": "yes"}'] }

[routes.main]
deployments = ["dear"]
downgrade_to = ["cheap"]
downgrade_when = ["scores"]
downgrade_tolerance = 0.02
task = "yes-no"

[prices.dear-model]
input_per_mtok = 10.0
output_per_mtok = 30.0

[prices.cheap-model]
input_per_mtok = 0.1
output_per_mtok = 0.3
"""


def test_golden_experiments_drive_score_downgrades(project: Path) -> None:
    (project / "trunkline.toml").write_text(DOWNGRADE_CONFIG)
    before = json.loads(run_trunkline(project, "run", "flow", "--json").stdout)
    assert run_trunkline(project, "eval", "flow", "--model", "dear", "--golden").returncode == 0
    assert run_trunkline(project, "eval", "flow", "--model", "cheap", "--golden").returncode == 0
    after = json.loads(run_trunkline(project, "run", "flow", "--json").stdout)
    listed = run_trunkline(project, "calls", "--run", after["run_id"], "--json", "--limit", "100")
    calls = [json.loads(line) for line in listed.stdout.splitlines()]
    # Both score 0.8 on the same golden rows, so the route's calls move to the cheaper deployment.
    assert {call["model_requested"] for call in calls} == {"cheap-model"}
    assert after["cost_usd"] < before["cost_usd"] / 10
