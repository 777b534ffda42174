"""`trunkline loadtest`: replay a traffic profile at a multiple of its rate and report what happens."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from trunkline.config import Settings, load_settings
from trunkline.errors import ConfigError, StoreError
from trunkline.loadtest.engine import LoadTestOptions, run_loadtest
from trunkline.loadtest.html import format_value, render_html, summary_rows
from trunkline.loadtest.profile import Profile, load_profile_file, parse_duration
from trunkline.loadtest.recorded import profile_from_recent, profile_from_run
from trunkline.loadtest.report import LoadReport, build_report
from trunkline.recording import recording
from trunkline.store.database import open_store

#: Window of `--profile recent` when it names none.
RECENT_WINDOW = "1h"


def resolve_profile(settings: Settings, value: str) -> Profile:
    """Load a profile from a file, from ``recent[:WINDOW]`` traffic, or from a recorded run id."""
    path = Path(value)
    if path.suffix.lower() in (".toml", ".json") or path.is_file():
        return load_profile_file(path)
    try:
        store = open_store(settings.database_url(), must_exist=True)
    except StoreError as error:
        raise StoreError(
            f"--profile {value} reads recorded calls, but {error}; or give a .toml or .json "
            "profile file, as docs/loadtest.md describes"
        ) from error
    try:
        if value == "recent" or value.startswith("recent:"):
            window = value.partition(":")[2] or RECENT_WINDOW
            return profile_from_recent(store, parse_duration(window))
        return profile_from_run(store, value)
    finally:
        store.dispose()


def loadtest_command(
    scale: Annotated[
        float, typer.Option("--scale", help="Multiply the profile's arrival rate by this factor.")
    ] = 1.0,
    profile: Annotated[
        str,
        typer.Option(
            "--profile",
            help="A .toml or .json profile file, a recorded run id, or recent[:WINDOW] "
            "for the calls of the last hour (or WINDOW, such as recent:24h).",
        ),
    ] = "recent",
    duration: Annotated[
        str, typer.Option("--duration", help="How long requests arrive: 90, 60s, 2m or 1h.")
    ] = "60s",
    drain: Annotated[
        str,
        typer.Option("--drain", help="How long to wait after the last arrival for open requests."),
    ] = "30s",
    target: Annotated[
        str | None,
        typer.Option(
            "--target",
            help="Base URL of a running Trunkline gateway to send the traffic to, instead "
            "of simulated providers.",
        ),
    ] = None,
    api_key_env: Annotated[
        str,
        typer.Option(
            "--api-key-env",
            help="Environment variable holding the gateway key for --target.",
        ),
    ] = "TRUNKLINE_API_KEY",
    seed: Annotated[
        int | None, typer.Option("--seed", help="Replace the profile's seed.")
    ] = None,
    max_requests: Annotated[
        int, typer.Option("--max-requests", min=1, help="Reject a plan of more requests than this.")
    ] = 100_000,
    max_in_flight: Annotated[
        int,
        typer.Option("--max-in-flight", min=1, help="Skip arrivals while this many are open."),
    ] = 10_000,
    record: Annotated[
        bool,
        typer.Option(
            "--record/--no-record",
            help="Write the load test's calls to the store, under run id loadtest_... "
            "and tag loadtest=true. Off by default, so that simulated calls stay out "
            "of real cost reports.",
        ),
    ] = False,
    report: Annotated[
        Path | None,
        typer.Option("--report", help="Write a self-contained HTML report with charts here."),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the report as one JSON object on stdout.")
    ] = False,
) -> None:
    """Replay a traffic profile at --scale times its rate and report throughput, failures and cost."""
    settings = load_settings()
    chosen = resolve_profile(settings, profile)
    if seed is not None:
        chosen = chosen.model_copy(update={"seed": seed})
    api_key = os.environ.get(api_key_env) if target else None
    if target and not api_key:
        raise ConfigError(
            f"--target needs a gateway key in the environment variable {api_key_env}, "
            "which is not set; export it, or name another with --api-key-env"
        )
    options = LoadTestOptions(
        scale=scale,
        duration_s=parse_duration(duration),
        drain_s=parse_duration(drain),
        max_requests=max_requests,
        max_in_flight=max_in_flight,
        target=target,
        api_key=api_key,
    )

    stderr = Console(stderr=True)
    stderr.print(
        f"load test: {chosen.rate_rps * scale:.3g} requests/s for {options.duration_s:g}s "
        f"against {target or 'simulated providers'}; profile: {chosen.source}"
    )
    with _quiet_router(), recording(settings) if record else nullcontext():
        result = asyncio.run(run_loadtest(settings, chosen, options))
    built = build_report(result)

    if report is not None:
        report.write_text(render_html(built.public()), encoding="utf-8")
        stderr.print(f"report written to {report}")
    if as_json:
        typer.echo(json.dumps(built.public()))
    else:
        _print_tables(Console(), built)


@contextmanager
def _quiet_router() -> Iterator[None]:
    """Raise the router's log level for the test, because every retry would log a warning.

    The report counts those retries and fallbacks instead.
    """
    routing = logging.getLogger("trunkline.routing")
    level = routing.level
    routing.setLevel(logging.ERROR)
    try:
        yield
    finally:
        routing.setLevel(level)


def _print_tables(console: Console, report: LoadReport) -> None:
    figures = report.public()
    summary = Table(
        title=f"load test {figures['run_id']}  scale {figures['scale']:g}",
        show_header=False,
        title_justify="left",
    )
    summary.add_column("figure", style="bold")
    summary.add_column("value", justify="right")
    for label, value in summary_rows(figures):
        summary.add_row(label, format_value(value))
    console.print(summary)

    routes = Table(title="calls by route", title_justify="left")
    for column in ("route", "calls", "ok", "errors", "p50 ms", "p99 ms", "cost USD"):
        routes.add_column(column, justify="left" if column == "route" else "right")
    for route, row in figures["by_route"].items():
        routes.add_row(
            route,
            *(
                format_value(row[key])
                for key in ("calls", "ok", "errors", "latency_p50_ms", "latency_p99_ms", "cost_usd")
            ),
        )
    console.print(routes)

    attempts = figures["attempts"]
    if attempts is None:
        return
    upstreams = figures["upstreams"] or {}
    table = Table(title="attempts by deployment: router record / simulated provider", title_justify="left")
    columns = ("requests", "ok", "rate_limited", "server_error", "timeout")
    table.add_column("deployment")
    for column in columns:
        table.add_column(column, justify="right")
    # Abandoned requests are those the router's attempt timeout cut off
    # before the provider answered; the router records them as timeouts.
    table.add_column("abandoned", justify="right")
    for name in sorted({*attempts["by_deployment"], *upstreams}):
        recorded = attempts["by_deployment"].get(name, {})
        seen = upstreams.get(name, {})
        table.add_row(
            name,
            *(f"{recorded.get(column, 0)} / {seen.get(column, 0)}" for column in columns),
            f"- / {seen.get('abandoned', 0)}",
        )
    console.print(table)
