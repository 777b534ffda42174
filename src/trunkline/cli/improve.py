"""`trunkline improve`: the loop that scores a workflow, adapts it, and scores it again."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from trunkline.cli.evals import parse_scorers
from trunkline.cli.render import format_cost
from trunkline.cli.run import parse_params, parse_prompt_overrides, run_closing
from trunkline.config import load_settings
from trunkline.evals.improve import ADAPTATIONS, ImprovementLoop, ImproveOptions, ImproveResult
from trunkline.recording import recording
from trunkline.routing.router import Router
from trunkline.workflows.datasets import load_dataset
from trunkline.workflows.spec import load_workflow

console = Console()


def improve_command(
    workflow: Annotated[Path, typer.Argument(help="A workflow file, or a folder holding workflow.toml.")],
    data: Annotated[Path, typer.Option("--data", help="Rows with expected values, .csv or .jsonl; split into examples, development and held-out rows.")],
    target: Annotated[float, typer.Option("--target", help="Stop once the best development score reaches this, from 0 to 1.")],
    budget: Annotated[float, typer.Option("--budget", help="Stop before model calls spend more than this many USD in all.")],
    max_rounds: Annotated[int, typer.Option("--max-rounds", min=1, help="Rounds of adaptation at most.")] = 3,
    step: Annotated[str | None, typer.Option("--step", help="The model step to improve, when there are several.")] = None,
    prompt: Annotated[list[str], typer.Option("--prompt", help="\\[STEP=]NAME@VERSION or NAME:LABEL to start from; repeatable.")] = [],  # noqa: B006
    adapt: Annotated[str, typer.Option("--adapt", help="Adaptations to try, comma-separated: rewrite, few_shot, model, threshold.")] = ",".join(ADAPTATIONS),
    scorer: Annotated[list[str], typer.Option("--scorer", help="As for trunkline eval; the first is the score the loop raises. Default: normalised.")] = [],  # noqa: B006
    param: Annotated[list[str], typer.Option("--param", help="Override a workflow parameter, KEY=VALUE; repeatable.")] = [],  # noqa: B006
    holdout: Annotated[float, typer.Option("--holdout", help="Share of the rows held out to confirm the best candidate.")] = 0.3,
    pool: Annotated[int, typer.Option("--pool", min=0, help="Rows kept aside to take few-shot examples from.")] = 20,
    few_shot: Annotated[int, typer.Option("--few-shot", min=1, help="Examples a few-shot candidate shows.")] = 4,
    patience: Annotated[int, typer.Option("--patience", min=1, help="Stop after this many rounds without a better candidate.")] = 2,
    rewrite_prompt: Annotated[str | None, typer.Option("--rewrite-prompt", help="The registered prompt that rewrites prompts; default: the built-in trunkline/rewrite.")] = None,
    rewrite_route: Annotated[str | None, typer.Option("--rewrite-route", help="The route the rewrite calls use; default: the step's route.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the split and the example choice.")] = 7,
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, help="Rows in flight at once.")] = 4,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as one JSON object.")] = False,
) -> None:
    """Improve a workflow's prompt and settings against a score, within a target, a budget and a round limit."""
    adaptations = tuple(name.strip() for name in adapt.split(",") if name.strip())
    options = ImproveOptions(
        target=target, budget_usd=budget, max_rounds=max_rounds, step=step, holdout=holdout, pool=pool,
        few_shot=few_shot, adaptations=adaptations, patience=patience, seed=seed,  # type: ignore[arg-type]
        concurrency=concurrency, rewrite_prompt=rewrite_prompt, rewrite_route=rewrite_route,
    )
    options.check()
    spec = load_workflow(workflow)
    dataset = load_dataset(data)
    params = spec.parameters(parse_params(param))
    overrides = parse_prompt_overrides(spec, prompt)
    settings = load_settings()
    if rewrite_route:
        settings.route(rewrite_route)
    with recording(settings) as recorder:
        router = Router(settings)
        scorers = parse_scorers(scorer or ["normalised"], router, spec.folder)
        loop = ImprovementLoop(
            spec, dataset, settings=settings, router=router, store=recorder.store, writer=recorder.writer,
            params=params, scorers=scorers, options=options, prompt_overrides=overrides,
        )
        result = run_closing(router, loop.run())
    if as_json:
        typer.echo(json.dumps(result.public()))
        return
    _print_result(result)


def _print_result(result: ImproveResult) -> None:
    table = Table(box=box.SIMPLE_HEAD, title=f"improve  {result.loop_id}", title_justify="left")
    for column in ("#", "round", "change", "setting", "dev score [95% interval]", "cost"):
        table.add_column(column, justify="right" if column in ("#", "round", "cost") else "left")
    for candidate in result.candidates:
        data = candidate.public()
        if candidate.rejected or data["score"] is None:
            score, cost = ("rejected" if candidate.rejected else "not run"), "-"
        else:
            marker = " best" if candidate is result.best else ""
            score = f"{data['score']:.3f} [{data['ci_low']:.3f}, {data['ci_high']:.3f}]{marker}"
            cost = format_cost(data["cost_usd"])
        table.add_row(
            str(candidate.number), str(candidate.round), escape(candidate.description),
            escape(data["setting"] or "-"), score, cost,
        )
    console.print(table)
    for candidate in result.candidates:
        if candidate.rejected:
            console.print(f"#{candidate.number} rejected: {escape(candidate.rejected)}", highlight=False, soft_wrap=True)
    split = result.split
    console.print(
        f"Rows: {split['development']} development, {split['heldout']} held out, "
        f"{split['pool']} kept for examples. Stopped: {_reason(result)} after {result.rounds} "
        f"round(s); spent {format_cost(result.spent_usd)}.",
        highlight=False,
    )
    if result.heldout is not None:
        paired = result.heldout.paired
        console.print(
            f"Held out: #{result.baseline.number} {paired.mean_a:.3f}, #{result.best.number} "
            f"{paired.mean_b:.3f}, difference {paired.difference:+.3f} "
            f"[{paired.low:+.3f}, {paired.high:+.3f}] over {paired.count} rows "
            f"({paired.wins} wins, {paired.ties} ties, {paired.losses} losses).",
            highlight=False,
        )
    console.print(f"Verdict: {escape(result.verdict)}.", highlight=False)
    for note in result.notes:
        console.print(f"Note: {escape(note)}.", highlight=False)
    console.print(f"The whole loop: trunkline trace {result.trace_id}", highlight=False)


def _reason(result: ImproveResult) -> str:
    return {
        "target": "the target was reached",
        "budget": "the budget was spent",
        "max_rounds": "the round limit",
        "no_improvement": "no better candidate came for too many rounds",
        "no_candidates": "nothing new was left to try",
    }[result.stop_reason]

