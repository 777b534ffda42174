"""`trunkline plan`: which steps of a workflow can run through a Batch API, and what each choice costs.

Estimates, not measurements. Input tokens come from the step's prompts
rendered for each row, at four characters a token. A variable that only an
earlier step sets renders empty, and the plan names it. Output tokens come
from the mean of the step's recorded calls of earlier runs where there are
some, else from the step's ``max_tokens``, else from the deployment's
``max_output_tokens``. The last two are upper bounds. Each step is priced
as if every row reached it. Agent steps are estimated by
`trunkline.workflows.agent_plan`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import jinja2
from pydantic import BaseModel
from sqlalchemy import case, func, select

from trunkline.config import Settings
from trunkline.pricing import batch_cost, price_usage
from trunkline.providers.base import estimate_tokens
from trunkline.providers.openai_batch import BATCH_PROVIDERS, COMPLETION_WINDOW
from trunkline.routing.policies import tool_definition_characters
from trunkline.store.agent_rows import agent_row_usage
from trunkline.store.database import Store
from trunkline.store.tables import calls
from trunkline.tools import load_tool
from trunkline.workflows.steps import build_steps
from trunkline.types.usage import Cost, Usage
from trunkline.workflows.agent_plan import AgentEstimate, estimate_agent
from trunkline.workflows.spec import StepSpec, WorkflowSpec
from trunkline.workflows.steps import FunctionStep


class StepPlan(BaseModel):
    """One step's choice between online and batch, with the estimate behind it."""

    step: str
    kind: str
    #: The mode the workflow file sets: ``online`` or ``batch``.
    mode: str
    #: Whether the step could run through a Batch API.
    batchable: bool
    #: Why it cannot, when it cannot.
    reason: str | None = None
    deployment: str | None = None
    provider: str | None = None
    model: str | None = None
    rows: int = 0
    input_tokens: int | None = None
    input_source: str | None = None
    output_tokens: int | None = None
    output_source: str | None = None
    #: USD for every row online and through the Batch API; None where no price is known.
    online_cost_usd: float | None = None
    batch_cost_usd: float | None = None
    #: Seconds the rows would take online: the recorded mean latency times
    #: the rows, over the run's concurrency; None without recorded calls.
    online_wait_s: float | None = None
    #: The maximum time a batch job may take: the Batch API's completion window, such as ``24h``.
    batch_wait: str | None = None
    notes: list[str] = []
    #: An agent step's typical and worst-case figures. For an agent step, the
    #: token and cost fields above are its typical figures for the whole run.
    agent: AgentEstimate | None = None


class WorkflowPlan(BaseModel):
    """The plan of every step of a workflow over some rows."""

    workflow: str
    rows: int
    steps: list[StepPlan]

    def total(self, mode: str) -> float | None:
        """Return the cost of the model and agent steps: as ``declared``, all ``online``, or ``best``.

        ``best`` takes the batch price wherever a step can run as batch.
        Agent steps count at their typical cost. None when any of these
        steps' price is unknown.
        """
        total = 0.0
        for step in self.steps:
            if step.kind not in ("model", "agent"):
                continue
            batch = (mode == "declared" and step.mode == "batch") or (mode == "best" and step.batchable)
            cost = step.batch_cost_usd if batch else step.online_cost_usd
            if cost is None:
                return None
            total += cost
        return total


async def plan_workflow(
    spec: WorkflowSpec,
    settings: Settings,
    rows: Sequence[dict[str, Any]],
    params: dict[str, Any],
    *,
    store: Store | None = None,
    concurrency: int = 4,
    run_tools: bool = False,
) -> WorkflowPlan:
    """Plan every step of `spec` over `rows`, the dataset's rows already mapped to inputs.

    `store` gives the recorded calls of earlier runs; without it, output
    tokens come from ``max_tokens``. With `run_tools`, the workflow's tool
    and post functions run on every row first, so that prompts render with
    the values they return. A function that fails on a row, or needs a
    model step's output, is left out for that row.

    Raises:
        WorkflowError: a tool or post function cannot be loaded, or a step
            is invalid as a run would find it.
    """
    if not any(step.prompt_ref for step in spec.all_steps()):
        # Built as a run builds them, so a workflow that `run` would reject
        # (an unknown tool choice, a missing schema) fails here too. Steps
        # with registered prompts are left out, since a plan may have no store.
        build_steps(spec)
    planner = _Planner(spec, settings, rows, params, store, concurrency)
    if run_tools:
        await planner.run_functions()
    steps: list[StepPlan] = []
    for step in spec.steps:
        steps.append(planner.plan(step))
        for stage in step.stages:
            steps.append(planner.plan(stage, cascade=step.name))
    return WorkflowPlan(workflow=spec.name, rows=len(rows), steps=steps)


class _MissingVariables(jinja2.Undefined):
    """Render an unknown variable as empty, and remember its name."""

    found: set[str] = set()

    def __str__(self) -> str:
        type(self).found.add(self._undefined_name or "?")
        return ""

    def __iter__(self):  # noqa: ANN204
        type(self).found.add(self._undefined_name or "?")
        return iter(())


class _Planner:
    def __init__(
        self,
        spec: WorkflowSpec,
        settings: Settings,
        rows: Sequence[dict[str, Any]],
        params: dict[str, Any],
        store: Store | None,
        concurrency: int,
    ) -> None:
        self.spec = spec
        self.settings = settings
        self.rows = rows
        self.params = params
        self.store = store
        self.concurrency = concurrency
        self.now = datetime.now(UTC)
        #: Each row's values: parameters, inputs, and what the functions returned with `run_tools`.
        self.values = [{**params, **row} for row in rows]
        #: Per function step, the rows it ran on and its first failure, with `run_tools`.
        self.function_runs: dict[str, tuple[int, str | None]] = {}
        self.undefined = type("Missing", (_MissingVariables,), {"found": set()})
        self.environment = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(spec.folder)), undefined=self.undefined, autoescape=False
        )

    async def run_functions(self) -> None:
        """Run the tool and post steps before the last model or agent step on every row.

        What they return is kept in the row's values.

        Steps after the last model step render no prompt, and they would
        need the model's answers, so they are left out.
        """
        calling = [
            position
            for position, spec in enumerate(self.spec.steps)
            if spec.kind in ("model", "cascade", "agent")
        ]
        for spec in self.spec.steps[: calling[-1] if calling else 0]:
            if spec.kind not in ("tool", "post"):
                continue
            step = FunctionStep(spec, self.spec)
            ran, failure = 0, None
            for values in self.values:
                try:
                    result = await step.call(values)
                except Exception as error:  # a user's function failed, or needs a model's output
                    failure = failure or f"{type(error).__name__}: {error}"
                    continue
                values.update(result.values)
                ran += 1
            self.function_runs[spec.name] = (ran, failure)

    def plan(self, step: StepSpec, cascade: str | None = None) -> StepPlan:
        plan = StepPlan(step=step.name, kind=step.kind, mode=step.mode, batchable=False)

        if step.kind in ("tool", "post"):
            plan.reason = "runs a local function; it makes no model call"
            if step.name in self.function_runs:
                ran, failure = self.function_runs[step.name]
                note = f"ran on {ran} of {len(self.rows)} rows to render later prompts"
                plan.notes.append(note + (f"; the first failure: {failure}" if failure else ""))
            return plan
        if step.kind == "cascade":
            plan.reason = (
                "a cascade needs each stage's answer at once to decide whether to call the next; "
                "its stages are listed below it"
            )
            return plan

        route_name = step.route or self.spec.route or self.settings.default_route
        route = self.settings.route(route_name)
        name = route.deployments[0]
        deployment = self.settings.deployments[name]
        plan.deployment, plan.provider, plan.model = name, deployment.provider, deployment.model
        plan.rows = len(self.rows)

        if step.kind == "agent":
            plan.reason = (
                "an agent needs each reply before its next call, so its calls cannot wait for a batch job"
            )
            self._estimate_agent(step, plan, deployment.max_output_tokens)
            return plan
        if cascade is not None:
            plan.reason = f"a stage of cascade {cascade!r}, which decides row by row"
            plan.notes.append("priced as if every row reached this stage, an upper bound")
        elif deployment.provider not in BATCH_PROVIDERS:
            plan.reason = (
                f"deployment {name!r} is of provider {deployment.provider!r}, which has no Batch "
                f"API in Trunkline; only {', '.join(BATCH_PROVIDERS)} deployments can run as batch"
            )
        else:
            plan.batchable = True
            plan.batch_wait = COMPLETION_WINDOW
            if len(route.deployments) > 1:
                plan.notes.append(
                    f"as batch, every request goes to {name!r}; the route's other deployments "
                    "are not tried as fallbacks"
                )

        self._estimate(step, plan, deployment.max_output_tokens)
        self._price(plan, deployment.batch_price_factor)
        return plan

    def _estimate(self, step: StepSpec, plan: StepPlan, max_output_tokens: int) -> None:
        recorded = self._recorded(step)
        try:
            rendered, missing = self._rendered_tokens(step)
            failure = None
        except (jinja2.TemplateError, TypeError, ValueError) as error:
            # A template that loops over an earlier step's output fails on the empty value that replaces it.
            rendered, missing, failure = None, set(), f"{type(error).__name__}: {error}"
        if rendered is not None and not (missing and recorded):
            plan.input_tokens = rendered
            plan.input_source = "prompts rendered for each row"
            if missing:
                plan.input_source += f", without {', '.join(sorted(missing))}, which earlier steps set"
        elif recorded:
            plan.input_tokens = round(recorded["input_tokens"] * len(self.rows))
            plan.input_source = f"mean of {recorded['calls']:.0f} recorded calls of earlier runs"
        if failure is not None:
            plan.notes.append(
                f"its prompts cannot be rendered without the values of earlier steps ({failure})"
                + (
                    ""
                    if recorded
                    else "; add --run-tools to run the earlier steps first, or run the workflow once "
                    "so that recorded calls give the input tokens"
                )
            )
        if recorded:
            plan.output_tokens = round(recorded["output_tokens"] * len(self.rows))
            plan.output_source = f"mean of {recorded['calls']:.0f} recorded calls of earlier runs"
            if recorded["latency_ms"] is not None:
                plan.online_wait_s = recorded["latency_ms"] / 1000.0 * len(self.rows) / self.concurrency
        elif step.max_tokens is not None:
            plan.output_tokens = step.max_tokens * len(self.rows)
            plan.output_source = "the step's max_tokens, an upper bound"
        else:
            plan.output_tokens = max_output_tokens * len(self.rows)
            plan.output_source = "the deployment's max_output_tokens, an upper bound"

    def _rendered_tokens(self, step: StepSpec) -> tuple[int | None, set[str]]:
        """Return the input tokens of every row's rendered prompts, and the variables none could fill."""
        per_row, missing = self._rendered_row_tokens(step)
        return (None if per_row is None else sum(per_row)), missing

    def _rendered_row_tokens(self, step: StepSpec) -> tuple[list[int] | None, set[str]]:
        """Return each row's rendered prompt tokens, and the variables none could fill.

        None for a step whose prompt is registered (``prompt_ref``), which the plan does
        not render.
        """
        files = [name for name in (step.system, step.prompt, step.messages) if name]
        if not files:
            return None, set()
        templates = [self.environment.get_template(name) for name in files]
        self.undefined.found = set()
        tokens = [
            sum(estimate_tokens(template.render(**values)) for template in templates)
            for values in self.values
        ]
        return tokens, set(self.undefined.found)

    def _estimate_agent(self, step: StepSpec, plan: StepPlan, max_output_tokens: int) -> None:
        """Fill `plan` with the agent step's estimate, setting its tokens and cost to the typical run's."""
        definitions = [load_tool(name, self.spec.folder).definition for name in step.tools]

        try:
            per_row, missing = self._rendered_row_tokens(step)
        except (jinja2.TemplateError, TypeError, ValueError) as error:
            per_row, missing = None, set()
            plan.notes.append(
                f"its prompts cannot be rendered without the values of earlier steps "
                f"({type(error).__name__}: {error}), so there is no worst case; add --run-tools "
                "to run the earlier steps first"
            )
        if missing:
            plan.notes.append(
                f"its prompts render without {', '.join(sorted(missing))}, which earlier steps set, "
                "so the estimates leave out their tokens"
            )
        registered = step.prompt_ref and not (step.system or step.prompt or step.messages)
        if per_row is None and registered:
            plan.notes.append(
                "its prompt is registered (prompt_ref), which the plan does not render, so there "
                "is no worst case"
            )

        recorded = []
        if self.store is not None:
            recorded = agent_row_usage(self.store, self.spec.name, step.name)

        # An answer that misses the output schema costs one more call, without tools.
        estimate = estimate_agent(
            max_steps=step.max_steps + (1 if step.output_schema else 0),
            tool_tokens=tool_definition_characters(definitions) // 4,
            reply_tokens=step.max_tokens if step.max_tokens is not None else max_output_tokens,
            row_prompt_tokens=per_row,
            recorded=recorded,
            row_count=len(self.rows),
            price=lambda input_tokens, output_tokens: self._cost(
                plan, input_tokens, output_tokens
            ).total_usd,
        )
        plan.agent = estimate

        if estimate.typical_run is not None:
            plan.input_tokens = round(estimate.typical_run.input_tokens)
            plan.output_tokens = round(estimate.typical_run.output_tokens)
            plan.online_cost_usd = estimate.typical_run.cost_usd
            plan.input_source = plan.output_source = estimate.typical_source

    def _recorded(self, step: StepSpec) -> dict[str, Any] | None:
        """Return the mean tokens and latency of the step's successful calls in earlier runs."""
        if self.store is None:
            return None
        name = step.prompt_ref.partition(":")[0].partition("@")[0] if step.prompt_ref else None
        query = select(
            func.count().label("calls"),
            func.avg(calls.c.input_tokens).label("input_tokens"),
            func.avg(calls.c.output_tokens).label("output_tokens"),
            # A batch call's latency is its job's duration, which does not measure the online wait.
            func.avg(case((calls.c.batch_id.is_(None), calls.c.latency_ms))).label("latency_ms"),
        ).where(
            calls.c.prompt_name == (name or f"{self.spec.name}/{step.name}"),
            calls.c.outcome == "ok",
        )
        with self.store.engine.connect() as connection:
            row = connection.execute(query).mappings().one()
        if not row["calls"]:
            return None
        return {key: None if value is None else float(value) for key, value in row.items()}

    def _cost(self, plan: StepPlan, input_tokens: int, output_tokens: int) -> Cost:
        """Price tokens online on the step's first deployment."""
        usage = Usage(input_tokens=input_tokens, output_tokens=output_tokens, estimated=True)
        return price_usage(
            usage, plan.model or "", provider=plan.provider, at=self.now, overrides=self.settings.prices
        )

    def _price(self, plan: StepPlan, factor: float) -> None:
        if plan.model is None or plan.input_tokens is None or plan.output_tokens is None:
            return
        cost = self._cost(plan, plan.input_tokens, plan.output_tokens)
        plan.online_cost_usd = cost.total_usd
        if plan.batchable:
            plan.batch_cost_usd = batch_cost(cost, factor).total_usd
