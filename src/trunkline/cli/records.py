"""`trunkline calls`, `show`, `costs` and `migrate`: reading the record store."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Literal

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Column, Table

from trunkline.cli.render import format_cost, format_ms
from trunkline.config import load_settings
from trunkline.errors import ConfigError
from trunkline.store.database import open_store
from trunkline.store.queries import cost_summary, get_call, list_calls
from trunkline.store.retention import MAX_AGE_DAYS, parse_age, prune, retention_age
from trunkline.store.runs import get_run, list_runs
from trunkline.types.messages import ToolCall

console = Console()


def _store():  # noqa: ANN202
    return open_store(load_settings().database_url(), must_exist=True)


def calls_command(
    run: Annotated[str | None, typer.Option("--run", help="Only the calls of this run id.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Maximum number of calls listed.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object a line.")] = False,
) -> None:
    """List recorded calls, newest first."""
    store = _store()
    rows = list_calls(store, run_id=run, limit=limit)
    if run is not None and not rows:
        # An unknown run would list nothing, which reads like a run without calls.
        get_run(store, run)
    if as_json:
        for row in rows:
            typer.echo(json.dumps(row, default=str))
        return
    table = Table("call", "started", "model", "outcome", "tokens in/out", "cost", "latency", "attempts")
    for row in rows:
        outcome = row["outcome"] if row["outcome"] == "ok" else f"{row['outcome']}: {row['error_kind']}"
        table.add_row(
            row["call_id"][:12],
            str(row["started_at"])[:19],
            row["model_served"] or row["model_requested"],
            outcome,
            f"{row['input_tokens']}/{row['output_tokens']}",
            format_cost(row["cost_usd"], 1 if row["price_missing"] else 0),
            format_ms(row["latency_ms"]),
            str(row["attempt_count"]),
        )
    console.print(table)


def runs_command(
    limit: Annotated[int, typer.Option("--limit", min=1, help="Maximum number of runs listed.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object a line.")] = False,
) -> None:
    """List batch runs, newest first, with their status and summary."""
    rows = list_runs(_store(), limit=limit)
    if as_json:
        for row in rows:
            typer.echo(json.dumps(row, default=str))
        return

    # Run ids are what users copy into --resume and --run, so they never wrap.
    table = Table(Column("run", no_wrap=True, min_width=20))
    for name in ("workflow", "started", "status", "rows", "errors", "accuracy", "cost"):
        table.add_column(name)
    for row in rows:
        summary = row["summary"] or {}
        accuracy = summary.get("accuracy")
        table.add_row(
            row["run_id"],
            row["workflow"],
            str(row["started_at"])[:19],
            row["status"],
            str(summary.get("rows", row["row_count"] or "-")),
            str(summary.get("errors", "-")),
            "-" if accuracy is None else f"{accuracy:.3f}",
            format_cost(summary.get("cost_usd"), summary.get("unpriced_rows", 0)) if summary else "-",
        )
    console.print(table)


def _print_tool_calls(console: Console, calls: Sequence[ToolCall]) -> None:
    for call in calls:
        console.print(f"  tool call {call.id}: {call.name}({call.arguments})", markup=False, highlight=False)


def show_command(
    call_id: Annotated[str, typer.Argument(help="A call id, or a unique prefix of one.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole record as JSON.")] = False,
) -> None:
    """Print one call record in full: messages, output, usage, cost and attempts."""
    record = get_call(_store(), call_id)
    if as_json:
        typer.echo(record.model_dump_json(indent=2))
        return

    console.rule(f"call {record.call_id}")
    console.print(f"trace {record.trace_id}  span {record.span_id}  run {record.run_id or '-'}")
    console.print(
        f"route {record.route}  provider {record.provider}  model {record.model_requested} "
        f"-> {record.model_served or '-'} ({record.model_version or 'no version reported'})"
    )
    console.print(f"started {record.started_at.isoformat()}  latency {format_ms(record.latency_ms)}")
    if record.batch_id:
        console.print(
            f"batch {record.batch_id}: served by a Batch API job, so the latency is the job's "
            "duration and the cost is at the batch price",
            highlight=False,
        )
    if record.prompt_name:
        version = f"@{record.prompt_version}" if record.prompt_version else ""
        console.print(f"prompt {escape(record.prompt_name)}{version}", highlight=False)

    if record.tools:
        names = ", ".join(tool.name for tool in record.tools)
        console.print(f"tools {escape(names)}; tool choice {record.tool_choice or 'default'}", highlight=False)

    console.rule("messages")
    for message in record.messages:
        role = message.role if message.tool_call_id is None else f"{message.role} ({message.tool_call_id})"
        error = " [red]error[/]" if message.is_error else ""
        console.print(f"[bold]{escape(role)}[/]{error}: {escape(message.content)}", highlight=False)
        _print_tool_calls(console, message.tool_calls)

    console.rule("output")
    console.print(record.output_text or "", markup=False, highlight=False)
    _print_tool_calls(console, record.tool_calls)
    if record.outcome != "ok":
        console.print(f"[red]error {record.error_kind}: {escape(record.error_message or '')}[/]", highlight=False)

    console.rule("usage and cost")
    usage = record.usage
    console.print(
        f"input {usage.input_tokens} (cached {usage.cache_read_tokens}, cache write "
        f"{usage.cache_write_tokens})  output {usage.output_tokens} (reasoning "
        f"{usage.reasoning_tokens}){'  estimated' if usage.estimated else ''}"
    )
    console.print(
        f"cost {format_cost(record.cost.total_usd, 1 if record.cost.price_missing else 0)}"
        f"  source {record.cost.source or '-'}"
    )
    _print_attempts(record)


def _print_attempts(record) -> None:  # noqa: ANN001
    table = Table("#", "deployment", "model", "outcome", "status", "latency", "wait", title="attempts")
    for attempt in record.attempts:
        outcome = attempt.outcome if attempt.outcome == "ok" else f"error: {attempt.error_kind}"
        wait = "-" if attempt.wait_s is None else f"{attempt.wait_s:.2f}s ({attempt.wait_reason})"
        table.add_row(
            str(attempt.attempt_number),
            attempt.deployment,
            attempt.model,
            outcome,
            str(attempt.status_code or "-"),
            format_ms(attempt.latency_ms),
            wait,
        )
    console.print(table)
    for hop in record.fallbacks:
        console.print(f"left {hop.deployment}: {hop.reason}")


def costs_command(
    by: Annotated[
        Literal["model", "day", "run"], typer.Option("--by", help="Group by model, day or run.")
    ] = "model",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object a line.")] = False,
) -> None:
    """Sum calls, tokens and cost by model, day or run; unpriced calls are counted apart."""
    rows = cost_summary(_store(), by)
    if as_json:
        for row in rows:
            typer.echo(json.dumps(row, default=str))
        return
    table = Table(by, "calls", "errors", "input tokens", "output tokens", "cached", "cost", "unpriced calls")
    for row in rows:
        priced = row["calls"] - row["unpriced_calls"]
        cost = format_cost(row["cost_usd"] if priced else None, row["unpriced_calls"])
        table.add_row(
            str(row["key"]),
            str(row["calls"]),
            str(row["errors"]),
            f"{row['input_tokens']:,}",
            f"{row['output_tokens']:,}",
            f"{row['cache_read_tokens']:,}",
            cost,
            str(row["unpriced_calls"]),
        )
    console.print(table)


def prune_command(
    older_than: Annotated[
        str | None,
        typer.Option(
            "--older-than",
            # Typer renders help as Rich markup, which would drop "[store]".
            help="Delete records that started longer ago than this, such as 30d, 12h or 2w, "
            f"up to {MAX_AGE_DAYS}d; by default \\[store] retention_days.",
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what would be deleted, and delete nothing.")
    ] = False,
) -> None:
    """Delete old calls, spans and finished runs in small transactions.

    Runs still marked running are kept, with their calls and spans.
    """
    settings = load_settings()
    if older_than is not None:
        age = parse_age(older_than)
    elif settings.store.retention_days is not None:
        age = retention_age(settings.store.retention_days)
    else:
        raise ConfigError(
            "no age given: pass --older-than (such as 30d), or set retention_days under "
            "[store] in trunkline.toml"
        )
    cutoff = datetime.now(UTC) - age
    store = open_store(settings.database_url(), must_exist=True)
    try:
        counts = prune(store, cutoff, dry_run=dry_run)
    finally:
        store.dispose()
    verb = "would delete" if dry_run else "deleted"
    summary = ", ".join(f"{count} {table}" for table, count in counts.items())
    typer.echo(f"{verb} {summary} from before {cutoff:%Y-%m-%d %H:%M:%S} UTC")
