"""Workflow tasks of a load test: one arrival runs one dataset row through every step."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trunkline.errors import CallError, ConfigError, WorkflowError
from trunkline.loadtest.profile import Profile, Task
from trunkline.routing.router import Router
from trunkline.types.calls import CallRecord
from trunkline.workflows.cascade import CascadeStep
from trunkline.workflows.datasets import load_dataset
from trunkline.workflows.spec import WorkflowSpec, load_workflow
from trunkline.workflows.steps import ModelStep, Step, build_steps

#: Error kind of a row whose tool or post-processing function raised.
STEP_FAILED = "step_failed"


@dataclass
class WorkflowTask:
    """A loaded workflow with its steps, its input rows and its parameter values."""

    spec: WorkflowSpec
    steps: list[Step]
    rows: list[dict[str, Any]]
    params: dict[str, Any]

    @classmethod
    def load(cls, task: Task) -> WorkflowTask:
        """Load the workflow, its dataset and its parameters, checking every row's inputs.

        Raises:
            WorkflowError: the workflow or dataset is invalid, a row lacks a
                mapped column, or a step uses a registered prompt, which a
                load test does not read from the store.
        """
        assert task.workflow is not None
        spec = load_workflow(task.workflow)
        dataset = load_dataset(Path(task.data) if task.data else spec.default_data())
        try:
            steps = build_steps(spec)
        except WorkflowError as error:
            raise WorkflowError(
                f"{error}; a load test runs workflows with prompt files only, so give the "
                "step a prompt or messages template"
            ) from error
        rows = [_inputs(spec, row) for row in dataset.rows]
        return cls(spec=spec, steps=steps, rows=rows, params=spec.parameters(task.params))

    def routes(self, default_route: str) -> list[str]:
        """Return the routes its model steps call, cascade stages included."""
        found: dict[str, None] = {}
        for step in _flatten(self.steps):
            if isinstance(step, ModelStep):
                found[step.route or default_route] = None
        return list(found)

    async def run(self, row: int, router: Router) -> tuple[list[CallRecord], str | None]:
        """Run row `row` through every step; return its call records and the error kind, if any.

        A failed model call ends the row with the call's error kind, and a
        tool or post-processing function that raises ends it with
        ``step_failed``, as `trunkline run` would record the row.
        """
        values: dict[str, Any] = {**self.params, **self.rows[row]}
        records: list[CallRecord] = []
        for step in self.steps:
            try:
                result = await step.run(values, router)
            except (WorkflowError, ConfigError):
                raise
            except CallError as failure:
                record = getattr(failure, "record", None)
                if record is not None:
                    records.append(record)
                return records, failure.kind.value
            except Exception:  # a user's function failed on this row, as it may in production
                return records, STEP_FAILED
            values.update(result.values)
            records.extend(result.calls)
        return records, None


def load_workflow_tasks(profile: Profile) -> dict[int, WorkflowTask]:
    """Load every workflow task of `profile`, by its position in the task list."""
    return {
        position: WorkflowTask.load(task)
        for position, task in enumerate(profile.tasks)
        if task.workflow is not None
    }


def _inputs(spec: WorkflowSpec, row: dict[str, Any]) -> dict[str, Any]:
    if not spec.inputs:
        return dict(row)
    missing = [column for column in spec.inputs.values() if column not in row]
    if missing:
        raise WorkflowError(
            f"a dataset row lacks {', '.join(missing)}, which workflow {spec.name!r} maps; "
            f"the row has: {', '.join(row) or 'nothing'}"
        )
    return {name: row[column] for name, column in spec.inputs.items()}


def _flatten(steps: list[Step]) -> list[Step]:
    flat: list[Step] = []
    for step in steps:
        flat.append(step)
        if isinstance(step, CascadeStep):
            flat.extend(_flatten(step.stages))
    return flat
