"""`trunkline run`: the main job, a workflow over a dataset."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from trunkline.cli.render import summary_table
from trunkline.config import load_settings
from trunkline.errors import ConfigError, MlflowLoggingError
from trunkline.mlflow_runs import MlflowTarget, log_run, open_target
from trunkline.prompts import parse_reference
from trunkline.recording import recording
from trunkline.routing.router import Router
from trunkline.store.database import Store
from trunkline.store.runs import failed_rows
from trunkline.workflows.datasets import load_dataset
from trunkline.workflows.provider_batch import BatchProgress
from trunkline.workflows.runner import BatchRunner
from trunkline.workflows.spec import WorkflowSpec, load_workflow
from trunkline.workflows.summary import RunSummary


def parse_params(pairs: list[str]) -> dict[str, str]:
    """Split KEY=VALUE pairs; a pair with no '=' is rejected."""
    params: dict[str, str] = {}
    for pair in pairs:
        key, separator, value = pair.partition("=")
        if not separator or not key.strip():
            raise ConfigError(f"--param expects KEY=VALUE, got {pair!r}")
        params[key.strip()] = value
    return params


T = TypeVar("T")

#: Rows in flight at once in a local run.
DEFAULT_CONCURRENCY = 4
#: Rows per task of a run on Celery workers.
DEFAULT_CHUNK_SIZE = 10


def run_closing(router: Router, work: Coroutine[Any, Any, T]) -> T:
    """Run `work` on a new event loop, then close the router's provider clients on that same loop."""

    async def run() -> T:
        try:
            return await work
        finally:
            await router.aclose()

    return asyncio.run(run())


def parse_prompt_overrides(spec: WorkflowSpec, items: list[str]) -> dict[str, str]:
    """Map model step names to the prompt references of ``--prompt [STEP=]REFERENCE`` options."""
    model_steps = [step.name for step in spec.all_steps() if step.kind == "model"]
    overrides: dict[str, str] = {}
    for item in items:
        step, separator, reference = item.partition("=")
        if not separator:
            if len(model_steps) != 1:
                raise ConfigError(
                    f"--prompt {item!r} names no step, and workflow {spec.name!r} has "
                    f"{len(model_steps)} model steps ({', '.join(model_steps) or 'none'}); "
                    "write --prompt STEP=NAME@VERSION"
                )
            step, reference = model_steps[0], item
        parse_reference(reference.strip())
        overrides[step.strip()] = reference.strip()
    return overrides


def run_command(
    workflow: Annotated[Path, typer.Argument(help="A workflow file, or a folder holding workflow.toml.")],
    data: Annotated[
        Path | None, typer.Option("--data", help="Input rows, .csv or .jsonl; default: the workflow's sample.")
    ] = None,
    param: Annotated[
        list[str], typer.Option("--param", help="Override a workflow parameter, KEY=VALUE; repeatable.")
    ] = [],  # noqa: B006 (typer reads the default, it is never mutated)
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Run only the first N rows.")] = None,
    concurrency: Annotated[
        int | None, typer.Option("--concurrency", min=1, help="Rows in flight at once in a local run. Default 4.")
    ] = None,
    resume: Annotated[
        str | None, typer.Option("--resume", help="Continue run RUN_ID, skipping the rows it finished.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as one JSON object on stdout.")] = False,
    prompt: Annotated[
        list[str],
        typer.Option(
            "--prompt",
            help="Use a registered prompt, NAME@VERSION or NAME:LABEL, for the model step; "
            "STEP=NAME@VERSION where there are several. Repeatable.",
        ),
    ] = [],  # noqa: B006 (typer reads the default, it is never mutated)
    workers: Annotated[
        str,
        typer.Option(
            "--workers",
            help="Where rows run: 'local' (this process, on asyncio) or 'celery' "
            "(`trunkline worker` processes through the Redis broker).",
        ),
    ] = "local",
    chunk_size: Annotated[
        int | None,
        typer.Option(
            "--chunk-size",
            min=1,
            help="With --workers celery: rows per task, which a worker runs at the same time. Default 10.",
        ),
    ] = None,
    batch_poll: Annotated[
        float,
        typer.Option(
            "--batch-poll",
            min=0.01,
            help="Seconds between polls of a Batch API job, for steps with mode = \"batch\".",
        ),
    ] = 30.0,
    mlflow: Annotated[
        bool | None,
        typer.Option(
            "--mlflow/--no-mlflow",
            help="Log the run to MLflow: parameters, metrics and a table of rows. "
            "Default: \\[mlflow] enabled in trunkline.toml.",
        ),
    ] = None,
) -> None:
    """Run every row of a dataset through a workflow, record every call, and summarise."""
    if workers not in ("local", "celery"):
        raise ConfigError(f"--workers expects 'local' or 'celery', got {workers!r}")
    if chunk_size is not None and workers != "celery":
        raise ConfigError("--chunk-size applies to --workers celery only; use --concurrency for a local run")
    if concurrency is not None and workers == "celery":
        raise ConfigError(
            "--concurrency applies to local runs; on workers, each worker's --concurrency (tasks at once) "
            "and the run's --chunk-size (rows per task) set the rows in flight"
        )
    concurrency = concurrency or DEFAULT_CONCURRENCY
    spec = load_workflow(workflow)
    dataset = load_dataset(data if data is not None else spec.default_data())
    params = spec.parameters(parse_params(param))
    settings = load_settings()
    stderr = Console(stderr=True)
    rows = min(len(dataset.rows), limit) if limit else len(dataset.rows)
    wants_mlflow = settings.mlflow.enabled if mlflow is None else mlflow
    # Opened before the run, so that a missing package or an unreachable
    # tracking server stops it before any call is paid for.
    tracking = open_target(settings.mlflow, workflow=spec.name) if wants_mlflow else None
    logged = True
    with recording(settings) as recorder:
        router = Router(settings)
        runner = BatchRunner(
            spec,
            router=router,
            store=recorder.store,
            writer=recorder.writer,
            params=params,
            concurrency=concurrency,
            prompt_overrides=parse_prompt_overrides(spec, prompt),
            batch_poll_s=batch_poll,
        )
        chunks = (chunk_size or DEFAULT_CHUNK_SIZE) if workers == "celery" else None
        summary = _run_with_progress(runner, dataset, rows, limit, resume, stderr, chunk_size=chunks)
        failures = failed_rows(recorder.store, summary.run_id, limit=5) if summary.errors else []
        if tracking is not None:
            inputs = [runner.row_inputs(row) for row in dataset.rows[:rows]]
            extra = {"limit": limit, "concurrency": concurrency, "workers": workers}
            logged = _log_to_mlflow(tracking, recorder.store, summary.run_id, inputs, extra, stderr)
    if as_json:
        typer.echo(json.dumps(summary.public()))
    else:
        Console().print(summary_table(spec.name, summary))
    if failures:
        _report_failures(stderr, summary, failures)
    if not logged:
        raise typer.Exit(3)
    if failures:
        raise typer.Exit(1)


def _log_to_mlflow(
    tracking: MlflowTarget,
    store: Store,
    run_id: str,
    inputs: list[dict[str, Any]],
    extra: dict[str, Any],
    stderr: Console,
) -> bool:
    """Log the finished run to MLflow and report where; False when logging failed."""
    try:
        logged = log_run(tracking, store, run_id, inputs=inputs, params=extra)
    except MlflowLoggingError as error:
        stderr.print(f"error: {error}", markup=False, highlight=False, soft_wrap=True)
        stderr.print(
            f"Run {run_id} and its records are stored. Fix the cause, then log it without "
            f"running any row again: trunkline export mlflow --run {run_id}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        return False
    for line in (logged.logged_message(), logged.superseded_message()):
        if line is not None:
            stderr.print(line, markup=False, highlight=False, soft_wrap=True)
    return True


def _report_failures(stderr: Console, summary: RunSummary, failures: list[dict]) -> None:
    stderr.print(f"{summary.errors} of {summary.rows} rows failed; the first of them:", highlight=False)
    for row in failures:
        stderr.print(f"  row {row['row_index']}: {row['error']}", markup=False, highlight=False)
    stderr.print(
        f"The run's calls: trunkline calls --run {summary.run_id}. Rerun the failed rows "
        f"with the same arguments and --resume {summary.run_id}.",
        highlight=False,
    )


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@contextmanager
def _restoring_sigterm(previous: Any) -> Iterator[None]:
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run_with_progress(runner, dataset, rows, limit, resume, stderr: Console, *, chunk_size: int | None) -> RunSummary:  # noqa: ANN001
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=stderr,
        transient=False,
        # Redirected, the bar would be one stray line among JSON log lines.
        disable=not stderr.is_terminal,
    )
    counts = {"ok": 0, "error": 0}

    def on_row(result: dict) -> None:
        counts["ok" if result["status"] == "ok" else "error"] += 1
        progress.update(task, advance=1, status=f"ok {counts['ok']}  errors {counts['error']}")

    def on_start(pending: int, resumed: int) -> None:
        progress.update(task, total=pending + resumed, completed=resumed)

    def on_batch(job: BatchProgress) -> None:
        done = f" {job.completed + job.failed}/{job.total}" if job.total else ""
        progress.update(task, status=f"{job.step}: batch {job.batch_id} {job.status}{done}")

    # SIGTERM (a CI cancel, a service manager, `timeout`) stops the run as
    # Ctrl-C does: the run is marked interrupted and workers drop its rows.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    with progress, _restoring_sigterm(previous):
        task = progress.add_task(runner.workflow.name, total=rows, status="")
        try:
            if chunk_size is not None:
                from trunkline.workers.dispatch import run_on_workers

                summary = run_on_workers(
                    runner,
                    dataset,
                    limit=limit,
                    resume_run_id=resume,
                    chunk_size=chunk_size,
                    on_row=on_row,
                    on_start=on_start,
                    on_quiet=lambda warning: stderr.print(f"warning: {warning}", markup=False, highlight=False),
                )
            else:
                work = runner.run(
                    dataset, limit=limit, resume_run_id=resume, on_row=on_row, on_start=on_start, on_batch=on_batch
                )
                summary = run_closing(runner.router, work)
        except KeyboardInterrupt:
            if runner.run_id:
                stderr.print(
                    f"stopped; finished rows are stored. Continue with: --resume {runner.run_id}"
                )
            # 128 + SIGINT, the shell's status for a command stopped by Ctrl-C.
            raise typer.Exit(130) from None
    return summary
