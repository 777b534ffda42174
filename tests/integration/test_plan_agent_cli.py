"""`trunkline plan` on a workflow with an agent step, in a subprocess, before and after a recorded run."""

from __future__ import annotations

import json
from pathlib import Path
from statistics import median

import pytest

from integration.cli import run_trunkline
from integration.test_cli import CONFIG as YES_NO_CONFIG
from trunkline.store.database import open_store
from trunkline.store.runs import all_rows

# The yes-no project's fake deployment, replying with plain text, which the agent takes as its answer.
CONFIG = YES_NO_CONFIG.replace("""replies = ['{"label": "yes"}']""", 'replies = ["Paris"]')

WORKFLOW = """
name = "capitals"
data = "rows.csv"
output = "answer"

[inputs]
country = "country"

[[steps]]
name = "answer"
kind = "agent"
prompt = "prompt.jinja"
tools = ["tools:capital_of"]
max_steps = 4
max_tokens = 100
"""

TOOLS = '''
def capital_of(country: str) -> str:
    """Return the capital city of a country."""
    return "Paris"
'''


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "trunkline.toml").write_text(CONFIG)
    flow = tmp_path / "flow"
    flow.mkdir()
    (flow / "workflow.toml").write_text(WORKFLOW)
    (flow / "tools.py").write_text(TOOLS)
    (flow / "prompt.jinja").write_text("Name the capital of {{ country }}")
    (flow / "rows.csv").write_text("country\nFrance\nBelgium\n")
    return tmp_path


def plan_json(project: Path) -> dict:
    completed = run_trunkline(project, "plan", "flow", "--json")
    assert completed.returncode == 0, completed.stderr
    return {step["step"]: step for step in json.loads(completed.stdout)["steps"]}["answer"]


def test_plan_table_shows_agent_worst_case(project) -> None:
    completed = run_trunkline(project, "plan", "flow")
    lines = completed.stdout.splitlines()

    assert completed.returncode == 0, completed.stderr
    assert "answer: not batch: an agent needs each reply before its next call" in completed.stdout
    assert "answer: typical per row: 2 model calls" in completed.stdout
    assert "answer: worst case per row, of the row with the largest prompt: 4 model calls" in completed.stdout
    # Piped output is as wide as the table, so the worst-case row stays on one line.
    worst = [line for line in lines if "answer, worst case" in line]
    assert len(worst) == 1
    cells = [cell.strip() for cell in worst[0].split("│")[1:-1]]
    assert cells[3] == "no"
    # Four replies of up to 100 tokens for each of the two rows.
    assert cells[5] == "800"
    assert cells[7] == "-"


def test_plan_json_before_and_after_run(project) -> None:
    before = plan_json(project)
    ran = run_trunkline(project, "run", "flow", "--json")
    assert ran.returncode == 0, ran.stderr
    run_id = json.loads(ran.stdout)["run_id"]
    after = plan_json(project)
    store = open_store(f"sqlite:///{project / '.trunkline' / 'trunkline.db'}", must_exist=True)
    try:
        rows = all_rows(store, run_id)
    finally:
        store.dispose()

    assert 'replies = ["Paris"]' in CONFIG
    assert before["batchable"] is False
    assert before["agent"]["recorded_rows"] == 0
    assert before["agent"]["typical_source"].startswith("an assumption")
    assert before["agent"]["worst_run"]["model_calls"] == 8
    assert before["agent"]["worst_run"]["output_tokens"] == 2 * 4 * 100
    # The scripted model replies without tool calls, so each stored row has one model call.
    assert after["agent"]["recorded_rows"] == 2
    assert after["agent"]["typical_row"]["model_calls"] == 1
    assert after["agent"]["typical_row"]["input_tokens"] == median(row["input_tokens"] for row in rows)
    assert after["agent"]["typical_row"]["cost_usd"] == pytest.approx(median(row["cost_usd"] for row in rows))
    assert after["input_tokens"] == 2 * median(row["input_tokens"] for row in rows)
