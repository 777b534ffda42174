"""`trunkline run --mlflow` end to end: a real MLflow tracking store in a SQLite file."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from integration.cli import run_trunkline
from integration.test_cli import write_project

# Set before anything imports mlflow, so that this process sends no telemetry.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
mlflow_tracking = pytest.importorskip(
    "mlflow.tracking", reason="mlflow-skinny is not installed: pip install -e '.[test]'"
)

# Five rows, the last without an expected value; --limit 4 leaves the fifth out.
ROWS = "is water wet,yes\nis fire cold,no\nis ice cold,yes\nis the sky blue,\nis snow hot,no\n"
SUMMARY_LINE = (
    "logged run {run_id} to MLflow run {mlflow_run_id} in experiment {experiment!r} at {uri}"
)


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Return one MLflow store for the module, so that its tables are created only once.

    Each test logs to an experiment of its own.
    """
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture(scope="module")
def client(tracking_uri: str) -> Any:
    return mlflow_tracking.MlflowClient(tracking_uri=tracking_uri)


def mlflow_runs(client: Any, experiment: str) -> list[Any]:
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    return client.search_runs([found.experiment_id])


def store_rows(project: Path, run_id: str) -> list[dict[str, Any]]:
    database = project / ".trunkline" / "trunkline.db"
    with sqlite3.connect(database) as connection:
        connection.row_factory = sqlite3.Row
        rows = connection.execute(
            "select * from run_rows where run_id = ? order by row_index", (run_id,)
        ).fetchall()
    return [dict(row) for row in rows]


def store_count(project: Path, query: str, *values: str) -> int:
    with sqlite3.connect(project / ".trunkline" / "trunkline.db") as connection:
        return connection.execute(query, values).fetchone()[0]


@pytest.fixture(scope="module")
def logged(
    tmp_path_factory: pytest.TempPathFactory, tracking_uri: str, client: Any
) -> dict[str, Any]:
    """Run the yes-no workflow once with --mlflow and return what the run and MLflow hold."""
    project = write_project(tmp_path_factory.mktemp("project"), rows=ROWS)
    completed = run_trunkline(
        project,
        "run", "flow", "--mlflow", "--json", "--limit", "4",
        env={"MLFLOW_TRACKING_URI": tracking_uri, "MLFLOW_EXPERIMENT_NAME": "cli-flag"},
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    summary = json.loads(completed.stdout)
    runs = mlflow_runs(client, "cli-flag")
    assert len(runs) == 1, completed.stderr
    table_path = client.download_artifacts(
        runs[0].info.run_id, "rows.json", str(tmp_path_factory.mktemp("download"))
    )
    return {
        "project": project,
        "completed": completed,
        "summary": summary,
        "run": runs[0],
        "rows": store_rows(project, summary["run_id"]),
        "table": json.loads(Path(table_path).read_text(encoding="utf-8")),
    }


def test_run_logs_one_finished_run(logged: dict[str, Any], tracking_uri: str) -> None:
    run = logged["run"]
    run_id = logged["summary"]["run_id"]
    expected_line = SUMMARY_LINE.format(
        run_id=run_id, mlflow_run_id=run.info.run_id, experiment="cli-flag", uri=tracking_uri
    )
    assert run.info.status == "FINISHED"
    assert run.info.run_name == run_id
    assert run.data.tags["trunkline.run_id"] == run_id
    assert run.data.tags["trunkline.workflow"] == "yes-no"
    assert expected_line in logged["completed"].stderr


def test_run_params(logged: dict[str, Any]) -> None:
    params = logged["run"].data.params
    project = logged["project"]
    assert params["run_id"] == logged["summary"]["run_id"]
    assert params["workflow"] == "yes-no"
    assert params["workflow_path"] == str((project / "flow" / "workflow.toml").resolve())
    assert params["data_path"] == str((project / "flow" / "rows.csv").resolve())
    assert len(params["data_hash"]) == 64
    assert params["rows"] == "4"
    assert params["limit"] == "4"
    assert params["concurrency"] == "4"
    assert params["routes"] == "fake"
    assert params["deployments"] == "fake"
    assert params["models"] == "scripted-model"
    assert params["prompt_name"] == "yes-no/ask"
    # The workflow step sets no prompt version, and no value is made up for it.
    assert "prompt_version" not in params


def test_run_metrics_match_store(logged: dict[str, Any]) -> None:
    metrics = logged["run"].data.metrics
    rows = logged["rows"]
    latencies = [row["latency_ms"] for row in rows]
    # The inclusive method interpolates between ranks as the summary does.
    percentiles = statistics.quantiles(latencies, n=100, method="inclusive")
    input_tokens = sum(row["input_tokens"] for row in rows)
    output_tokens = sum(row["output_tokens"] for row in rows)
    run_id = logged["summary"]["run_id"]
    calls = store_count(logged["project"], "select count(*) from calls where run_id = ?", run_id)
    assert len(rows) == 4
    assert metrics["rows"] == 4
    assert metrics["ok"] == 4
    assert metrics["errors"] == 0
    assert metrics["scored"] == 3
    assert metrics["accuracy"] == pytest.approx(2 / 3)
    assert metrics["input_tokens"] == input_tokens
    assert metrics["output_tokens"] == output_tokens
    assert metrics["total_tokens"] == input_tokens + output_tokens
    assert metrics["cost_usd"] == pytest.approx(sum(row["cost_usd"] for row in rows))
    assert metrics["cost_usd"] > 0
    assert metrics["unpriced_rows"] == 0
    assert "cost_usd_priced" not in metrics
    assert metrics["latency_p50_ms"] == pytest.approx(percentiles[49])
    assert metrics["latency_p95_ms"] == pytest.approx(percentiles[94])
    assert metrics["latency_p99_ms"] == pytest.approx(percentiles[98])
    assert metrics["retries"] == sum(row["retries"] for row in rows)
    assert metrics["fallbacks"] == sum(row["fallbacks"] for row in rows)
    assert metrics["model_calls"] == calls


def test_run_metrics_match_printed_summary(logged: dict[str, Any]) -> None:
    metrics = logged["run"].data.metrics
    summary = logged["summary"]
    for key in ("rows", "errors", "input_tokens", "output_tokens", "retries", "fallbacks"):
        assert metrics[key] == summary[key], key
    for key in ("accuracy", "cost_usd", "latency_p50_ms", "latency_p95_ms"):
        assert metrics[key] == pytest.approx(summary[key]), key


def test_rows_table_matches_store(logged: dict[str, Any]) -> None:
    table = logged["table"]
    rows = logged["rows"]
    assert table["columns"] == [
        "row_index", "status", "inputs", "output", "expected", "correct", "score",
        "latency_ms", "input_tokens", "output_tokens", "cost_usd", "retries", "fallbacks", "error",
    ]  # fmt: skip
    records = [dict(zip(table["columns"], values, strict=True)) for values in table["data"]]
    assert [record["row_index"] for record in records] == [0, 1, 2, 3]
    assert [record["inputs"] for record in records] == [
        {"question": "is water wet"},
        {"question": "is fire cold"},
        {"question": "is ice cold"},
        {"question": "is the sky blue"},
    ]
    assert [record["output"] for record in records] == ["yes", "yes", "yes", "yes"]
    assert [record["expected"] for record in records] == ["yes", "no", "yes", ""]
    assert [record["correct"] for record in records] == [True, False, True, None]
    for record, row in zip(records, rows, strict=True):
        assert record["status"] == "ok"
        assert record["error"] is None
        assert record["latency_ms"] == pytest.approx(row["latency_ms"])
        assert record["cost_usd"] == pytest.approx(row["cost_usd"])
        assert record["input_tokens"] == row["input_tokens"]


def test_rows_table_is_registered(logged: dict[str, Any]) -> None:
    tags = logged["run"].data.tags
    assert json.loads(tags["mlflow.loggedArtifacts"]) == [{"path": "rows.json", "type": "table"}]


MLFLOW_SECTION = """
[mlflow]
enabled = true
tracking_uri = "{uri}"
experiment = "{experiment}"
"""


@pytest.fixture
def settings_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Remove the MLflow variables that win over trunkline.toml, for one test."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)


def project_logging_to(folder: Path, tracking_uri: str, experiment: str, *lines: str) -> Path:
    """Write the yes-no project with logging to MLflow turned on in its [mlflow] settings.

    `lines` are added to the [mlflow] table as they are.
    """
    project = write_project(folder)
    section = MLFLOW_SECTION.format(uri=tracking_uri, experiment=experiment)
    with (project / "trunkline.toml").open("a") as config:
        config.write(section + "".join(f"{line}\n" for line in lines))
    return project


def test_config_switch_logs_without_flag(
    tmp_path: Path, tracking_uri: str, client: Any, settings_only: None
) -> None:
    project = project_logging_to(tmp_path, tracking_uri, "from-config")

    completed = run_trunkline(project, "run", "flow", "--json")
    skipped = run_trunkline(project, "run", "flow", "--json", "--no-mlflow")

    assert completed.returncode == 0, completed.stderr
    assert skipped.returncode == 0, skipped.stderr
    run_id = json.loads(completed.stdout)["run_id"]
    runs = mlflow_runs(client, "from-config")
    assert [run.data.tags["trunkline.run_id"] for run in runs] == [run_id]
    assert "to MLflow run" in completed.stderr
    assert "MLflow" not in skipped.stderr


def test_missing_mlflow_fails_before_run(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    write_project(project)
    # A package that fails to import as an uninstalled one does, ahead of the real one.
    shadow = tmp_path / "shadow" / "mlflow"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'mlflow'\", name='mlflow')\n"
    )
    python_path = os.pathsep.join(filter(None, [str(shadow.parent), os.environ.get("PYTHONPATH")]))

    completed = run_trunkline(project, "run", "flow", "--mlflow", env={"PYTHONPATH": python_path})

    assert completed.returncode == 2
    assert "pip install 'trunkline[mlflow]'" in completed.stderr
    assert "Traceback" not in completed.stderr
    assert not (project / ".trunkline" / "trunkline.db").exists()


def test_logging_failure_keeps_run(
    tmp_path: Path, tracking_uri: str, client: Any, settings_only: None
) -> None:
    # Artifacts cannot be written below a regular file, so the run is
    # created in MLflow and then fails at its rows table.
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    artifacts = f'artifact_location = "{blocker / "artifacts"}"'
    project = project_logging_to(tmp_path, tracking_uri, "broken-artifacts", artifacts)

    completed: subprocess.CompletedProcess[str] = run_trunkline(project, "run", "flow", "--json")

    assert completed.returncode == 3, completed.stderr
    summary = json.loads(completed.stdout)
    run_id = summary["run_id"]
    assert summary["rows"] == 3
    assert f"error: logging run {run_id} to MLflow run" in completed.stderr
    assert "Not a directory" in completed.stderr
    assert f"trunkline export mlflow --run {run_id}" in completed.stderr
    assert "--resume" not in completed.stderr
    done = "select count(*) from runs where run_id = ? and status = 'done'"
    assert store_count(project, done, run_id) == 1
    assert len(store_rows(project, run_id)) == 3
    runs = mlflow_runs(client, "broken-artifacts")
    assert [run.info.status for run in runs] == ["FAILED"]
    assert runs[0].data.tags["trunkline.run_id"] == run_id

    # The recovery the message gives, once the cause is fixed: a new
    # experiment, with artifacts at MLflow's default location.
    calls = store_count(project, "select count(*) from calls where run_id = ?", run_id)
    config = project / "trunkline.toml"
    fixed = [line for line in config.read_text().splitlines() if "artifact_location" not in line]
    config.write_text("\n".join(fixed) + "\n")
    exported = run_trunkline(
        project, "export", "mlflow", "--run", run_id, env={"MLFLOW_EXPERIMENT_NAME": "recovered"}
    )
    assert exported.returncode == 0, exported.stderr
    recovered = mlflow_runs(client, "recovered")
    assert [run.info.status for run in recovered] == ["FINISHED"]
    assert recovered[0].data.tags["trunkline.run_id"] == run_id
    assert recovered[0].data.metrics["rows"] == 3
    assert f"to MLflow run {recovered[0].info.run_id} in" in exported.stdout
    # Nothing ran again.
    assert store_count(project, "select count(*) from calls where run_id = ?", run_id) == calls


def logged_id(output: str) -> str:
    """Return the MLflow run id from the line that reports where a run was logged."""
    found = re.search(r"to MLflow run (\w+) in experiment", output)
    assert found is not None, output
    return found.group(1)


def table_inputs(client: Any, mlflow_run_id: str, folder: Path) -> list[Any]:
    """Return the inputs column of an MLflow run's rows table."""
    path = client.download_artifacts(mlflow_run_id, "rows.json", str(folder))
    table = json.loads(Path(path).read_text(encoding="utf-8"))
    column = table["columns"].index("inputs")
    return [values[column] for values in table["data"]]


QUESTIONS = [
    {"question": "is water wet"},
    {"question": "is fire cold"},
    {"question": "is ice cold"},
]


def test_unreachable_server_fails_fast(
    tmp_path: Path, closed_port_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Left unset, so that Trunkline's defaults apply.
    for name in (
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
        "MLFLOW_HTTP_REQUEST_TIMEOUT",
    ):
        monkeypatch.delenv(name, raising=False)
    project = write_project(tmp_path)
    uri = closed_port_url.replace("http://", "http://ana:secretpw@")

    started = time.monotonic()
    completed = run_trunkline(
        project, "run", "flow", "--mlflow", timeout_s=60, env={"MLFLOW_TRACKING_URI": uri}
    )
    elapsed = time.monotonic() - started

    stderr = " ".join(completed.stderr.split())
    assert completed.returncode == 2, completed.stderr
    # With MLflow's own retry defaults this took about 4 minutes.
    assert elapsed < 20
    assert "cannot open MLflow experiment 'yes-no'" in stderr
    assert "secretpw" not in completed.stderr
    assert not (project / ".trunkline" / "trunkline.db").exists()


def test_mlflow_info_lines_are_hidden(tmp_path: Path, settings_only: None) -> None:
    # A new tracking store, whose creation MLflow reports at INFO level.
    tracking_uri = f"sqlite:///{tmp_path / 'new-mlflow.db'}"
    project = project_logging_to(tmp_path, tracking_uri, "log-lines")

    json_logs = {"TRUNKLINE_LOG_FORMAT": "json"}
    completed = run_trunkline(project, "run", "flow", "--json", env=json_logs)

    assert completed.returncode == 0, completed.stderr
    assert "to MLflow run" in completed.stderr
    assert "Creating initial MLflow database tables" not in completed.stderr
    assert " INFO mlflow" not in completed.stderr


def test_rows_table_and_params_are_redacted(
    tmp_path: Path, tracking_uri: str, client: Any, settings_only: None
) -> None:
    key = "sk-proj-AbCdEf0123456789xyz"
    project = project_logging_to(tmp_path, tracking_uri, "redacted")
    config = project / "trunkline.toml"
    config.write_text('redact_patterns = ["cust-[0-9]{8}"]\n' + config.read_text())
    (project / "flow" / "rows.csv").write_text(
        f"text,gold\nmy key is {key},yes\ncustomer cust-12345678 asks,no\n"
    )
    with (project / "flow" / "workflow.toml").open("a") as workflow:
        workflow.write('\n[params]\nnote = "none"\n')

    completed = run_trunkline(
        project, "run", "flow", "--json", "--param", f"note={key} for cust-12345678"
    )

    assert completed.returncode == 0, completed.stderr
    (run,) = mlflow_runs(client, "redacted")
    inputs = table_inputs(client, run.info.run_id, tmp_path / "download")
    assert inputs == [
        {"question": "my key is [REDACTED]"},
        {"question": "customer [REDACTED] asks"},
    ]
    assert run.data.params["param.note"] == "[REDACTED] for [REDACTED]"


def test_export_supersedes_earlier_runs(
    tmp_path: Path, tracking_uri: str, client: Any, settings_only: None
) -> None:
    project = project_logging_to(tmp_path, tracking_uri, "logged-again")
    completed = run_trunkline(project, "run", "flow", "--json")
    assert completed.returncode == 0, completed.stderr
    run_id = json.loads(completed.stdout)["run_id"]
    first = logged_id(completed.stderr)
    count_calls = "select count(*) from calls where run_id = ?"
    calls = store_count(project, count_calls, run_id)

    second = run_trunkline(project, "export", "mlflow", "--run", run_id)
    third = run_trunkline(project, "export", "mlflow", "--run", run_id)

    assert second.returncode == 0, second.stderr
    assert third.returncode == 0, third.stderr
    newest = logged_id(third.stdout)
    earlier = {first, logged_id(second.stdout)}
    runs = {run.info.run_id: run for run in mlflow_runs(client, "logged-again")}
    assert set(runs) == earlier | {newest}
    assert {run.info.status for run in runs.values()} == {"FINISHED"}
    assert {run.data.tags["trunkline.run_id"] for run in runs.values()} == {run_id}
    assert "trunkline.superseded_by" not in runs[newest].data.tags
    for mlflow_run_id in earlier:
        assert runs[mlflow_run_id].data.tags["trunkline.superseded_by"] == newest
    assert f"trunkline.superseded_by={newest}" in third.stderr
    assert f"tagged 2 earlier MLflow run(s) of run {run_id}" in third.stderr
    assert runs[newest].data.metrics == runs[first].data.metrics
    assert table_inputs(client, newest, tmp_path / "download") == QUESTIONS
    # Exporting runs no row again.
    assert store_count(project, count_calls, run_id) == calls


def test_export_checks_data_rows(
    tmp_path: Path, tracking_uri: str, client: Any, settings_only: None
) -> None:
    project = project_logging_to(tmp_path, tracking_uri, "export-data")
    completed = run_trunkline(project, "run", "flow", "--json", "--no-mlflow")
    assert completed.returncode == 0, completed.stderr
    run_id = json.loads(completed.stdout)["run_id"]
    data = project / "flow" / "rows.csv"
    original = tmp_path / "original.csv"
    original.write_text(data.read_text())
    data.write_text(data.read_text().replace("is fire cold", "is fire hot"))

    changed = run_trunkline(project, "export", "mlflow", "--run", run_id)
    from_copy = run_trunkline(project, "export", "mlflow", "--run", run_id, "--data", str(original))
    edited = run_trunkline(project, "export", "mlflow", "--run", run_id, "--data", str(data))
    data.unlink()
    missing = run_trunkline(project, "export", "mlflow", "--run", run_id)

    for exported in (changed, from_copy, edited, missing):
        assert exported.returncode == 0, exported.stderr
    download = tmp_path / "download"
    assert table_inputs(client, logged_id(changed.stdout), download) == [None, None, None]
    assert "changed after the run" in changed.stderr
    assert "pass --data FILE" in changed.stderr
    assert table_inputs(client, logged_id(from_copy.stdout), download) == QUESTIONS
    assert "warning" not in from_copy.stderr
    assert table_inputs(client, logged_id(edited.stdout), download) == [
        QUESTIONS[0],
        None,
        QUESTIONS[2],
    ]
    assert f"1 of 3 rows of run {run_id} differ from those of {data}" in edited.stderr
    assert table_inputs(client, logged_id(missing.stdout), download) == [None, None, None]
    assert "no longer exists" in missing.stderr


def test_export_rejects_unfinished_run(tmp_path: Path, settings_only: None) -> None:
    project = write_project(tmp_path)
    completed = run_trunkline(project, "run", "flow", "--json")
    assert completed.returncode == 0, completed.stderr
    run_id = json.loads(completed.stdout)["run_id"]
    with sqlite3.connect(project / ".trunkline" / "trunkline.db") as connection:
        connection.execute("update runs set status = 'interrupted' where run_id = ?", (run_id,))

    exported = run_trunkline(project, "export", "mlflow", "--run", run_id)

    stderr = " ".join(exported.stderr.split())
    assert exported.returncode == 2
    assert f"run {run_id} has status 'interrupted'" in stderr
    assert f"--resume {run_id}" in stderr
