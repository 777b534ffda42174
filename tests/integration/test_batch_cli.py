"""`trunkline run` with a batch step, and `trunkline plan`, in a subprocess against a local Batch API fake."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fakebatch import FakeBatchServer
from fakeserver import openai_completion
from integration.cli import run_trunkline

CONFIG = """
default_route = "gpt"

[deployments.gpt]
provider = "openai"
model = "gpt-4o-mini"
base_url = "{base_url}"

[routes.gpt]
deployments = ["gpt"]

[prices.gpt-4o-mini]
input_per_mtok = 1.0
output_per_mtok = 4.0
"""

WORKFLOW = """
name = "yes-no"
data = "rows.csv"
output = "label"
expected = "gold"

[inputs]
question = "text"

[[steps]]
name = "ask"
kind = "model"
mode = "batch"
prompt = "prompt.jinja"
output_schema = "schema.json"
output = "answer"
max_tokens = 10

[[steps]]
name = "pick"
kind = "post"
function = "tools:pick"
"""


def yes_reply(body: dict) -> dict:
    return openai_completion('{"label": "yes"}', model=body["model"])


def write_project(folder: Path, base_url: str) -> Path:
    (folder / "trunkline.toml").write_text(CONFIG.format(base_url=base_url))
    flow = folder / "flow"
    flow.mkdir()
    (flow / "workflow.toml").write_text(WORKFLOW)
    (flow / "prompt.jinja").write_text("Answer yes or no: {{ question }}")
    (flow / "schema.json").write_text('{"type": "object", "properties": {"label": {"type": "string"}}}')
    (flow / "tools.py").write_text("def pick(answer):\n    return {'label': answer['label']}\n")
    (flow / "rows.csv").write_text("text,gold\nis water wet,yes\nis fire cold,no\nis ice cold,yes\n")
    return folder


@pytest.fixture
def fake():
    with FakeBatchServer(polls_before_done=1, respond=yes_reply) as server:
        yield server


def test_run_batch_step_json(tmp_path, fake) -> None:
    project = write_project(tmp_path, fake.openai_base_url)
    result = run_trunkline(project, "run", "flow", "--json", "--batch-poll", "0.05")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["ok"] == 3
    assert summary["accuracy"] == pytest.approx(2 / 3)
    assert summary["cost_usd"] == pytest.approx(3 * (12 * 1.0 + 5 * 4.0) / 1e6 * 0.5)
    assert summary["batches"][0]["status"] == "completed"
    assert summary["batches"][0]["rows"] == 3
    assert fake.creates == 1


def test_show_names_the_batch(tmp_path, fake) -> None:
    project = write_project(tmp_path, fake.openai_base_url)
    summary = json.loads(run_trunkline(project, "run", "flow", "--json", "--batch-poll", "0.05").stdout)
    listed = run_trunkline(project, "calls", "--run", summary["run_id"], "--json")
    call_id = json.loads(listed.stdout.splitlines()[0])["call_id"]
    shown = run_trunkline(project, "show", call_id)
    assert shown.returncode == 0, shown.stderr
    assert f"batch {summary['batches'][0]['batch_id']}: served by a Batch API job" in shown.stdout


def test_plan_table_and_json(tmp_path, fake) -> None:
    project = write_project(tmp_path, fake.openai_base_url)
    table = run_trunkline(project, "plan", "flow", "--limit", "2")
    assert table.returncode == 0, table.stderr
    assert "ask: output tokens from the step's max_tokens, an upper bound" in table.stdout
    assert "pick: not batch" not in table.stdout
    assert "pick: ran on" not in table.stdout
    with_tools = run_trunkline(project, "plan", "flow", "--run-tools")
    assert with_tools.returncode == 0, with_tools.stderr
    # pick comes after the only model step, so no prompt needs it.
    assert "pick: ran on" not in with_tools.stdout
    as_json = run_trunkline(project, "plan", "flow", "--json")
    plan = json.loads(as_json.stdout)
    ask = {step["step"]: step for step in plan["steps"]}["ask"]
    assert ask["batchable"] is True
    assert ask["batch_cost_usd"] == pytest.approx(ask["online_cost_usd"] * 0.5)
    assert plan["totals"]["declared"] == pytest.approx(ask["batch_cost_usd"])
    assert fake.uploads == 0


def test_batch_on_local_model_is_config_error(tmp_path, fake) -> None:
    project = write_project(tmp_path, fake.openai_base_url)
    (project / "trunkline.toml").write_text('default_route = "local"\n')
    result = run_trunkline(project, "run", "flow")
    assert result.returncode == 2
    assert "step 'ask' sets mode = \"batch\"" in result.stderr
    assert "provider 'local'" in result.stderr


def test_batch_step_on_celery_workers_is_config_error(tmp_path, fake) -> None:
    project = write_project(tmp_path, fake.openai_base_url)
    result = run_trunkline(project, "run", "flow", "--workers", "celery")
    assert result.returncode == 2
    assert "run it without --workers celery" in result.stderr
    assert fake.uploads == 0
