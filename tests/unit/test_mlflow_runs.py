"""MLflow logging of batch runs: settings, import errors, and what gets logged."""

from __future__ import annotations

import io
import json
import logging
import os
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from trunkline.config import MlflowSettings, load_settings
from trunkline.errors import ConfigError, MlflowLoggingError
from trunkline.logs import configure_logging
from trunkline.mlflow_runs import (
    MAX_PARAM_VALUE_LENGTH,
    MlflowTarget,
    hide_passwords,
    import_mlflow,
    log_run,
    logging_error,
    open_target,
    row_table,
    run_metrics,
    run_params,
)
from trunkline.redaction import register_secret
from trunkline.store.database import open_store
from trunkline.store.queries import RunCallLabels
from trunkline.store.runs import create_run

# Set before anything imports mlflow, so that this process sends no telemetry.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")

LABELS = RunCallLabels(
    calls=2,
    routes=["main"],
    deployments=["primary", "backup"],
    models=["model-a", "model-b"],
    prompt_names=["flow/ask"],
    prompt_versions=[],
)


def stored_row(index: int, **values: Any) -> dict[str, Any]:
    """Return a `run_rows` row as the store returns it, with `values` replacing the defaults."""
    row = {
        "run_id": "run_1",
        "row_index": index,
        "row_hash": "0" * 64,
        "status": "ok",
        "output": "yes",
        "expected": "yes",
        "score": 1.0,
        "error": None,
        "latency_ms": 10.0 * (index + 1),
        "input_tokens": 5,
        "output_tokens": 2,
        "cost_usd": 0.001,
        "price_missing": False,
        "retries": 0,
        "fallbacks": 0,
        "finished_at": datetime(2026, 1, 1, tzinfo=UTC),
    }
    row.update(values)
    return row


@pytest.fixture
def clean_mlflow_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Remove the MLflow variables for one test and restore them afterwards."""
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)


def test_mlflow_section_is_read(tmp_path: Path, clean_mlflow_environment: None) -> None:
    file = tmp_path / "trunkline.toml"
    file.write_text(
        '[mlflow]\nenabled = true\ntracking_uri = "sqlite:///runs.db"\nexperiment = "nightly"\n'
    )
    settings = load_settings(file)
    assert settings.mlflow.enabled is True
    assert settings.mlflow.resolved_tracking_uri() == "sqlite:///runs.db"
    assert settings.mlflow.resolved_experiment("yes-no") == "nightly"
    assert settings.mlflow.artifact_location is None


def test_mlflow_defaults(clean_mlflow_environment: None) -> None:
    settings = MlflowSettings()
    assert settings.enabled is False
    assert settings.resolved_tracking_uri() is None
    assert settings.resolved_experiment("yes-no") == "yes-no"


def test_mlflow_environment_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///from-env.db")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "from-env")
    settings = MlflowSettings(tracking_uri="sqlite:///from-file.db", experiment="from-file")
    assert settings.resolved_tracking_uri() == "sqlite:///from-env.db"
    assert settings.resolved_experiment("yes-no") == "from-env"


def test_mlflow_unknown_key_lists_valid_keys(tmp_path: Path) -> None:
    file = tmp_path / "trunkline.toml"
    file.write_text('[mlflow]\nuri = "sqlite:///runs.db"\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(file)
    message = str(caught.value)
    assert "mlflow.uri (line 2)" in message
    assert "artifact_location, enabled, experiment, tracking_uri" in message


def test_mlflow_enabled_must_be_boolean(tmp_path: Path) -> None:
    file = tmp_path / "trunkline.toml"
    file.write_text('[mlflow]\nenabled = "yes"\n')
    with pytest.raises(ConfigError, match="mlflow.enabled"):
        load_settings(file)


def test_missing_mlflow_names_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    # None in sys.modules makes `import mlflow` fail as for a package not installed.
    monkeypatch.setitem(sys.modules, "mlflow", None)
    with pytest.raises(MlflowLoggingError) as caught:
        import_mlflow()
    message = str(caught.value)
    assert "not installed" in message
    assert "pip install 'trunkline[mlflow]'" in message


def test_broken_mlflow_is_not_called_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("mlflow")
    monkeypatch.setitem(sys.modules, "mlflow.tracking", None)
    with pytest.raises(MlflowLoggingError) as caught:
        import_mlflow()
    message = str(caught.value)
    assert "installed but cannot be imported" in message
    assert "mlflow.tracking" in message


def test_import_sets_environment_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = {
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
        "MLFLOW_CONFIGURE_LOGGING": "false",
    }
    user_values = {"DO_NOT_TRACK": "false", "MLFLOW_HTTP_REQUEST_TIMEOUT": "300"}
    for name in defaults:
        # Set first, so that the variable is restored, or removed again, afterwards.
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    for name, value in user_values.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setitem(sys.modules, "mlflow", None)

    with pytest.raises(MlflowLoggingError):
        import_mlflow()

    for name, value in defaults.items():
        assert os.environ[name] == value, name
    # A value the user set is kept.
    for name, value in user_values.items():
        assert os.environ[name] == value, name


def test_params_from_run_and_calls() -> None:
    run = {
        "run_id": "run_1",
        "workflow": "flow",
        "workflow_path": "/work/flow/workflow.toml",
        "workflow_hash": None,
        "data_path": "/work/flow/rows.csv",
        "data_hash": "a" * 64,
        "params": {"choices": ["yes", "no"], "strict": True, "note": "x" * 7000, "bad key!": 1},
    }
    params = run_params(run, 4, LABELS, {"limit": None, "concurrency": 2})
    assert params["run_id"] == "run_1"
    assert params["rows"] == "4"
    assert params["routes"] == "main"
    assert params["deployments"] == "primary,backup"
    assert params["models"] == "model-a,model-b"
    assert params["prompt_name"] == "flow/ask"
    assert params["param.choices"] == "yes,no"
    assert params["param.strict"] == "true"
    assert params["param.bad key_"] == "1"
    assert params["concurrency"] == "2"
    assert len(params["param.note"]) == MAX_PARAM_VALUE_LENGTH
    assert params["param.note"].endswith("...[truncated]")
    for absent in ("workflow_hash", "limit", "prompt_version"):
        assert absent not in params, absent


def test_metrics_leave_unknown_cost_out() -> None:
    rows = [
        stored_row(0, expected=None, score=None),
        stored_row(1, expected=None, score=None, cost_usd=None, price_missing=True),
        stored_row(2, expected=None, score=None, status="error", error="step ask: timeout: late"),
    ]
    metrics = run_metrics("run_1", rows, LABELS)
    assert "cost_usd" not in metrics
    assert "accuracy" not in metrics
    assert metrics["cost_usd_priced"] == pytest.approx(0.002)
    assert metrics["unpriced_rows"] == 1
    assert metrics["errors"] == 1
    assert metrics["ok"] == 2
    assert metrics["scored"] == 0
    assert metrics["latency_p50_ms"] == pytest.approx(20.0)
    assert metrics["latency_p99_ms"] == pytest.approx(29.8)
    assert metrics["model_calls"] == 2


def test_table_without_inputs_or_expected() -> None:
    rows = [stored_row(0, expected=None, score=None), stored_row(1, score=0.0, output="no")]
    table = row_table(rows)
    records = [dict(zip(table["columns"], values, strict=True)) for values in table["data"]]
    assert [record["inputs"] for record in records] == [None, None]
    assert [record["correct"] for record in records] == [None, False]
    assert [record["output"] for record in records] == ["yes", "no"]
    json.dumps(table)


def test_hide_password() -> None:
    assert hide_passwords("http://ana:secret@127.0.0.1:5000/x") == "http://ana:***@127.0.0.1:5000/x"
    assert hide_passwords("sqlite:////tmp/mlflow.db") == "sqlite:////tmp/mlflow.db"


def test_hide_passwords_in_message() -> None:
    message = (
        "API request to http://ana:secret@127.0.0.1:9/api/2.0/x failed; "
        "also tried https://:tok@en@mlflow.example.com?x=1 and redis://bob:pw@cache:6379/0"
    )
    hidden = hide_passwords(message)
    assert hidden == (
        "API request to http://ana:***@127.0.0.1:9/api/2.0/x failed; "
        "also tried https://:***@mlflow.example.com?x=1 and redis://bob:***@cache:6379/0"
    )


def test_hide_passwords_keeps_other_text() -> None:
    for text in (
        "http://127.0.0.1:8080/v1@latest",
        "write to bob@example.com",
        "http://ana@127.0.0.1:5000/x",
        "sqlite:////tmp/mlflow.db",
    ):
        assert hide_passwords(text) == text, text


def test_logging_error_redacts_keys() -> None:
    error = logging_error("MLflow rejected sk-proj-AbCdEf0123456789xyz at http://ana:pw@host/x")
    message = str(error)
    assert isinstance(error, MlflowLoggingError)
    assert "sk-proj-AbCdEf0123456789xyz" not in message
    assert "[REDACTED]" in message
    assert ":pw@" not in message


def test_unfinished_run_is_not_logged(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'trunkline.db'}")
    create_run(
        store,
        run_id="run_1",
        workflow="flow",
        workflow_path=None,
        data_path=None,
        data_hash=None,
        params={},
        row_count=1,
    )
    # The status is checked before MLflow is used, so no client is needed.
    target = MlflowTarget(
        client=None, tracking_uri="sqlite://", experiment_id="1", experiment_name="x"
    )
    try:
        with pytest.raises(MlflowLoggingError, match="status 'running'"):
            log_run(target, store, "run_1")
    finally:
        store.dispose()


def test_deleted_experiment_is_reported(tmp_path: Path, clean_mlflow_environment: None) -> None:
    tracking = pytest.importorskip("mlflow.tracking")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = tracking.MlflowClient(tracking_uri=uri)
    client.delete_experiment(client.create_experiment("gone"))
    with pytest.raises(MlflowLoggingError, match="'gone' .* is deleted"):
        open_target(MlflowSettings(tracking_uri=uri, experiment="gone"), workflow="flow")


def test_unreachable_server_is_reported(
    closed_port_url: str, clean_mlflow_environment: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("mlflow")
    # MLflow retries a refused connection with backoff by default.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    with pytest.raises(MlflowLoggingError) as caught:
        open_target(MlflowSettings(tracking_uri=closed_port_url), workflow="flow")
    message = str(caught.value)
    assert f"cannot open MLflow experiment 'flow' at {closed_port_url}" in message
    assert "tracking server is running" in message


def test_unreachable_server_message_hides_password(
    closed_port_url: str, clean_mlflow_environment: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    uri = closed_port_url.replace("http://", "http://ana:secretpw@")
    with pytest.raises(MlflowLoggingError) as caught:
        open_target(MlflowSettings(tracking_uri=uri), workflow="flow")
    message = str(caught.value)
    # MLflow's own error quotes the URL of the request it tried.
    assert "/api/2.0/mlflow/experiments/get-by-name" in message
    assert "secretpw" not in message


def test_params_are_redacted() -> None:
    key = "sk-proj-AbCdEf0123456789xyz"
    secret = "registered-secret-0123456789abcdef"
    register_secret(secret)
    # The secret straddles the point where the value is cut, so a value cut
    # before redaction would keep the secret's first half.
    near_limit = "x" * (MAX_PARAM_VALUE_LENGTH - 30) + secret + "y" * 30
    run = {
        "run_id": "run_1",
        "workflow": "flow",
        "params": {"token": key, "keys": [key, "plain"], "near_limit": near_limit},
    }
    params = run_params(run, 1, LABELS, {"note": f"uses {key}"})
    assert params["param.token"] == "[REDACTED]"
    assert params["param.keys"] == "[REDACTED],plain"
    assert params["note"] == "uses [REDACTED]"
    assert "registered-secre" not in params["param.near_limit"]
    assert params["param.near_limit"].endswith("...[truncated]")


def test_table_redacts_inputs_and_expected() -> None:
    key = "sk-proj-AbCdEf0123456789xyz"
    rows = [stored_row(0, expected=f"expected {key}"), stored_row(1)]
    inputs = [{"question": f"my key is {key}", "history": [{"text": key}]}, None]
    table = row_table(rows, inputs)
    records = [dict(zip(table["columns"], values, strict=True)) for values in table["data"]]
    assert records[0]["inputs"] == {
        "question": "my key is [REDACTED]",
        "history": [{"text": "[REDACTED]"}],
    }
    assert records[0]["expected"] == "expected [REDACTED]"
    assert records[1]["inputs"] is None
    assert key not in json.dumps(table)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Restore the handlers, level and propagation of the trunkline and mlflow loggers."""
    loggers = [logging.getLogger(name) for name in ("trunkline", "mlflow")]
    saved = [(list(each.handlers), each.level, each.propagate) for each in loggers]
    yield
    for each, (handlers, level, propagate) in zip(loggers, saved, strict=True):
        each.handlers, each.level, each.propagate = handlers, level, propagate


def test_mlflow_logs_follow_trunkline_logging(restore_logging: None) -> None:
    pytest.importorskip("mlflow")
    stream = io.StringIO()
    configure_logging("WARNING", "json", stream)
    import_mlflow()
    store_logger = logging.getLogger("mlflow.store.db.utils")

    store_logger.info("Creating initial MLflow database tables...")
    store_logger.warning("tables are out of date")
    configure_logging("INFO", "json", stream)
    import_mlflow()
    store_logger.info("Updating database tables")

    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["event"] for line in lines] == [
        "tables are out of date",
        "Updating database tables",
    ]
    assert [line["level"] for line in lines] == ["warning", "info"]
    assert {line["logger"] for line in lines} == {"mlflow.store.db.utils"}
