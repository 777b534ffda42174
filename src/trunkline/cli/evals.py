"""`trunkline eval`, `trunkline compare` and `trunkline experiments`: run, compare and list experiments."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from sqlalchemy import select

from trunkline.cli.render import format_cost, format_ms
from trunkline.cli.run import parse_params, parse_prompt_overrides, run_closing
from trunkline.config import load_settings
from trunkline.errors import ConfigError
from trunkline.evals.agreement import measure_agreement
from trunkline.evals.comparison import Comparison, compare_experiments
from trunkline.evals.experiments import ExperimentResult, run_experiment, with_route
from trunkline.evals.registry import build_scorer
from trunkline.evals.scores import Scorer, preview
from trunkline.evals.statistics import regression_gate
from trunkline.recording import recording
from trunkline.routing.router import Router
from trunkline.store.database import open_store
from trunkline.store.tables import experiments
from trunkline.workflows.datasets import load_dataset
from trunkline.workflows.spec import load_workflow

console = Console()


def parse_scorers(items: list[str], router: Router, folder: Path | None = None) -> list[Scorer]:
    """Build scorers from ``NAME``, ``python=MODULE:FUNCTION``, ``json_schema=FILE`` or ``judge=RUBRIC_FILE[@ROUTE]``.

    A ``python`` scorer's module is looked for as a file in the working
    folder, then in `folder` (the workflow's), then among installed modules.
    """
    built: list[Scorer] = []
    for item in items:
        name, separator, argument = item.partition("=")
        if name == "python":
            if not separator:
                raise ConfigError("--scorer python needs the function: --scorer python=module:function")
            module_file = argument.partition(":")[0].replace(".", "/") + ".py"
            beside = Path.cwd() if (Path.cwd() / module_file).is_file() else folder
            built.append(build_scorer("python", path=argument, folder=beside))
        elif name == "json_schema":
            if not separator:
                raise ConfigError("--scorer json_schema needs a schema file: --scorer json_schema=schema.json")
            schema = Path(argument)
            if not schema.is_file():
                raise ConfigError(f"schema file {argument} not found; give a JSON Schema file")
            try:
                loaded = json.loads(schema.read_text())
            except json.JSONDecodeError as error:
                raise ConfigError(f"schema file {argument} is not valid JSON: {error}") from None
            built.append(build_scorer("json_schema", schema=loaded))
        elif name == "judge":
            if not separator:
                raise ConfigError("--scorer judge needs a rubric file: --scorer judge=rubric.txt[@ROUTE]")
            file, _, route = argument.partition("@")
            rubric = Path(file)
            if not rubric.is_file():
                raise ConfigError(f"rubric file {file} not found; write what a good output is into it")
            built.append(build_scorer("judge", router=router, rubric=rubric.read_text(), route=route or None))
        else:
            if separator:
                raise ConfigError(f"scorer {name!r} takes no argument; got {item!r}")
            built.append(build_scorer(name))
    return built


def eval_command(
    workflow: Annotated[Path, typer.Argument(help="A workflow file, or a folder holding workflow.toml.")],
    data: Annotated[Path | None, typer.Option("--data", help="Rows with expected values, .csv or .jsonl; default: the workflow's sample.")] = None,
    prompt: Annotated[list[str], typer.Option("--prompt", help="\\[STEP=]NAME@VERSION or NAME:LABEL for a model step; repeatable.")] = [],  # noqa: B006
    model: Annotated[str | None, typer.Option("--model", help="Send every model step to this route or deployment.")] = None,
    repeat: Annotated[int, typer.Option("--repeat", min=1, help="Run every row K times.")] = 1,
    scorer: Annotated[list[str], typer.Option("--scorer", help="exact, normalised, fuzzy, embedding, json_schema=FILE, numeric, python=MODULE:FUNCTION or judge=RUBRIC_FILE\\[@ROUTE]; repeatable, the first is primary. Default: normalised.")] = [],  # noqa: B006
    param: Annotated[list[str], typer.Option("--param", help="Override a workflow parameter, KEY=VALUE; repeatable.")] = [],  # noqa: B006
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Use only the first N rows.")] = None,
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, help="Rows in flight at once.")] = 4,
    name: Annotated[str | None, typer.Option("--name", help="A name for the experiment.")] = None,
    golden: Annotated[bool, typer.Option("--golden", help="Mark the data as the task's golden set, which score-based downgrades trust.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as one JSON object.")] = False,
) -> None:
    """Run an experiment: every row through the workflow, scored, with a 95% interval on the mean."""
    spec = load_workflow(workflow)
    if model:
        spec = with_route(spec, model)
    if not spec.expected:
        raise ConfigError(
            f"workflow {spec.name!r} names no expected column, so outputs cannot be scored; "
            "set expected = \"COLUMN\" in it"
        )
    dataset = load_dataset(data if data is not None else spec.default_data())
    params = spec.parameters(parse_params(param))
    overrides = parse_prompt_overrides(spec, prompt)
    settings = load_settings()
    if model:
        settings.route(model)
    with recording(settings) as recorder:
        router = Router(settings)
        scorers = parse_scorers(scorer or ["normalised"], router, spec.folder)

        work = run_experiment(
            spec, dataset, settings=settings, router=router, store=recorder.store,
            writer=recorder.writer, params=params, scorers=scorers, repeat=repeat, limit=limit,
            concurrency=concurrency, prompt_overrides=overrides, name=name, golden=golden,
        )
        result = run_closing(router, work)
    if as_json:
        typer.echo(json.dumps(result.public()))
        return
    _print_result(result)


def _print_result(result: ExperimentResult) -> None:
    table = Table(title=f"{escape(result.name)}  {result.experiment_id}", box=box.SIMPLE_HEAD, title_justify="left")
    for column in ("scorer", "mean", "95% interval", "values"):
        table.add_column(column)
    for scorer_name, interval in result.scores.items():
        table.add_row(
            escape(scorer_name), f"{interval.mean:.3f}", f"[{interval.low:.3f}, {interval.high:.3f}]",
            str(interval.count),
        )
    console.print(table)
    cost = format_cost(result.cost_usd, 0 if result.cost_usd is not None else 1)
    console.print(
        f"rows {result.rows} x {result.repeat}, errors {result.errors}, cost {cost}, tokens "
        f"{result.input_tokens}/{result.output_tokens}, latency p50 {format_ms(result.latency_p50_ms)} "
        f"p95 {format_ms(result.latency_p95_ms)}, deployment {escape(result.deployment)}"
        + (f", prompt {escape(result.prompt)}" if result.prompt else ""),
        highlight=False,
    )


def compare_command(
    experiment_a: Annotated[str, typer.Argument(help="The baseline experiment id (or a unique prefix).")],
    experiment_b: Annotated[str, typer.Argument(help="The new experiment id (or a unique prefix).")],
    fail_if_worse: Annotated[float | None, typer.Option("--fail-if-worse", min=0.0, help="Exit 1 when B is worse than A by more than DELTA with 95% confidence.")] = None,
    top: Annotated[int, typer.Option("--top", min=0, help="Rows that changed most to show.")] = 5,
    embedding: Annotated[bool, typer.Option("--embedding", help="Add the cosine similarity of outputs (needs trunkline[embeddings]).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the comparison as one JSON object.")] = False,
) -> None:
    """Pair two experiments' rows and compare B with A: difference, wins and losses, similarity, cost."""
    store = open_store(load_settings().database_url(), must_exist=True)
    try:
        embedder = build_scorer("embedding") if embedding else None
        comparison = compare_experiments(store, experiment_a, experiment_b, embedder=embedder)
    finally:
        store.dispose()
    gate = regression_gate(comparison.paired, delta=fail_if_worse) if fail_if_worse is not None else None
    if as_json:
        payload = comparison.public(top)
        if gate is not None:
            payload["gate"] = {"delta": fail_if_worse, "failed": gate.failed, "message": gate.message}
        typer.echo(json.dumps(payload, default=str))
    else:
        _print_comparison(comparison, top)
        if gate is not None:
            style = "red" if gate.failed else "green"
            console.print(f"[{style}]gate: {escape(gate.message)}[/]", highlight=False)
    if gate is not None and gate.failed:
        raise typer.Exit(1)


def _print_comparison(comparison: Comparison, top: int) -> None:
    a, b, paired = comparison.experiment_a, comparison.experiment_b, comparison.paired
    table = Table(box=box.SIMPLE_HEAD)
    for column in ("", "A", "B", "B - A"):
        table.add_column(column, no_wrap=column in ("A", "B"))
    table.add_row("experiment", escape(a["experiment_id"]), escape(b["experiment_id"]), "")
    table.add_row("deployment", escape(a["deployment"]), escape(b["deployment"]), "")
    table.add_row("prompt", escape(_prompt_of(a)), escape(_prompt_of(b)), "")
    table.add_row(
        "mean score", f"{paired.mean_a:.3f}", f"{paired.mean_b:.3f}",
        f"{paired.difference:+.3f} [{paired.low:+.3f}, {paired.high:+.3f}]",
    )
    table.add_row("cost (whole experiment)", format_cost(a["cost_usd"], 0), format_cost(b["cost_usd"], 0), _signed_cost(a["cost_usd"], b["cost_usd"]))
    table.add_row(
        "latency p50 (whole experiment)", format_ms(a["latency_p50_ms"]), format_ms(b["latency_p50_ms"]),
        _signed(a["latency_p50_ms"], b["latency_p50_ms"], "{:+.0f} ms"),
    )
    console.print(table)

    similarity = ", ".join(f"{name} {value:.3f}" for name, value in comparison.similarity.items())
    console.print(
        f"{paired.count} paired rows: B wins {paired.wins}, ties {paired.ties}, loses {paired.losses}; "
        f"output similarity {similarity}",
        highlight=False,
    )
    for note in comparison.notes:
        console.print(f"note: {escape(note)}", highlight=False)
    if comparison.unpaired:
        console.print(f"{comparison.unpaired} rows are in only one of the two and were left out", highlight=False)

    changed = [row for row in comparison.most_changed(top) if row.difference or row.similarity.get("exact", 1.0) < 1.0]
    if changed:
        rows = Table(title="rows that changed most", box=box.SIMPLE_HEAD, title_justify="left")
        for column in ("row", "A", "B", "output A", "output B", "fuzzy"):
            rows.add_column(column, overflow="fold")
        for row in changed:
            rows.add_row(
                escape(row.row_key), f"{row.score_a:.2f}", f"{row.score_b:.2f}",
                escape(preview(row.output_a)), escape(preview(row.output_b)), f"{row.similarity['fuzzy']:.2f}",
            )
        console.print(rows)


def _prompt_of(experiment: dict[str, Any]) -> str:
    if experiment["prompt_name"] and experiment["prompt_version"]:
        return f"{experiment['prompt_name']}@{experiment['prompt_version']}"
    return "-"


def _signed(a: float | None, b: float | None, form: str) -> str:
    return "-" if a is None or b is None else form.format(b - a)


def _signed_cost(a: float | None, b: float | None) -> str:
    if a is None or b is None:
        return "-"
    return f"{'-' if b < a else '+'}${abs(b - a):.6f}"


def experiments_command(
    limit: Annotated[int, typer.Option("--limit", min=1, help="Most recent experiments listed.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object a line.")] = False,
) -> None:
    """List experiments, newest first."""
    store = open_store(load_settings().database_url(), must_exist=True)
    try:
        with store.engine.connect() as connection:
            rows = connection.execute(
                select(experiments).order_by(experiments.c.started_at.desc()).limit(limit)
            ).mappings().all()
    finally:
        store.dispose()
    if as_json:
        for row in rows:
            typer.echo(json.dumps(dict(row), default=str))
        return
    table = Table(box=box.SIMPLE_HEAD)
    for column in ("experiment", "name", "deployment", "prompt", "rows", "mean", "95% interval", "cost"):
        table.add_column(column, no_wrap=column in ("experiment", "95% interval"))
    for row in rows:
        interval = "-" if row["ci_low"] is None else f"[{row['ci_low']:.3f}, {row['ci_high']:.3f}]"
        mean = "-" if row["mean_score"] is None else f"{row['mean_score']:.3f}"
        table.add_row(
            escape(row["experiment_id"]), escape(row["name"] or ""), escape(row["deployment"]),
            escape(_prompt_of(row)), str(row["row_count"]), mean, interval, format_cost(row["cost_usd"], 0),
        )
    console.print(table)


evals_app = typer.Typer(help="Checks of the evaluation tools themselves.", no_args_is_help=True)


@evals_app.command("judge-check")
def judge_check_command(
    data: Annotated[Path, typer.Option("--data", help="Labelled rows, .csv or .jsonl: an output, an optional expected value, and a pass/fail label.")],
    rubric: Annotated[Path, typer.Option("--rubric", help="A text file saying what a good output is.")],
    route: Annotated[str | None, typer.Option("--route", help="The route the judge calls; default: the configured default route.")] = None,
    scale: Annotated[int | None, typer.Option("--scale", min=2, help="Ask for a score from 1 to N instead of pass/fail.")] = None,
    threshold: Annotated[float, typer.Option("--threshold", min=0.0, max=1.0, help="A judge score at or above this passes.")] = 0.5,
    output_column: Annotated[str, typer.Option("--output-column", help="The column holding the output to judge.")] = "output",
    expected_column: Annotated[str, typer.Option("--expected-column", help="The column holding the expected value, if any.")] = "expected",
    label_column: Annotated[str, typer.Option("--label-column", help="The column holding the human pass/fail label.")] = "label",
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, help="Rows judged at once.")] = 4,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as one JSON object.")] = False,
) -> None:
    """Measure the judge against human labels: agreement rate, Cohen's kappa and the confusion counts."""
    if not rubric.is_file():
        raise ConfigError(f"rubric file {rubric} not found; write what a good output is into it")
    dataset = load_dataset(data)
    settings = load_settings()
    with recording(settings):
        router = Router(settings)
        judge = build_scorer("judge", router=router, rubric=rubric.read_text(), route=route, scale=scale)

        work = measure_agreement(
            judge, dataset.rows, output_key=output_column, expected_key=expected_column,
            label_key=label_column, threshold=threshold, concurrency=concurrency,
        )
        agreement = run_closing(router, work)
    payload = {
        "rows": agreement.rows,
        "agreement": agreement.rate,
        "kappa": agreement.kappa,
        "both_pass": agreement.both_pass,
        "both_fail": agreement.both_fail,
        "judge_pass_human_fail": agreement.judge_pass_human_fail,
        "judge_fail_human_pass": agreement.judge_fail_human_pass,
    }
    if as_json:
        typer.echo(json.dumps(payload))
        return
    kappa = "undefined (one label only)" if agreement.kappa is None else f"{agreement.kappa:.3f}"
    console.print(f"{agreement.rows} rows: agreement {agreement.rate:.3f}, Cohen's kappa {kappa}", highlight=False)
    table = Table(box=box.SIMPLE_HEAD)
    for column in ("", "human pass", "human fail"):
        table.add_column(column)
    table.add_row("judge pass", str(agreement.both_pass), str(agreement.judge_pass_human_fail))
    table.add_row("judge fail", str(agreement.judge_fail_human_pass), str(agreement.both_fail))
    console.print(table)
