"""Logging finished batch runs to MLflow, one MLflow run per batch run.

Every figure is read from the store after the run ends, so the MLflow run
shows what `trunkline runs` and `trunkline calls` show. An MLflow run gets:

- parameters: the run id, the workflow, its data file, the hashes of both,
  the row count, the workflow's parameter values (``param.NAME``), the
  routes, deployments, models and prompts that its calls used, and any the
  caller adds, such as ``limit``;
- metrics: rows, ok, errors, accuracy and scored rows, input, output and
  total tokens, cost, latency p50, p95 and p99, retries, fallbacks and model
  calls;
- the tags ``trunkline.run_id`` and ``trunkline.workflow``, which join it to
  the store;
- ``rows.json``, one row per dataset row, in the ``{"columns", "data"}``
  layout that `mlflow.log_table` writes, and registered as a table the same
  way, so that MLflow's table views and `mlflow.load_table` read it without
  Trunkline needing pandas.

MLflow is an optional dependency (``pip install 'trunkline[mlflow]'``) and is
imported only through `import_mlflow`, which turns its telemetry off first.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import ModuleType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from trunkline.config import MlflowSettings
from trunkline.errors import MlflowLoggingError
from trunkline.store.database import Store
from trunkline.store.queries import RunCallLabels, run_call_labels
from trunkline.store.runs import all_rows, get_run
from trunkline.workflows.summary import percentile, summarise

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

logger = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'trunkline[mlflow]'"
ROWS_ARTIFACT = "rows.json"
ROW_COLUMNS = (
    "row_index",
    "status",
    "inputs",
    "output",
    "expected",
    "correct",
    "score",
    "latency_ms",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "retries",
    "fallbacks",
    "error",
)
# Limits of MLflow 3.18 (mlflow/utils/validation.py): longer parameter values
# and keys are rejected, and one log_batch call takes at most 100 parameters
# and tags together.
MAX_PARAM_VALUE_LENGTH = 6000
MAX_KEY_LENGTH = 250
MAX_PARAMS_PER_BATCH = 100
# MLflow accepts letters, digits, underscores, dashes, periods, spaces,
# slashes and colons in parameter and metric names.
_INVALID_KEY_CHARACTERS = re.compile(r"[^\w\-. /:]")


def import_mlflow() -> ModuleType:
    """Import MLflow with its telemetry off, unless the environment already decides it.

    Raises:
        MlflowLoggingError: MLflow is not installed or fails to import. The
            message names the package to install.
    """
    # MLflow decides when it is imported whether to start a thread that sends
    # usage events over the network; either variable stops it.
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "true")
    try:
        import mlflow
        import mlflow.tracking
    except ImportError as error:
        if error.name == "mlflow":
            raise MlflowLoggingError(
                "logging runs to MLflow needs the mlflow package, which is not installed; "
                f"install it with: {INSTALL_HINT}"
            ) from error
        raise MlflowLoggingError(
            f"MLflow is installed but cannot be imported ({error}); "
            f"reinstall it with: {INSTALL_HINT}"
        ) from error
    return mlflow


@dataclass(frozen=True)
class MlflowTarget:
    """A tracking store and experiment, checked and ready to receive runs."""

    client: MlflowClient
    tracking_uri: str
    experiment_id: str
    experiment_name: str

    def display_uri(self) -> str:
        """Return the tracking URI with any password hidden, for messages."""
        return hide_password(self.tracking_uri)


def open_target(settings: MlflowSettings, *, workflow: str) -> MlflowTarget:
    """Connect to the tracking store and find or create the experiment.

    Call it before a batch run starts, so that a missing package, an invalid
    URI or an unreachable tracking server stops the run before it spends
    anything. `workflow` names the experiment when neither
    ``MLFLOW_EXPERIMENT_NAME`` nor ``[mlflow] experiment`` does.

    Raises:
        MlflowLoggingError: MLflow is missing, the URI is invalid, the
            tracking store cannot be reached, or the experiment is deleted.
    """
    import_mlflow()
    from mlflow.tracking import MlflowClient

    name = settings.resolved_experiment(workflow)
    uri = settings.resolved_tracking_uri()
    location = hide_password(uri) if uri else "MLflow's default tracking URI"
    try:
        client = MlflowClient(tracking_uri=uri)
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            experiment_id = _create_experiment(client, name, settings.artifact_location)
        elif experiment.lifecycle_stage == "deleted":
            raise MlflowLoggingError(
                f"MLflow experiment {name!r} (id {experiment.experiment_id}) at {location} is "
                "deleted; restore it in MLflow, or choose another name with "
                "MLFLOW_EXPERIMENT_NAME or [mlflow] experiment in trunkline.toml"
            )
        else:
            experiment_id = experiment.experiment_id
    except MlflowLoggingError:
        raise
    # MLflow's stores raise their back end's own errors (SQLAlchemy, requests,
    # OSError) as well as MlflowException, and each means the same here.
    except Exception as error:
        raise MlflowLoggingError(
            f"cannot open MLflow experiment {name!r} at {location}: {error}. Check "
            "MLFLOW_TRACKING_URI or [mlflow] tracking_uri in trunkline.toml, and that the "
            "tracking server is running"
        ) from error
    return MlflowTarget(
        client=client,
        tracking_uri=client.tracking_uri,
        experiment_id=experiment_id,
        experiment_name=name,
    )


def _create_experiment(client: MlflowClient, name: str, artifact_location: str | None) -> str:
    from mlflow.exceptions import MlflowException

    try:
        return client.create_experiment(name, artifact_location=artifact_location)
    except MlflowException as error:
        # Another process may have created it since the look-up.
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        existing = client.get_experiment_by_name(name)
        if existing is None:
            raise
        return existing.experiment_id


def log_run(
    target: MlflowTarget,
    store: Store,
    run_id: str,
    *,
    inputs: Sequence[Mapping[str, Any]] | None = None,
    params: Mapping[str, Any] | None = None,
) -> str:
    """Log a finished batch run, read from `store`, as one MLflow run, and return its id.

    Args:
        target: the tracking store and experiment, from `open_target`.
        store: the store that recorded the run.
        run_id: Trunkline's id of the run.
        inputs: each row's input values, indexed by row. The store does not
            keep inputs, so without this the table's ``inputs`` column is null.
        params: more parameters of this invocation, such as ``limit``. None
            values are left out.

    Raises:
        MlflowLoggingError: the run has not finished, or MLflow rejected the
            run. An MLflow run created before the failure is marked FAILED.
    """
    run = get_run(store, run_id)
    if run["status"] != "done":
        raise MlflowLoggingError(
            f"run {run_id} has status {run['status']!r}; only a finished run is logged to "
            f"MLflow, so finish it first with --resume {run_id}"
        )
    rows = run_rows(store, run)
    labels = run_call_labels(store, run_id)
    client = target.client
    try:
        created = client.create_run(
            target.experiment_id,
            start_time=_epoch_ms(run["started_at"]),
            tags={"trunkline.run_id": run_id, "trunkline.workflow": run["workflow"]},
            run_name=run_id,
        )
    except Exception as error:  # any back-end error, as in open_target
        raise MlflowLoggingError(
            f"cannot create an MLflow run for run {run_id} in experiment "
            f"{target.experiment_name!r} at {target.display_uri()}: {error}"
        ) from error
    mlflow_run_id = created.info.run_id
    try:
        _log_contents(client, mlflow_run_id, run, rows, labels, inputs, params)
        client.set_terminated(mlflow_run_id, "FINISHED", end_time=_epoch_ms(run["ended_at"]))
    except Exception as error:  # any back-end error, as in open_target
        _mark_failed(client, mlflow_run_id, run_id)
        raise MlflowLoggingError(
            f"logging run {run_id} to MLflow run {mlflow_run_id} at {target.display_uri()} "
            f"failed: {error}"
        ) from error
    logger.info(
        "run %s logged to MLflow run %s in experiment %s at %s",
        run_id,
        mlflow_run_id,
        target.experiment_name,
        target.display_uri(),
    )
    return mlflow_run_id


def _log_contents(
    client: MlflowClient,
    mlflow_run_id: str,
    run: dict[str, Any],
    rows: list[dict[str, Any]],
    labels: RunCallLabels,
    inputs: Sequence[Mapping[str, Any]] | None,
    params: Mapping[str, Any] | None,
) -> None:
    from mlflow.entities import Metric, Param
    from mlflow.utils.mlflow_tags import MLFLOW_LOGGED_ARTIFACTS

    timestamp = _epoch_ms(run["ended_at"])
    metric_records = [
        Metric(key, value, timestamp, 0)
        for key, value in run_metrics(run["run_id"], rows, labels).items()
    ]
    param_records = [
        Param(key, value) for key, value in run_params(run, len(rows), labels, params).items()
    ]
    client.log_batch(mlflow_run_id, metrics=metric_records)
    for start in range(0, len(param_records), MAX_PARAMS_PER_BATCH):
        batch = param_records[start : start + MAX_PARAMS_PER_BATCH]
        client.log_batch(mlflow_run_id, params=batch)
    table = row_table(rows, inputs)
    text = json.dumps(table, ensure_ascii=False, default=str)
    client.log_text(mlflow_run_id, text, ROWS_ARTIFACT)
    # The same tag value that mlflow.log_table sets, which is how MLflow
    # finds the run's tables.
    registered = json.dumps([{"path": ROWS_ARTIFACT, "type": "table"}])
    client.set_tag(mlflow_run_id, MLFLOW_LOGGED_ARTIFACTS, registered)


def _mark_failed(client: MlflowClient, mlflow_run_id: str, run_id: str) -> None:
    try:
        client.set_terminated(mlflow_run_id, "FAILED")
    except Exception as error:  # the logging error that led here is the one raised
        logger.warning(
            "MLflow run %s of run %s stays in status RUNNING: marking it FAILED failed: %s",
            mlflow_run_id,
            run_id,
            error,
        )


def run_rows(store: Store, run: dict[str, Any]) -> list[dict[str, Any]]:
    """Return the stored rows of a finished run, limited as its summary was.

    A resumed run may have stored rows past the limit it was resumed with;
    the summary counts only the first ``summary["rows"]``, and so does this.
    """
    rows = all_rows(store, run["run_id"])
    summary = run.get("summary") or {}
    bound = summary.get("rows", run.get("row_count"))
    if bound is None:
        return rows
    return [row for row in rows if row["row_index"] < bound]


def run_metrics(
    run_id: str, rows: Sequence[dict[str, Any]], labels: RunCallLabels
) -> dict[str, float]:
    """Compute the MLflow metrics of a run from its stored rows; unknown values are left out.

    ``cost_usd`` is logged only when every row was priced. Otherwise
    ``cost_usd_priced`` is the cost of the priced rows, and ``unpriced_rows``
    counts the others.
    """
    summary = summarise(run_id, rows)
    latencies = [row["latency_ms"] for row in rows]
    values: dict[str, float | None] = {
        "rows": summary.rows,
        "ok": summary.ok,
        "errors": summary.errors,
        "accuracy": summary.accuracy,
        "scored": summary.scored,
        "input_tokens": summary.input_tokens,
        "output_tokens": summary.output_tokens,
        "total_tokens": summary.input_tokens + summary.output_tokens,
        "cost_usd": summary.cost_usd,
        "cost_usd_priced": summary.cost_usd_priced if summary.cost_usd is None else None,
        "unpriced_rows": summary.unpriced_rows,
        "latency_p50_ms": summary.latency_p50_ms,
        "latency_p95_ms": summary.latency_p95_ms,
        "latency_p99_ms": percentile(latencies, 0.99),
        "retries": summary.retries,
        "fallbacks": summary.fallbacks,
        "model_calls": labels.calls,
    }
    return {key: float(value) for key, value in values.items() if value is not None}


def run_params(
    run: dict[str, Any],
    row_count: int,
    labels: RunCallLabels,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, str]:
    """Return the MLflow parameters of a run, as strings within MLflow's limits."""
    values: dict[str, Any] = {
        "run_id": run["run_id"],
        "workflow": run["workflow"],
        "workflow_path": run.get("workflow_path"),
        "workflow_hash": run.get("workflow_hash"),
        "data_path": run.get("data_path"),
        "data_hash": run.get("data_hash"),
        "rows": row_count,
        "routes": labels.routes,
        "deployments": labels.deployments,
        "models": labels.models,
        "prompt_name": labels.prompt_names,
        "prompt_version": labels.prompt_versions,
    }
    for name, value in (run.get("params") or {}).items():
        values[f"param.{name}"] = value
    values.update(extra or {})
    params: dict[str, str] = {}
    for key, value in values.items():
        if value is None or value == []:
            continue
        params[_param_key(key)] = _param_value(value)
    return params


def _param_key(key: str) -> str:
    return _INVALID_KEY_CHARACTERS.sub("_", key)[:MAX_KEY_LENGTH]


def _param_value(value: Any) -> str:
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        text = ",".join(value)
    elif isinstance(value, (list, dict, bool)):
        text = json.dumps(value, default=str)
    else:
        text = str(value)
    if len(text) > MAX_PARAM_VALUE_LENGTH:
        marker = "...[truncated]"
        text = text[: MAX_PARAM_VALUE_LENGTH - len(marker)] + marker
    return text


def row_table(
    rows: Sequence[dict[str, Any]], inputs: Sequence[Mapping[str, Any]] | None = None
) -> dict[str, list[Any]]:
    """Return the per-row table in the ``{"columns": [...], "data": [[...], ...]}`` layout.

    ``correct`` is null for a row without an expected value.
    """
    data = []
    for row in rows:
        index = row["row_index"]
        row_inputs = inputs[index] if inputs is not None and index < len(inputs) else None
        score = row["score"]
        values = {
            **row,
            "inputs": None if row_inputs is None else dict(row_inputs),
            "correct": None if score is None else score == 1.0,
        }
        data.append([values[column] for column in ROW_COLUMNS])
    return {"columns": list(ROW_COLUMNS), "data": data}


def hide_password(uri: str) -> str:
    """Return `uri` with the password of its user part, if any, replaced by ``***``."""
    parts = urlsplit(uri)
    if not parts.password:
        return uri
    host = parts.netloc.rpartition("@")[2]
    netloc = f"{parts.username}:***@{host}"
    return urlunsplit(parts._replace(netloc=netloc))


def _epoch_ms(moment: datetime | None) -> int | None:
    """Convert a stored time to epoch milliseconds, taking a time without a zone as UTC."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)
