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
  the store. When a batch run is logged again, its earlier MLflow runs in
  the experiment get the tag ``trunkline.superseded_by``, the new run's id;
- ``rows.json``, one row per dataset row, in the ``{"columns", "data"}``
  layout that `mlflow.log_table` writes, and registered as a table the same
  way, so that MLflow's table views and `mlflow.load_table` read it without
  Trunkline needing pandas.

Parameter values and the rows' inputs and expected values pass through
`trunkline.redaction.redact`, as every other record does.

MLflow is an optional dependency (``pip install 'trunkline[mlflow]'``) and is
imported only through `import_mlflow`, which sets MLflow's environment
defaults first and then sends MLflow's log records through Trunkline's.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from trunkline.config import MlflowSettings
from trunkline.errors import MlflowLoggingError, WorkflowError
from trunkline.redaction import redact, redact_value
from trunkline.store.database import Store
from trunkline.store.queries import RunCallLabels, run_call_labels
from trunkline.store.runs import all_rows, get_run, run_spend
from trunkline.workflows.datasets import Dataset, load_dataset
from trunkline.workflows.runner import row_hash
from trunkline.workflows.spec import WorkflowSpec, load_workflow
from trunkline.workflows.summary import percentile, summarise

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

logger = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'trunkline[mlflow]'"
ROWS_ARTIFACT = "rows.json"
RUN_ID_TAG = "trunkline.run_id"
WORKFLOW_TAG = "trunkline.workflow"
SUPERSEDED_BY_TAG = "trunkline.superseded_by"
# Variables of MLflow 3.18 (mlflow/environment_variables.py) that
# `import_mlflow` sets when the environment does not.
MLFLOW_ENVIRONMENT_DEFAULTS = {
    # MLflow decides when it is imported whether to start a thread that sends
    # usage events over the network; either variable stops it.
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    # MLflow's own defaults (7 retries, backoff factor 2, 120 s per request)
    # make an unreachable tracking server take about 4 minutes to fail. With
    # these, urllib3 2.x waits 0 s and then 2 s plus up to 1 s of jitter, so
    # a refused connection fails within 3 s. A host that never responds
    # takes three 15 s timeouts.
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "15",
    # Otherwise MLflow gives its loggers, and those of SQLAlchemy and Alembic,
    # handlers of its own when it is imported.
    "MLFLOW_CONFIGURE_LOGGING": "false",
}
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
# The password in a URL's user information, as in scheme://user:password@host.
# It runs to the last "@" before the path, as urlsplit reads it, so a
# password that contains "@" is hidden whole.
_URL_PASSWORD = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/?#@]*:)[^\s/?#]*@")
# MLflow returns at most this many runs from one search.
_MAX_SEARCH_RESULTS = 1000


def import_mlflow() -> ModuleType:
    """Import MLflow with `MLFLOW_ENVIRONMENT_DEFAULTS` applied, and route its log records.

    A variable that is already set keeps its value, so a user can still raise
    MLflow's retry budget or timeout. Afterwards the ``mlflow`` logger sends
    its records through the level and handlers of the ``trunkline`` logger.

    Raises:
        MlflowLoggingError: MLflow is not installed or fails to import. The
            message names the package to install.
    """
    for name, value in MLFLOW_ENVIRONMENT_DEFAULTS.items():
        os.environ.setdefault(name, value)
    try:
        import mlflow
        import mlflow.tracking
    except ImportError as error:
        if error.name == "mlflow":
            raise logging_error(
                "logging runs to MLflow needs the mlflow package, which is not installed; "
                f"install it with: {INSTALL_HINT}"
            ) from error
        raise logging_error(
            f"MLflow is installed but cannot be imported ({error}); "
            f"reinstall it with: {INSTALL_HINT}"
        ) from error
    route_mlflow_logs()
    return mlflow


class _TrunklineForwarder(logging.Handler):
    """A handler that passes each record to the handlers of the ``trunkline`` logger."""

    def emit(self, record: logging.LogRecord) -> None:
        logging.getLogger("trunkline").handle(record)


def route_mlflow_logs() -> None:
    """Make the ``mlflow`` logger use the level and handlers of the ``trunkline`` logger.

    Any handler that MLflow attached is removed, so MLflow's INFO lines are
    hidden at Trunkline's default WARNING level and its warnings are
    rendered as Trunkline's are. The level is copied when this runs, so
    call it again after changing Trunkline's level.
    """
    mlflow_logger = logging.getLogger("mlflow")
    mlflow_logger.handlers = [_TrunklineForwarder()]
    mlflow_logger.setLevel(logging.getLogger("trunkline").getEffectiveLevel())
    mlflow_logger.propagate = False


def logging_error(message: str) -> MlflowLoggingError:
    """Return an `MlflowLoggingError` whose message has URL passwords and other secrets hidden.

    MLflow quotes the tracking URI, password included, in its own errors,
    and those are part of the message.
    """
    return MlflowLoggingError(redact(hide_passwords(message)))


@dataclass(frozen=True)
class MlflowTarget:
    """A tracking store and experiment, checked and ready to receive runs."""

    client: MlflowClient
    tracking_uri: str
    experiment_id: str
    experiment_name: str

    def display_uri(self) -> str:
        """Return the tracking URI with any password hidden, for messages."""
        return hide_passwords(self.tracking_uri)


@dataclass(frozen=True)
class LoggedRun:
    """The MLflow run that `log_run` created for a batch run.

    `superseded` lists the earlier MLflow runs of the same batch run in the
    experiment that were tagged ``trunkline.superseded_by`` with its id.
    """

    run_id: str
    mlflow_run_id: str
    experiment_name: str
    location: str
    superseded: tuple[str, ...] = ()

    def logged_message(self) -> str:
        """Return the line that reports where the run was logged."""
        return (
            f"logged run {self.run_id} to MLflow run {self.mlflow_run_id} in experiment "
            f"{self.experiment_name!r} at {self.location}"
        )

    def superseded_message(self) -> str | None:
        """Return the line that lists the superseded MLflow runs, or None when there are none."""
        if not self.superseded:
            return None
        return (
            f"tagged {len(self.superseded)} earlier MLflow run(s) of run {self.run_id} "
            f"({', '.join(self.superseded)}) with {SUPERSEDED_BY_TAG}={self.mlflow_run_id}"
        )


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
    location = hide_passwords(uri) if uri else "MLflow's default tracking URI"
    try:
        client = MlflowClient(tracking_uri=uri)
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            experiment_id = _create_experiment(client, name, settings.artifact_location)
        elif experiment.lifecycle_stage == "deleted":
            raise logging_error(
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
        raise logging_error(
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
    inputs: Sequence[Mapping[str, Any] | None] | None = None,
    params: Mapping[str, Any] | None = None,
) -> LoggedRun:
    """Log a finished batch run, read from `store`, as one MLflow run.

    The experiment's earlier MLflow runs of the same batch run are then
    tagged ``trunkline.superseded_by`` with the new MLflow run's id. A
    failure to tag them is logged as a warning, not raised, because the new
    MLflow run is complete by then.

    Args:
        target: the tracking store and experiment, from `open_target`.
        store: the store that recorded the run.
        run_id: Trunkline's id of the run.
        inputs: each row's input values, indexed by row; None for a row whose
            inputs are unknown. The store does not keep inputs, so without
            this the table's ``inputs`` column is null.
        params: more parameters of this invocation, such as ``limit``. None
            values are left out.

    Raises:
        MlflowLoggingError: the run has not finished, or MLflow rejected the
            run. An MLflow run created before the failure is marked FAILED.
    """
    run = get_run(store, run_id)
    require_finished(run)
    rows = run_rows(store, run)
    labels = run_call_labels(store, run_id)
    client = target.client
    try:
        created = client.create_run(
            target.experiment_id,
            start_time=_epoch_ms(run["started_at"]),
            tags={RUN_ID_TAG: run_id, WORKFLOW_TAG: run["workflow"]},
            run_name=run_id,
        )
    except Exception as error:  # any back-end error, as in open_target
        raise logging_error(
            f"cannot create an MLflow run for run {run_id} in experiment "
            f"{target.experiment_name!r} at {target.display_uri()}: {error}"
        ) from error
    mlflow_run_id = created.info.run_id
    try:
        _log_contents(client, mlflow_run_id, run, rows, labels, inputs, params, run_spend(store, run_id))
        client.set_terminated(mlflow_run_id, "FINISHED", end_time=_epoch_ms(run["ended_at"]))
    except Exception as error:  # any back-end error, as in open_target
        _mark_failed(client, mlflow_run_id, run_id)
        raise logging_error(
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
    return LoggedRun(
        run_id=run_id,
        mlflow_run_id=mlflow_run_id,
        experiment_name=target.experiment_name,
        location=target.display_uri(),
        superseded=_supersede_earlier_runs(target, run_id, mlflow_run_id),
    )


def require_finished(run: Mapping[str, Any]) -> None:
    """Raise unless the stored run `run` has finished.

    Raises:
        MlflowLoggingError: the run's status is not ``done``.
    """
    if run["status"] != "done":
        raise logging_error(
            f"run {run['run_id']} has status {run['status']!r}; only a finished run is logged "
            f"to MLflow, so finish it first with --resume {run['run_id']}"
        )


def _supersede_earlier_runs(
    target: MlflowTarget, run_id: str, mlflow_run_id: str
) -> tuple[str, ...]:
    """Tag the experiment's other MLflow runs of `run_id` as superseded, and return their ids."""
    client = target.client
    # Trunkline's run ids are "run_" and hexadecimal digits, so the value
    # needs no escaping.
    query = f"tags.`{RUN_ID_TAG}` = '{run_id}'"
    try:
        found = client.search_runs(
            [target.experiment_id], filter_string=query, max_results=_MAX_SEARCH_RESULTS
        )
    except Exception as error:  # any back-end error, as in open_target
        logger.warning(
            "earlier MLflow runs of run %s are not tagged %s: searching experiment %s failed: %s",
            run_id,
            SUPERSEDED_BY_TAG,
            target.experiment_name,
            hide_passwords(str(error)),
        )
        return ()
    if found.token:
        logger.warning(
            "run %s has more than %d MLflow runs in experiment %s; only the first %d are "
            "tagged %s",
            run_id,
            _MAX_SEARCH_RESULTS,
            target.experiment_name,
            _MAX_SEARCH_RESULTS,
            SUPERSEDED_BY_TAG,
        )
    earlier = [run.info.run_id for run in found if run.info.run_id != mlflow_run_id]
    tagged: list[str] = []
    for earlier_id in earlier:
        try:
            client.set_tag(earlier_id, SUPERSEDED_BY_TAG, mlflow_run_id)
        except Exception as error:  # any back-end error, as in open_target
            # The next tag would fail the same way after the same retries, so
            # the rest are reported rather than tried.
            untagged = earlier[len(tagged) :]
            logger.warning(
                "MLflow runs %s of run %s are not tagged %s=%s: %s",
                ", ".join(untagged),
                run_id,
                SUPERSEDED_BY_TAG,
                mlflow_run_id,
                hide_passwords(str(error)),
            )
            break
        tagged.append(earlier_id)
    return tuple(tagged)


def _log_contents(
    client: MlflowClient,
    mlflow_run_id: str,
    run: dict[str, Any],
    rows: list[dict[str, Any]],
    labels: RunCallLabels,
    inputs: Sequence[Mapping[str, Any] | None] | None,
    params: Mapping[str, Any] | None,
    spend: dict[str, Any],
) -> None:
    from mlflow.entities import Metric, Param
    from mlflow.utils.mlflow_tags import MLFLOW_LOGGED_ARTIFACTS

    timestamp = _epoch_ms(run["ended_at"])
    metric_records = [
        Metric(key, value, timestamp, 0)
        for key, value in run_metrics(run["run_id"], rows, labels, spend).items()
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
            hide_passwords(str(error)),
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
    run_id: str,
    rows: Sequence[dict[str, Any]],
    labels: RunCallLabels,
    spend: dict[str, Any] | None = None,
) -> dict[str, float]:
    """Compute the MLflow metrics of a run from its stored rows; unknown values are left out.

    `spend` (`trunkline.store.runs.run_spend`) makes tokens and cost count
    every call of the run, as the run's printed summary does.

    ``cost_usd`` is logged only when every row was priced. Otherwise
    ``cost_usd_priced`` is the cost of the priced rows, and ``unpriced_rows``
    counts the others.
    """
    summary = summarise(run_id, rows, spend=spend)
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
    for step, cascade in summary.cascades.items():
        for stage, share in cascade.share.items():
            values[f"cascade.{step}.share.{stage}"] = share
        values[f"cascade.{step}.saved_usd"] = cascade.saved_usd
    return {key: float(value) for key, value in values.items() if value is not None}


def run_params(
    run: dict[str, Any],
    row_count: int,
    labels: RunCallLabels,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, str]:
    """Return the MLflow parameters of a run, as redacted strings within MLflow's limits."""
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
    # Redacted whole and before truncation, so that neither a key inside a
    # list or dict nor a key cut in half at the limit escapes the patterns.
    text = redact(text)
    if len(text) > MAX_PARAM_VALUE_LENGTH:
        marker = "...[truncated]"
        text = text[: MAX_PARAM_VALUE_LENGTH - len(marker)] + marker
    return text


def row_table(
    rows: Sequence[dict[str, Any]], inputs: Sequence[Mapping[str, Any] | None] | None = None
) -> dict[str, list[Any]]:
    """Return the per-row table in the ``{"columns": [...], "data": [[...], ...]}`` layout.

    ``correct`` is null for a row without an expected value. Inputs and
    expected values come from the dataset, so they are redacted here; the
    stored outputs and errors were redacted when the run stored them.
    """
    data = []
    for row in rows:
        index = row["row_index"]
        row_inputs = inputs[index] if inputs is not None and index < len(inputs) else None
        score = row["score"]
        values = {
            **row,
            "inputs": None if row_inputs is None else redact_value(dict(row_inputs)),
            "expected": redact_value(row["expected"]),
            "correct": None if score is None else score == 1.0,
        }
        data.append([values[column] for column in ROW_COLUMNS])
    return {"columns": list(ROW_COLUMNS), "data": data}


@dataclass(frozen=True)
class RowInputs:
    """Rows' inputs read back from a dataset file, for `log_run`.

    `inputs` is indexed by row, with None for a row whose inputs were not
    found. `problem` is the reason some or all rows have none.
    """

    inputs: list[dict[str, Any] | None]
    problem: str | None = None


def read_row_inputs(
    run: Mapping[str, Any], rows: Sequence[Mapping[str, Any]], data: Path | None = None
) -> RowInputs:
    """Read the inputs of a stored run's rows again from `data`, or from the run's data file.

    The store keeps a hash of each row's inputs, not the inputs, so each row
    of the file is mapped through the workflow's ``[inputs]`` and kept only
    when it hashes to the stored ``row_hash``. The run's own data file is
    read only when its content hash is the one the run recorded.

    Raises:
        WorkflowError: `data` is missing or is not a readable dataset.
    """
    empty: list[dict[str, Any] | None] = [None] * len(rows)
    workflow = _recorded_workflow(run)
    if isinstance(workflow, str):
        return RowInputs(empty, workflow)
    if data is not None:
        dataset = load_dataset(data)
    else:
        recorded = _recorded_dataset(run)
        if isinstance(recorded, str):
            return RowInputs(empty, recorded)
        dataset = recorded
    inputs = [_matching_inputs(workflow, dataset, row) for row in rows]
    unmatched = sum(1 for values in inputs if values is None)
    if not unmatched:
        return RowInputs(inputs)
    problem = (
        f"{unmatched} of {len(rows)} rows of run {run['run_id']} differ from those of "
        f"{dataset.path}, so the rows table has no inputs for them"
    )
    return RowInputs(inputs, problem)


def _recorded_workflow(run: Mapping[str, Any]) -> WorkflowSpec | str:
    """Load the run's workflow file, or return why it cannot be loaded."""
    path = run.get("workflow_path")
    if path is None:
        return f"run {run['run_id']} recorded no workflow file, so the rows table has no inputs"
    try:
        return load_workflow(path)
    except WorkflowError as error:
        return (
            f"the workflow of run {run['run_id']} cannot be read, so the rows table has no "
            f"inputs: {error}"
        )


def _recorded_dataset(run: Mapping[str, Any]) -> Dataset | str:
    """Load the data file the run recorded, or return why it cannot be used."""
    path = run.get("data_path")
    file = f"the data file of run {run['run_id']}, {path},"
    outcome = "so the rows table has no inputs; pass --data FILE with the data the run read"
    if path is None:
        return f"run {run['run_id']} recorded no data file, {outcome}"
    if not Path(path).is_file():
        return f"{file} no longer exists, {outcome}"
    try:
        dataset = load_dataset(path)
    except WorkflowError as error:
        return f"{file} cannot be read ({error}), {outcome}"
    if dataset.content_hash != run.get("data_hash"):
        return f"{file} changed after the run, {outcome}"
    return dataset


def _matching_inputs(
    workflow: WorkflowSpec, dataset: Dataset, row: Mapping[str, Any]
) -> dict[str, Any] | None:
    index = row["row_index"]
    if index >= len(dataset.rows):
        return None
    values = dataset.rows[index]
    # The mapping of BatchRunner.row_inputs: the whole row when the workflow
    # maps no columns.
    if not workflow.inputs:
        inputs = dict(values)
    elif all(column in values for column in workflow.inputs.values()):
        inputs = {name: values[column] for name, column in workflow.inputs.items()}
    else:
        return None
    return inputs if row_hash(inputs) == row["row_hash"] else None


def hide_passwords(text: str) -> str:
    """Return `text` with the password of every URL in it replaced by ``***``."""
    return _URL_PASSWORD.sub(r"\g<1>***@", text)


def _epoch_ms(moment: datetime | None) -> int | None:
    """Convert a stored time to epoch milliseconds, taking a time without a zone as UTC."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)
