"""Batch runs: every row of a dataset through a workflow, recorded and resumable.

Each row runs in its own span under the run's trace, with at most
`concurrency` rows in flight. A row's result goes to the store as soon as it
ends, so a run stopped by a crash or Ctrl-C resumes with `resume_run_id` and
pays for none of the rows that had finished.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from trunkline.errors import CallError, ConfigError, TrunklineError, WorkflowError
from trunkline.prompts import PromptRegistry
from trunkline.redaction import redact, redact_value
from trunkline.routing.router import Router
from trunkline.store.database import Store
from trunkline.routing.batch import batch_deployment
from trunkline.store.batches import run_batches
from trunkline.store.runs import all_rows, create_run, finished_rows, get_run, mark_run, run_spend
from trunkline.store.writer import StoreWriter
from trunkline.tracing import span, start_run
from trunkline.types.calls import CallRecord
from trunkline.workflows.datasets import Dataset
from trunkline.workflows.spec import WorkflowSpec
from trunkline.workflows.provider_batch import BatchStep, ProgressCallback, row_snapshot
from trunkline.workflows.steps import ModelStep, Step, StepResult, build_steps, model_steps
from trunkline.workflows.summary import RunSummary, summarise

logger = logging.getLogger(__name__)

RowCallback = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class RunPlan:
    """An opened run: its id, its row count and the rows still to run."""

    run_id: str
    row_count: int
    #: (row index, row) of every row that has not ended ok with the same inputs.
    pending: list[tuple[int, dict[str, Any]]]
    #: Rows that ended ok before, in the run that is resumed.
    resumed: int


def new_run_id() -> str:
    return "run_" + uuid.uuid4().hex[:16]


def row_hash(values: dict[str, Any]) -> str:
    """Hash a row's inputs, so a resumed run can tell an unchanged row from an edited one."""
    encoded = json.dumps(values, sort_keys=True, default=str).encode()
    return hashlib.sha256(encoded).hexdigest()


def map_inputs(workflow: WorkflowSpec, row: dict[str, Any]) -> dict[str, Any]:
    """Return a dataset row's values under the workflow's input names.

    Raises:
        WorkflowError: the row lacks a column that the workflow maps.
    """
    if not workflow.inputs:
        return dict(row)
    missing = [column for column in workflow.inputs.values() if column not in row]
    if missing:
        raise WorkflowError(
            f"a dataset row lacks {', '.join(missing)}, which workflow "
            f"{workflow.name!r} maps; the row has: {', '.join(row) or 'nothing'}"
        )
    return {name: row[column] for name, column in workflow.inputs.items()}


def normalise(value: Any) -> str:
    """Return the form outputs and expected values are compared in: trimmed and case-folded."""
    if isinstance(value, dict) and len(value) == 1:
        value = next(iter(value.values()))
    return str(value).strip().casefold()


class BatchRunner:
    """Runs a workflow over a dataset and records every row and call.

    Args:
        workflow: the validated workflow file.
        router: sends the model steps' calls.
        store: stores the run and its rows.
        writer: the store's background writer, already registered as an exporter.
        params: parameter values, defaults included (`WorkflowSpec.parameters`).
        concurrency: rows in flight at once.
        budget_usd: a hard limit on what the run's model calls spend together.
        batch_poll_s: seconds between polls of a Batch API job, for steps
            with ``mode = "batch"``.

    Raises:
        ConfigError: a batch step's deployment has no Batch API.
    """

    def __init__(
        self,
        workflow: WorkflowSpec,
        *,
        router: Router,
        store: Store,
        writer: StoreWriter,
        params: dict[str, Any],
        concurrency: int = 4,
        prompt_overrides: dict[str, str] | None = None,
        keep_outputs: bool = False,
        budget_usd: float | None = None,
        batch_poll_s: float = 30.0,
    ) -> None:
        if concurrency < 1:
            raise ConfigError(f"concurrency must be at least 1, got {concurrency}")
        if batch_poll_s <= 0:
            raise ConfigError(f"the batch poll interval must be above 0 seconds, got {batch_poll_s}")
        self.workflow = workflow
        self.router = router
        self.store = store
        self.writer = writer
        self.params = params
        self.concurrency = concurrency
        #: Model step name to the registered prompt it uses instead of its template.
        self.prompt_overrides = dict(prompt_overrides or {})
        self.steps: list[Step] = build_steps(workflow, PromptRegistry(store), prompt_overrides)
        self.workflow_hash = _workflow_hash(workflow, self.steps)
        #: The id of the run in progress or last run.
        self.run_id: str | None = None
        self.keep_outputs = keep_outputs
        #: What the run's model calls may spend together; the router refuses calls beyond it.
        self.budget_usd = budget_usd
        #: Row index to the row's output as the workflow produced it, before
        #: redaction, for scorers; filled only with `keep_outputs`.
        self.outputs: dict[int, Any] = {}
        self.batch_poll_s = batch_poll_s
        # Checked here, so that a step no Batch API can run stops the run before any call.
        for step in self.steps:
            if isinstance(step, ModelStep) and step.spec.mode == "batch":
                batch_deployment(router.settings, step.route, step.name)
        self._batch_steps: dict[str, BatchStep] = {}

    def row_inputs(self, row: dict[str, Any]) -> dict[str, Any]:
        return map_inputs(self.workflow, row)

    def check_columns(self, dataset: Dataset) -> None:
        needed = set(self.workflow.inputs.values())
        if self.workflow.expected:
            needed.add(self.workflow.expected)
        missing = sorted(needed - set(dataset.columns))
        if missing:
            raise WorkflowError(
                f"dataset {dataset.path} lacks column(s) {', '.join(missing)} that workflow "
                f"{self.workflow.name!r} maps; its columns are: {', '.join(dataset.columns)}"
            )

    async def run(
        self,
        dataset: Dataset,
        *,
        limit: int | None = None,
        resume_run_id: str | None = None,
        on_row: RowCallback | None = None,
        on_start: Callable[[int, int], None] | None = None,
        on_batch: ProgressCallback | None = None,
    ) -> RunSummary:
        """Run every row (the first `limit` only, if set) and return the summary.

        `on_start` receives the counts of rows to run and rows resumed;
        `on_row` receives each row's stored result as it ends; `on_batch`
        receives each change of a Batch API job's status or counts.

        Raises:
            WorkflowError: the dataset lacks a mapped column, or the resumed
                run was over other data or parameters.
        """
        plan = self.plan(dataset, limit=limit, resume_run_id=resume_run_id)
        if on_start is not None:
            on_start(len(plan.pending), plan.resumed)
        semaphore = asyncio.Semaphore(self.concurrency)

        async def guarded(index: int, row: dict[str, Any]) -> None:
            async with semaphore:
                result = await self.run_row(index, row, semaphore)
            self.writer.put_run_row(result)
            if on_row is not None:
                on_row(result)

        with start_run(
            self.workflow.name, run_id=plan.run_id, budget_usd=self.budget_usd, workflow=self.workflow.name
        ) as live:
            self.log_start(plan)
            try:
                self._open_batch_steps(plan.run_id, {index for index, _ in plan.pending}, on_batch, resume_run_id)
                async with asyncio.TaskGroup() as group:
                    for index, row in plan.pending:
                        group.create_task(guarded(index, row))
            except BaseException as error:
                self.writer.flush()
                self.mark_stopped(plan.run_id, error)
                cause = _first_trunkline_error(error)
                if cause is not None and cause is not error:
                    raise cause from error
                raise
            finally:
                for batch_step in self._batch_steps.values():
                    batch_step.cancel()
            self.writer.flush()
            summary = self.summarise(plan)
            live.attributes.update(summary.public())
        mark_run(self.store, plan.run_id, status="done", summary=summary.public())
        return summary

    def plan(self, dataset: Dataset, *, limit: int | None, resume_run_id: str | None) -> RunPlan:
        """Open the run, or reopen `resume_run_id`, and return the rows still to run.

        Raises:
            WorkflowError: the dataset lacks a mapped column, or the resumed
                run was over other data or parameters.
        """
        self.check_columns(dataset)
        rows = dataset.rows[:limit] if limit is not None else dataset.rows
        run_id, done = self._open_run(dataset, len(rows), resume_run_id)
        self.run_id = run_id
        pending = [
            (index, row)
            for index, row in enumerate(rows)
            if done.get(index, {}).get("row_hash") != row_hash(self.row_inputs(row))
        ]
        return RunPlan(run_id=run_id, row_count=len(rows), pending=pending, resumed=len(rows) - len(pending))

    def log_start(self, plan: RunPlan, where: str = "") -> None:
        logger.info(
            "run %s of workflow %s started: %d rows to run, %d already done, concurrency %d%s",
            plan.run_id,
            self.workflow.name,
            len(plan.pending),
            plan.resumed,
            self.concurrency,
            where,
        )

    def mark_stopped(self, run_id: str, error: BaseException) -> None:
        """Mark the run interrupted (Ctrl-C, cancellation) or failed, after `error` stopped it."""
        stopped = isinstance(error, (asyncio.CancelledError, KeyboardInterrupt))
        mark_run(self.store, run_id, status="interrupted" if stopped else "failed")

    def summarise(self, plan: RunPlan) -> RunSummary:
        """Summarise the run's stored rows and calls, and log the summary."""
        stored = [row for row in all_rows(self.store, plan.run_id) if row["row_index"] < plan.row_count]
        summary = summarise(
            plan.run_id,
            stored,
            resumed=plan.resumed,
            spend=run_spend(self.store, plan.run_id),
            batches=run_batches(self.store, plan.run_id),
        )
        logger.info(
            "run %s finished: %d rows, %d ok, %d errors, accuracy %s, cost %s USD",
            plan.run_id,
            summary.rows,
            summary.ok,
            summary.errors,
            "-" if summary.accuracy is None else f"{summary.accuracy:.3f}",
            "unknown" if summary.cost_usd is None else f"{summary.cost_usd:.6f}",
        )
        return summary

    def _open_run(
        self, dataset: Dataset, row_count: int, resume_run_id: str | None
    ) -> tuple[str, dict[int, dict[str, Any]]]:
        if resume_run_id is None:
            run_id = new_run_id()
            create_run(
                self.store,
                run_id=run_id,
                workflow=self.workflow.name,
                workflow_path=str(self.workflow.file) if self.workflow.file else None,
                data_path=str(dataset.path.resolve()),
                data_hash=dataset.content_hash,
                workflow_hash=self.workflow_hash,
                # Stored redacted, and compared redacted when the run resumes.
                params=redact_value(self.params),
                row_count=row_count,
            )
            return run_id, {}
        previous = get_run(self.store, resume_run_id)
        if previous["workflow"] != self.workflow.name:
            raise WorkflowError(
                f"run {resume_run_id} ran workflow {previous['workflow']!r}, not "
                f"{self.workflow.name!r}; resume it with the same workflow"
            )
        if previous["data_hash"] != dataset.content_hash:
            raise WorkflowError(
                f"run {resume_run_id} ran over {previous['data_path']}, whose content differs "
                f"from {dataset.path}; resume with the same data or start a new run"
            )
        stored_hash = previous.get("workflow_hash")
        if stored_hash is not None and stored_hash != self.workflow_hash:
            raise WorkflowError(
                f"the files of workflow {self.workflow.name!r} (its file, templates or tools) "
                f"changed since run {resume_run_id} started, so resumed rows would not be "
                "comparable; start a new run"
            )
        if previous["params"] != redact_value(self.params):
            raise WorkflowError(
                f"run {resume_run_id} used parameters {previous['params']}, not "
                f"{redact_value(self.params)}; resume with the same --param values or start a new run"
            )
        mark_run(self.store, resume_run_id, status="running")
        return resume_run_id, finished_rows(self.store, resume_run_id)

    def _open_batch_steps(
        self, run_id: str, pending: set[int], on_batch: ProgressCallback | None, resume_run_id: str | None
    ) -> None:
        self._batch_steps = {
            step.name: BatchStep(
                step,
                router=self.router,
                store=self.store,
                run_id=run_id,
                expected=pending,
                poll_interval_s=self.batch_poll_s,
                on_progress=on_batch,
            )
            for step in self.steps
            if isinstance(step, ModelStep) and step.spec.mode == "batch"
        }
        if resume_run_id is not None:
            for batch_step in self._batch_steps.values():
                batch_step.resume()

    def _resume_point(self, index: int, values: dict[str, Any], records: list[CallRecord]) -> int:
        """Return the first step row `index` runs, restoring what a stored batch job kept of it."""
        for position in range(len(self.steps) - 1, -1, -1):
            batch_step = self._batch_steps.get(self.steps[position].name)
            if batch_step is not None and index in batch_step.resumed:
                entry = batch_step.resumed[index]
                values.update(entry["values"])
                records.extend(CallRecord.model_validate(call) for call in entry["calls"])
                return position
        return 0

    async def _run_step(
        self,
        step: Step,
        index: int,
        values: dict[str, Any],
        records: list[CallRecord],
        semaphore: asyncio.Semaphore | None,
    ) -> StepResult:
        batch_step = self._batch_steps.get(step.name)
        if batch_step is None:
            return await step.run(values, self.router)
        snapshot = row_snapshot(values, self.params, records)
        # A row waiting for its job gives its place to rows still running
        # their online steps, or the job would wait for rows that cannot start.
        if semaphore is not None:
            semaphore.release()
        try:
            result = await batch_step.call(index, values, snapshot)
        finally:
            if semaphore is not None:
                await semaphore.acquire()
        return batch_step.step.step_result(result)

    async def run_row(
        self, index: int, row: dict[str, Any], semaphore: asyncio.Semaphore | None = None
    ) -> dict[str, Any]:
        """Run one row through every step and return its result as the store keeps it.

        `semaphore` is the run's bound on rows in flight, which a row gives
        up while it waits for a Batch API job.
        """
        inputs = self.row_inputs(row)
        values: dict[str, Any] = {**self.params, **inputs}
        records: list[CallRecord] = []
        details: dict[str, Any] = {}
        clock = time.perf_counter()
        error: str | None = None
        start = self._resume_point(index, values, records)
        with span(f"row {index}", "row", row_index=index) as live:
            for step in self.steps[start:]:
                try:
                    with span(step.name, "step", step_kind=step.spec.kind) as step_span:
                        result = await self._run_step(step, index, values, records, semaphore)
                        if result.details is not None:
                            details[step.name] = redact_value(result.details)
                            step_span.attributes.update(_span_details(result.details))
                except (WorkflowError, ConfigError):
                    raise
                except CallError as failure:
                    _keep_partial(failure, step, records, details)
                    record = getattr(failure, "record", None)
                    if record is not None:
                        records.append(record)
                    error = f"step {step.name}: {failure.kind.value}: {failure}"
                    break
                except Exception as failure:  # a user's tool function failed on this row
                    _keep_partial(failure, step, records, details)
                    logger.warning("row %d, step %s failed: %r", index, step.name, failure)
                    error = f"step {step.name}: {type(failure).__name__}: {failure}"
                    break
                values.update(result.values)
                records.extend(result.calls)
            for batch_step in self._batch_steps.values():
                batch_step.leave(index)
            if error is None and self.workflow.output not in values:
                error = (
                    f"no step produced {self.workflow.output!r}, the workflow's output; "
                    f"the row's values are: {', '.join(sorted(values))}"
                )
            if error is not None:
                live.fail(error)
        if self.keep_outputs and error is None:
            self.outputs[index] = values.get(self.workflow.output)
        return self._row_result(index, inputs, row, values, records, error, clock, details)

    def _row_result(
        self,
        index: int,
        inputs: dict[str, Any],
        row: dict[str, Any],
        values: dict[str, Any],
        records: list[CallRecord],
        error: str | None,
        clock: float,
        details: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        expected = row.get(self.workflow.expected) if self.workflow.expected else None
        output = values.get(self.workflow.output) if error is None else None
        score = None
        if expected not in (None, ""):
            score = 1.0 if error is None and normalise(output) == normalise(expected) else 0.0
        unpriced = any(record.cost.price_missing for record in records)
        return {
            "run_id": self.run_id,
            "row_index": index,
            "row_hash": row_hash(inputs),
            "status": "ok" if error is None else "error",
            # Redacted like call records, after the score used the real output.
            "output": redact_value(output),
            "expected": None if expected is None else str(expected),
            "score": score,
            "error": redact(error) if error else None,
            "latency_ms": (time.perf_counter() - clock) * 1000.0,
            "input_tokens": sum(record.usage.input_tokens for record in records),
            "output_tokens": sum(record.usage.output_tokens for record in records),
            "cost_usd": None if unpriced else sum(record.cost.total_usd or 0.0 for record in records),
            "price_missing": unpriced,
            "retries": sum(record.retries for record in records),
            "fallbacks": sum(record.fallbacks_taken for record in records),
            "finished_at": datetime.now(UTC),
            "details": details or None,
        }


def _first_trunkline_error(error: BaseException) -> TrunklineError | None:
    """Unwrap the task group's exception group to the error that stopped the run."""
    if isinstance(error, TrunklineError):
        return error
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            found = _first_trunkline_error(inner)
            if found is not None:
                return found
    return None


def _keep_partial(
    failure: BaseException, step: Step, records: list[CallRecord], details: dict[str, Any]
) -> None:
    """Keep the calls and details a failing step had made before it failed, such as a cascade's earlier stages."""
    partial = getattr(failure, "partial_result", None)
    if partial is None:
        return
    records.extend(partial.calls)
    if partial.details is not None:
        details[step.name] = redact_value(partial.details)


def _span_details(details: dict[str, Any]) -> dict[str, Any]:
    """Return the scalar parts of a step's details, which fit span attributes."""
    return {key: value for key, value in details.items() if isinstance(value, (str, int, float, bool))}


def _tool_workflow_hashes(steps: list[Step]) -> list[str]:
    """Return the content hashes of the workflows that agent steps' tools run, as `workflow_function` marks them.

    A tool may be such a function, or a function whose module contains one, as
    a tool that post-processes a workflow's result does.
    """
    hashes: set[str] = set()
    for step in steps:
        for tool in getattr(step, "tools", ()):
            # A function's globals are its module's, found even for a module
            # loaded from a workflow folder that is not in sys.modules.
            module_values = getattr(tool.function, "__globals__", {}).values()
            candidates = [tool.function, *module_values]
            hashes.update(
                value.workflow_hash
                for value in candidates
                if isinstance(getattr(value, "workflow_hash", None), str)
            )
    return [f"tool workflow {value}" for value in sorted(hashes)]


def _workflow_hash(workflow: WorkflowSpec, steps: list[Step]) -> str:
    """Hash the workflow's files, the registered prompt versions its steps resolved to, and the workflows its tools run."""
    registered = [
        f"{step.name}={step.registered.name}@{step.registered.version}:{step.registered.content_hash}"
        for step in model_steps(steps)
        if step.registered is not None
    ]
    registered.extend(_tool_workflow_hashes(steps))
    if not registered:
        return workflow.content_hash()
    digest = hashlib.sha256(workflow.content_hash().encode())
    for item in registered:
        digest.update(item.encode())
    return digest.hexdigest()
