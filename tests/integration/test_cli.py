"""The `trunkline` command end to end, in a subprocess, over a fake model."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from integration.cli import run_trunkline

CONFIG = """
default_route = "fake"

[deployments.fake]
provider = "fake"
model = "scripted-model"
options = { mode = "scripted", replies = ['{"label": "yes"}'] }

[routes.fake]
deployments = ["fake"]

[prices.scripted-model]
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
prompt = "prompt.jinja"
output_schema = "schema.json"
output = "answer"

[[steps]]
name = "pick"
kind = "post"
function = "tools:pick"
"""


def write_project(folder: Path, rows: str = "is water wet,yes\nis fire cold,no\nis ice cold,yes\n") -> Path:
    """Write the yes-no workflow over the fake model into `folder`, with `rows` as its data."""
    (folder / "trunkline.toml").write_text(CONFIG)
    flow = folder / "flow"
    flow.mkdir()
    (flow / "workflow.toml").write_text(WORKFLOW)
    (flow / "prompt.jinja").write_text("Answer yes or no: {{ question }}")
    (flow / "schema.json").write_text('{"type": "object", "properties": {"label": {"type": "string"}}}')
    (flow / "tools.py").write_text("def pick(answer):\n    return {'label': answer['label']}\n")
    (flow / "rows.csv").write_text("text,gold\n" + rows)
    return folder


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return write_project(tmp_path)


def trunkline(project: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    return run_trunkline(project, *arguments)


def test_run_json_summary(project: Path) -> None:
    completed = trunkline(project, "run", "flow", "--json")
    assert completed.returncode == 0, completed.stderr
    summary = json.loads(completed.stdout)
    expected_keys = {
        "rows", "ok", "errors", "accuracy", "input_tokens", "output_tokens", "cost_usd",
        "latency_p50_ms", "latency_p95_ms", "retries", "fallbacks", "run_id",
    }
    assert expected_keys <= set(summary)
    assert summary["rows"] == 3
    assert summary["errors"] == 0
    assert summary["accuracy"] == pytest.approx(2 / 3)
    assert summary["cost_usd"] > 0
    assert (project / ".trunkline" / "trunkline.db").is_file()


def test_run_table_output(project: Path) -> None:
    completed = trunkline(project, "run", "flow", "--limit", "2")
    assert completed.returncode == 0, completed.stderr
    assert "accuracy" in completed.stdout
    assert "latency p95" in completed.stdout


def test_calls_show_and_costs(project: Path) -> None:
    summary = json.loads(trunkline(project, "run", "flow", "--json").stdout)
    listed = trunkline(project, "calls", "--run", summary["run_id"], "--json")
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert len(rows) == 3
    assert all(row["run_id"] == summary["run_id"] for row in rows)
    show_output = trunkline(project, "show", rows[0]["call_id"][:10])
    assert show_output.returncode == 0, show_output.stderr
    assert "Answer yes or no" in show_output.stdout
    assert "attempts" in show_output.stdout
    costs = trunkline(project, "costs", "--by", "model", "--json")
    by_model = {json.loads(line)["key"]: json.loads(line) for line in costs.stdout.splitlines()}
    assert by_model["scripted-model"]["calls"] == 3


def test_runs_lists_summaries(project: Path) -> None:
    summary = json.loads(trunkline(project, "run", "flow", "--json").stdout)
    listed = trunkline(project, "runs", "--json")
    runs = [json.loads(line) for line in listed.stdout.splitlines()]
    table = trunkline(project, "runs")
    assert [run["run_id"] for run in runs] == [summary["run_id"]]
    assert runs[0]["status"] == "done"
    assert runs[0]["summary"]["rows"] == 3
    assert summary["run_id"] in table.stdout


def test_resume_runs_nothing_twice(project: Path) -> None:
    first = json.loads(trunkline(project, "run", "flow", "--json").stdout)
    again = trunkline(project, "run", "flow", "--json", "--resume", first["run_id"])
    summary = json.loads(again.stdout)
    listed = trunkline(project, "calls", "--run", first["run_id"], "--json", "--limit", "100")
    assert summary["resumed"] == 3
    assert summary["rows"] == 3
    assert len(listed.stdout.splitlines()) == 3


def test_bad_param_is_a_clear_error(project: Path) -> None:
    completed = trunkline(project, "run", "flow", "--param", "nothing")
    assert completed.returncode == 2
    assert "--param expects KEY=VALUE" in completed.stderr


def test_missing_workflow_is_a_clear_error(project: Path) -> None:
    completed = trunkline(project, "run", "nowhere")
    assert completed.returncode == 2
    assert "workflow nowhere not found" in completed.stderr


def test_reading_without_store_is_an_error(project: Path) -> None:
    completed = trunkline(project, "calls")
    assert completed.returncode == 2
    assert "no store at" in completed.stderr
    assert not (project / ".trunkline" / "trunkline.db").exists()


def test_failed_rows_exit_one(project: Path) -> None:
    (project / "flow" / "tools.py").write_text("def pick(answer):\n    raise ValueError('no pick')\n")
    completed = trunkline(project, "run", "flow", "--json")
    summary = json.loads(completed.stdout)
    assert completed.returncode == 1
    assert summary["errors"] == 3
    assert "row 0: step pick: ValueError: no pick" in completed.stderr
    assert f"--resume {summary['run_id']}" in completed.stderr


def test_resumed_run_counts_every_paid_call(project: Path) -> None:
    """Rows that failed after their model call cost money before the resume re-ran them."""
    # The tool fails while a flag file exists, so the workflow's files stay the same.
    (project / "flow" / "tools.py").write_text(
        "import pathlib\n\n\ndef pick(answer):\n"
        "    if pathlib.Path('fail.flag').exists():\n        raise ValueError('no pick')\n"
        "    return {'label': answer['label']}\n"
    )
    flag = project / "fail.flag"
    flag.write_text("")
    failed = json.loads(trunkline(project, "run", "flow", "--json").stdout)
    assert failed["errors"] == 3
    flag.unlink()
    resumed = json.loads(trunkline(project, "run", "flow", "--json", "--resume", failed["run_id"]).stdout)
    assert resumed["errors"] == 0
    # Three calls before the resume and three after, all of the same size.
    assert resumed["input_tokens"] == 2 * failed["input_tokens"]
    assert resumed["cost_usd"] == pytest.approx(2 * failed["cost_usd"])


def test_usage_error_is_not_a_traceback(project: Path) -> None:
    completed = trunkline(project, "run", "flow", "--limit", "0")
    assert completed.returncode == 2
    assert "Traceback" not in completed.stderr
    assert "--limit" in completed.stderr


def test_unknown_call_id(project: Path) -> None:
    assert trunkline(project, "migrate").returncode == 0
    completed = trunkline(project, "show", "abc123")
    assert completed.returncode == 2
    assert "no call with id 'abc123'" in completed.stderr


SLOW_CONFIG = """
default_route = "slow"

[deployments.slow]
provider = "fake"
model = "slow-model"
options = { mode = "simulated", latency_ms = 150, text = '{"label": "yes"}' }

[prices.slow-model]
input_per_mtok = 1.0
output_per_mtok = 1.0
"""


def test_interrupted_run_resumes(project: Path) -> None:
    (project / "trunkline.toml").write_text(SLOW_CONFIG)
    rows = "".join(f"question {index},yes\n" for index in range(40))
    (project / "flow" / "rows.csv").write_text("text,gold\n" + rows)
    environment = {key: value for key, value in os.environ.items() if not key.startswith("TRUNKLINE_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "trunkline", "run", "flow", "--concurrency", "2", "--json"],
        cwd=project,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    database = project / ".trunkline" / "trunkline.db"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and finished_rows(database) < 6:
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    match = re.search(r"--resume (run_[0-9a-f]+)", stderr)
    assert match, stderr
    run_id = match.group(1)
    done_before = finished_rows(database)
    assert 6 <= done_before < 40

    resumed = trunkline(project, "run", "flow", "--json", "--resume", run_id)
    summary = json.loads(resumed.stdout)
    listed = trunkline(project, "calls", "--run", run_id, "--json", "--limit", "500")
    outcomes = [json.loads(line)["outcome"] for line in listed.stdout.splitlines()]
    assert summary["rows"] == 40
    assert summary["errors"] == 0
    assert summary["resumed"] == done_before
    assert outcomes.count("ok") == 40


def finished_rows(database: Path) -> int:
    if not database.is_file():
        return 0
    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5) as connection:
            return connection.execute("select count(*) from run_rows where status = 'ok'").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def test_info_logs_are_json_lines_with_run_ids(project: Path) -> None:
    completed = run_trunkline(
        project, "run", "flow", "--json", env={"TRUNKLINE_LOG_LEVEL": "INFO"}
    )
    assert completed.returncode == 0, completed.stderr
    run_id = json.loads(completed.stdout)["run_id"]
    lines = [json.loads(line) for line in completed.stderr.splitlines() if line.startswith("{")]
    events = [line["event"] for line in lines]
    assert any(event.startswith(f"run {run_id} of workflow yes-no started") for event in events)
    assert any(event.startswith(f"run {run_id} finished: 3 rows, 3 ok") for event in events)
    finished = next(line for line in lines if "finished" in line["event"])
    assert finished["level"] == "info"
    assert "timestamp" in finished
    assert finished["run_id"] == run_id
    assert len(finished["trace_id"]) == 32
    assert "is water wet" not in completed.stderr


def test_invalid_log_level_is_reported(project: Path) -> None:
    completed = run_trunkline(project, "runs", env={"TRUNKLINE_LOG_LEVEL": "LOUD"})
    assert completed.returncode == 2
    assert "TRUNKLINE_LOG_LEVEL" in completed.stderr


def test_calls_of_an_unknown_run(project: Path) -> None:
    trunkline(project, "run", "flow", "--json")
    completed = trunkline(project, "calls", "--run", "run_nothere")
    assert completed.returncode == 2
    assert "no run with id 'run_nothere'" in completed.stderr
