"""Experiments: a workflow run over a dataset, every row scored, the results stored for comparison.

An experiment runs the workflow `repeat` times as batch runs, scores each
row's output with every scorer, and stores one `experiments` row and one
`experiment_rows` row per dataset row and repeat. The first scorer is the
primary one: its mean, with a 95% bootstrap interval, is the experiment's
score, and the router's score-based downgrades read it per task, deployment
and prompt version.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from trunkline.config import Settings
from trunkline.errors import ConfigError, TrunklineError
from trunkline.evals.scores import Scorer, ScoringError
from trunkline.evals.statistics import MeanInterval, bootstrap_mean
from trunkline.redaction import redact, redact_value
from trunkline.routing.router import Router
from trunkline.store.database import Store
from trunkline.store.experiments import record_experiment
from trunkline.store.runs import all_rows
from trunkline.store.tables import experiment_rows
from trunkline.store.writer import StoreWriter
from trunkline.workflows.datasets import Dataset
from trunkline.workflows.runner import BatchRunner
from trunkline.workflows.spec import StepSpec, WorkflowSpec
from trunkline.workflows.steps import model_steps
from trunkline.workflows.summary import percentile


@dataclass
class ExperimentResult:
    """The figures of one experiment; `scores` maps each scorer to its mean and interval."""

    experiment_id: str
    name: str
    rows: int
    repeat: int
    errors: int
    scores: dict[str, MeanInterval]
    cost_usd: float | None
    input_tokens: int
    output_tokens: int
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    run_ids: list[str] = field(default_factory=list)
    dataset_hash: str = ""
    prompt: str | None = None
    deployment: str = ""

    @property
    def primary(self) -> MeanInterval:
        return next(iter(self.scores.values()))

    def public(self) -> dict[str, Any]:
        return {
            "experiment_id": self.experiment_id,
            "name": self.name,
            "rows": self.rows,
            "repeat": self.repeat,
            "errors": self.errors,
            "scores": {
                name: {"mean": value.mean, "ci_low": value.low, "ci_high": value.high, "count": value.count}
                for name, value in self.scores.items()
            },
            "cost_usd": self.cost_usd,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "latency_p50_ms": self.latency_p50_ms,
            "latency_p95_ms": self.latency_p95_ms,
            "run_ids": self.run_ids,
            "dataset_hash": self.dataset_hash,
            "prompt": self.prompt,
            "deployment": self.deployment,
        }


def with_route(spec: WorkflowSpec, route: str, only: str | None = None) -> WorkflowSpec:
    """Return `spec` with every model step, or only the step named `only`, sent to `route`."""

    def routed(step: StepSpec) -> StepSpec:
        if step.kind == "cascade":
            return step.model_copy(update={"stages": [routed(stage) for stage in step.stages]})
        if step.kind == "model" and only in (None, step.name):
            return step.model_copy(update={"route": route})
        return step

    steps = [routed(step) for step in spec.steps]
    return spec.model_copy(update={"steps": steps} if only else {"route": route, "steps": steps})


def _row_key(dataset: Dataset, index: int) -> str:
    # A dataset's own id column keeps rows paired across files that reorder them.
    row = dataset.rows[index]
    for column in ("id", "row_id"):
        if row.get(column) not in (None, ""):
            return str(row[column])
    return str(index)


async def run_experiment(
    spec: WorkflowSpec,
    dataset: Dataset,
    *,
    settings: Settings,
    router: Router,
    store: Store,
    writer: StoreWriter,
    params: dict[str, Any],
    scorers: list[Scorer],
    repeat: int = 1,
    limit: int | None = None,
    concurrency: int = 4,
    prompt_overrides: dict[str, str] | None = None,
    name: str | None = None,
    golden: bool = False,
    budget_usd: float | None = None,
    details: dict[str, Any] | None = None,
) -> ExperimentResult:
    """Run `spec` over `dataset` `repeat` times, score every row, store and return the experiment.

    A row that failed scores 0 on every scorer, with its error as the
    explanation: a failure is never left out of the mean. `budget_usd` caps
    each repeat's model calls; `details` is stored with the experiment.

    Raises:
        ConfigError: no scorer was given, `repeat` is below 1, or the dataset
            has no expected column while a scorer compares against one.
    """
    if not scorers:
        raise ConfigError("an experiment needs at least one scorer, such as exact or fuzzy")
    if repeat < 1:
        raise ConfigError(f"repeat must be 1 or more, got {repeat}")
    started = datetime.now(UTC)
    experiment_id = f"exp_{uuid.uuid4().hex[:16]}"
    rows = dataset.rows[:limit] if limit is not None else dataset.rows
    values: dict[str, list[float]] = {scorer.name: [] for scorer in scorers}
    stored_rows: list[dict[str, Any]] = []
    run_ids: list[str] = []
    runner: BatchRunner | None = None
    cost_known = True
    totals = {"cost": 0.0, "input": 0, "output": 0, "errors": 0}
    latencies: list[float] = []
    for number in range(repeat):
        runner = BatchRunner(
            spec, router=router, store=store, writer=writer, params=params, concurrency=concurrency,
            prompt_overrides=prompt_overrides, keep_outputs=True, budget_usd=budget_usd,
        )
        summary = await runner.run(dataset, limit=limit)
        run_ids.append(summary.run_id)
        cost_known = cost_known and summary.cost_usd is not None
        totals["cost"] += summary.cost_usd_priced
        totals["input"] += summary.input_tokens
        totals["output"] += summary.output_tokens
        totals["errors"] += summary.errors
        by_index = {row["row_index"]: row for row in all_rows(store, summary.run_id)}
        for index, row in enumerate(rows):
            result = by_index[index]
            latencies.append(result["latency_ms"])
            inputs = runner.row_inputs(row)
            expected = row.get(spec.expected) if spec.expected else None
            row_scores = await _score_row(
                scorers, runner.outputs.get(index), expected, inputs, result, _row_key(dataset, index)
            )
            for scorer_name, (value, _) in row_scores.items():
                values[scorer_name].append(value)
            first_value, first_explanation = next(iter(row_scores.values()))
            stored_rows.append(
                {
                    "experiment_id": experiment_id,
                    "row_key": _row_key(dataset, index),
                    "repeat": number,
                    "inputs": redact_value(inputs),
                    "expected": redact_value(expected),
                    "output": result["output"],
                    "score": first_value,
                    "explanation": first_explanation,
                    "cost_usd": result["cost_usd"],
                    "latency_ms": result["latency_ms"],
                    "error": result["error"],
                    "scores": {
                        scorer_name: {"value": value, "explanation": explanation}
                        for scorer_name, (value, explanation) in row_scores.items()
                    },
                }
            )
    assert runner is not None
    intervals = {scorer_name: bootstrap_mean(scored) for scorer_name, scored in values.items()}
    deployment, model = _deployment(settings, spec)
    prompt = _prompt(runner)
    result = ExperimentResult(
        experiment_id=experiment_id,
        name=name or f"{spec.name} on {dataset.path.name}",
        rows=len(rows),
        repeat=repeat,
        errors=totals["errors"],
        scores=intervals,
        cost_usd=totals["cost"] if cost_known else None,
        input_tokens=totals["input"],
        output_tokens=totals["output"],
        latency_p50_ms=percentile(latencies, 0.50),
        latency_p95_ms=percentile(latencies, 0.95),
        run_ids=run_ids,
        dataset_hash=dataset.content_hash,
        prompt=prompt,
        deployment=deployment,
    )
    primary = result.primary
    record_experiment(
        store,
        experiment_id=experiment_id,
        name=result.name,
        task=spec.name,
        route=spec.route or settings.default_route,
        deployment=deployment,
        model=model,
        prompt_name=prompt.partition("@")[0] if prompt else None,
        prompt_version=prompt.partition("@")[2] if prompt else None,
        dataset_name=dataset.path.name,
        dataset_hash=dataset.content_hash,
        golden=golden,
        row_count=len(rows),
        mean_score=primary.mean,
        ci_low=primary.low,
        ci_high=primary.high,
        cost_usd=result.cost_usd,
        latency_p50_ms=result.latency_p50_ms,
        latency_p95_ms=result.latency_p95_ms,
        started_at=started,
        details={
            **result.public(),
            "scorers": [scorer.name for scorer in scorers],
            "params": redact_value(params),
            **(details or {}),
        },
    )
    with store.engine.begin() as connection:
        for start in range(0, len(stored_rows), 500):
            connection.execute(experiment_rows.insert(), stored_rows[start : start + 500])
    return result


async def _score_row(
    scorers: list[Scorer],
    output: Any,
    expected: Any,
    inputs: dict[str, Any],
    result: dict[str, Any],
    row_key: str,
) -> dict[str, tuple[float, str | None]]:
    if result["status"] != "ok":
        reason = f"the row failed: {result['error']}"
        return {scorer.name: (0.0, reason) for scorer in scorers}
    scores = {}
    for scorer in scorers:
        try:
            score = await scorer.ascore(output, expected, inputs)
        except TrunklineError:
            raise
        except Exception as error:
            # A user's scoring function failed: name it and the row, with no traceback.
            raise ScoringError(
                f"scorer {scorer.name} failed on row {row_key}: {type(error).__name__}: "
                f"{redact(str(error))}; a python scorer is called as function(output, expected, row)"
            ) from error
        scores[scorer.name] = (score.value, redact(score.explanation) if score.explanation else None)
    return scores


def _deployment(settings: Settings, spec: WorkflowSpec) -> tuple[str, str | None]:
    """Return the first deployment and model of the route the model steps use."""
    routes = [
        step.route or spec.route or settings.default_route for step in spec.all_steps() if step.kind == "model"
    ]
    if not routes:
        return "none", None
    route = settings.route(routes[0])
    name = route.deployments[0]
    return name, settings.deployments[name].model


def _prompt(runner: BatchRunner) -> str | None:
    for step in model_steps(runner.steps):
        if step.registered is not None:
            return step.registered.reference
    return None
