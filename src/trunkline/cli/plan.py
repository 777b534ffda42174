"""`trunkline plan`: which steps can run through a Batch API, and what online and batch cost."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from trunkline.cli.run import parse_params
from trunkline.config import Settings, load_settings
from trunkline.store.database import open_store
from trunkline.workflows.agent_plan import AgentEstimate, AgentFigures
from trunkline.workflows.datasets import load_dataset
from trunkline.workflows.plan import WorkflowPlan, plan_workflow
from trunkline.workflows.runner import map_inputs
from trunkline.workflows.spec import load_workflow


def plan_command(
    workflow: Annotated[Path, typer.Argument(help="A workflow file, or a folder holding workflow.toml.")],
    data: Annotated[
        Path | None, typer.Option("--data", help="Input rows, .csv or .jsonl; default: the workflow's sample.")
    ] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Plan only the first N rows.")] = None,
    param: Annotated[
        list[str], typer.Option("--param", help="Override a workflow parameter, KEY=VALUE; repeatable.")
    ] = [],  # noqa: B006 (typer reads the default, it is never mutated)
    concurrency: Annotated[
        int, typer.Option("--concurrency", min=1, help="Rows in flight at once, for the online wait.")
    ] = 4,
    run_tools: Annotated[
        bool,
        typer.Option(
            "--run-tools",
            help="Run the workflow's tool and post functions on every row first, so that prompts "
            "render with their values; they make no model call.",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as one JSON object on stdout.")] = False,
) -> None:
    """Say which steps can run as batch, and estimate each step's cost online and as batch."""
    spec = load_workflow(workflow)
    dataset = load_dataset(data if data is not None else spec.default_data())
    params = spec.parameters(parse_params(param))
    settings = load_settings()
    rows = dataset.rows[:limit] if limit is not None else dataset.rows
    inputs = [map_inputs(spec, row) for row in rows]
    store = open_store(settings.database_url(), must_exist=True) if _store_exists(settings) else None
    try:
        work = plan_workflow(
            spec, settings, inputs, params, store=store, concurrency=concurrency, run_tools=run_tools
        )
        plan = asyncio.run(work)
    finally:
        if store is not None:
            store.dispose()
    if as_json:
        body = plan.model_dump()
        body["totals"] = {mode: plan.total(mode) for mode in ("declared", "online", "best")}
        typer.echo(json.dumps(body))
        return
    console = Console()
    table = plan_table(plan)
    if not console.is_terminal:
        # Piped output has no terminal width, and Rich's 80-column default would wrap the figures.
        unbounded = console.options.update_width(10_000)
        width = console.measure(table, options=unbounded).maximum
        console = Console(width=max(console.width, width))
    console.print(table)
    for line in plan_notes(plan):
        console.print(line, markup=False, highlight=False, soft_wrap=True)


def _store_exists(settings: Settings) -> bool:
    """Return whether the configured store exists; a missing SQLite file means no recorded calls yet."""
    url = settings.database_url()
    if not url.startswith("sqlite:///"):
        return True
    return Path(url.removeprefix("sqlite:///")).is_file()


def plan_table(plan: WorkflowPlan) -> Table:
    table = Table(title=f"{plan.workflow}  {plan.rows} rows", title_justify="left")
    table.add_column("step", no_wrap=True)
    for column in ("kind", "mode", "batch?"):
        table.add_column(column)
    for column in ("in tok", "out tok", "online $", "batch $", "online wait", "batch wait"):
        table.add_column(column, justify="right")
    for step in plan.steps:
        table.add_row(
            step.step,
            step.kind,
            step.mode,
            "yes" if step.batchable else "no",
            _count(step.input_tokens),
            _count(step.output_tokens),
            _usd(step.online_cost_usd, table=True),
            _usd(step.batch_cost_usd, table=True),
            _duration(step.online_wait_s),
            f"<= {step.batch_wait}" if step.batch_wait else "-",
        )
        worst = step.agent.worst_run if step.agent is not None else None
        if worst is not None:
            table.add_row(
                f"{step.step}, worst case",
                step.kind,
                step.mode,
                "no",
                _count(round(worst.input_tokens)),
                _count(round(worst.output_tokens)),
                _usd(worst.cost_usd, table=True),
                "-",
                "-",
                "-",
            )
    return table


def plan_notes(plan: WorkflowPlan) -> list[str]:
    """Return the lines under the table: why steps cannot be batch, estimate sources, totals."""
    lines = []
    for step in plan.steps:
        if step.reason and step.kind in ("model", "cascade", "agent"):
            lines.append(f"{step.step}: not batch: {step.reason}")
        if step.agent is not None and step.agent.typical_source:
            lines.append(f"{step.step}: typical figures from {step.agent.typical_source}")
        elif step.agent is None:
            if step.input_source:
                lines.append(f"{step.step}: input tokens from {step.input_source}")
            if step.output_source:
                lines.append(f"{step.step}: output tokens from {step.output_source}")
        lines.extend(f"{step.step}: {note}" for note in step.notes)
        if step.agent is not None:
            lines.extend(f"{step.step}: {line}" for line in agent_lines(step.agent))
        if step.batch_wait:
            lines.append(f"{step.step}: as batch, rows wait up to {step.batch_wait}, the job's completion window")
        if step.kind in ("model", "agent") and step.online_cost_usd is None and step.input_tokens is not None:
            lines.append(f"{step.step}: no price known for {step.model}; add [prices.{step.model}] to trunkline.toml")
    for mode, label in (("declared", "as declared"), ("online", "all online"), ("best", "batch wherever possible")):
        lines.append(f"total {label}: {_usd(plan.total(mode))}")
    if any(step.agent is not None for step in plan.steps):
        lines.append("totals count agent steps at their typical cost")
    return lines


def agent_lines(estimate: AgentEstimate) -> list[str]:
    """Return an agent step's per-row figures and what its worst case assumes."""
    lines = []
    if estimate.typical_row is not None:
        lines.append(f"typical per row: {_figures(estimate.typical_row)}")
    if estimate.worst_row is not None:
        lines.append(f"worst case per row, of the row with the largest prompt: {_figures(estimate.worst_row)}")
        lines.append(
            f"worst case: every row makes {estimate.max_steps} model calls (max_steps, plus one "
            "where an output_schema may ask for the answer again), each "
            f"sending the prompt, the tool definitions ({estimate.tool_tokens:,} tokens) and "
            f"every earlier reply at its {estimate.reply_tokens:,}-token output cap; tool results "
            "are not counted"
        )
    return lines


def _figures(figures: AgentFigures) -> str:
    calls = "model call" if figures.model_calls == 1 else "model calls"
    return (
        f"{figures.model_calls:g} {calls}, {figures.input_tokens:,.0f} input and "
        f"{figures.output_tokens:,.0f} output tokens, {_usd(figures.cost_usd)}"
    )


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"~{seconds:.0f} s"
    if seconds < 7200:
        return f"~{seconds / 60:.0f} min"
    return f"~{seconds / 3600:.1f} h"


def _count(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _usd(value: float | None, *, table: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if table else f"${value:.6f}"
