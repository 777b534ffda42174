"""`trunkline routes`: the configured routes, and with --status each deployment's health."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.console import Console
from rich.table import Table
from sqlalchemy.engine import make_url

from trunkline.config import Settings, load_settings
from trunkline.errors import ErrorKind
from trunkline.resilience.breaker import BreakerStatus, CircuitBreaker
from trunkline.store.database import open_store
from trunkline.store.queries import recent_attempts

console = Console()
errors = Console(stderr=True)


def routes_command(
    status: Annotated[
        bool,
        typer.Option(
            "--status",
            help="Show each deployment's circuit breaker, replayed from the recorded attempts.",
        ),
    ] = False,
    hours: Annotated[
        float,
        typer.Option("--hours", min=0.01, max=87_600, help="How far back --status reads attempts, in hours."),
    ] = 1.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List the routes with their deployments and policies."""
    settings = load_settings()
    if status:
        _print_status(settings, hours, as_json)
        return
    if as_json:
        payload = {name: route.model_dump() for name, route in _routes(settings).items()}
        typer.echo(json.dumps(payload, indent=2))
        return
    _print_routes(settings)
    _print_deployments(settings)


def _print_routes(settings: Settings) -> None:
    table = Table(
        box=box.SIMPLE_HEAD,
        caption="attempts: per deployment, each under the timeout; "
        "breaker: failures to open it / seconds open",
        caption_justify="left",
    )
    table.add_column("route", no_wrap=True)
    table.add_column("deployments in order", overflow="fold")
    for name in ("attempts", "deadline", "breaker"):
        table.add_column(name, no_wrap=True)
    table.add_column("downgrade to", overflow="fold")
    for name, route in _routes(settings).items():
        table.add_row(
            name + (" (default)" if name == settings.default_route else ""),
            ", ".join(route.deployments),
            f"{route.max_attempts} x {route.timeout_s:g}s",
            "-" if route.deadline_s is None else f"{route.deadline_s:g}s",
            f"{route.breaker_failures} / {route.breaker_cooldown_s:g}s",
            ", ".join(route.downgrade_to) or "-",
        )
    console.print(table)


def _print_deployments(settings: Settings) -> None:
    deployments = Table(box=box.SIMPLE_HEAD)
    deployments.add_column("deployment", overflow="fold")
    deployments.add_column("provider", no_wrap=True)
    deployments.add_column("model", overflow="fold")
    for name in ("rpm", "tpm", "concurrent", "context"):
        deployments.add_column(name, no_wrap=True, justify="right")
    for name, deployment in sorted(settings.deployments.items()):
        deployments.add_row(
            name,
            deployment.provider,
            deployment.model,
            *(
                "-" if value is None else f"{value:,}"
                for value in (
                    deployment.rpm,
                    deployment.tpm,
                    deployment.max_concurrent,
                    deployment.context_window,
                )
            ),
        )
    console.print(deployments)


def _store_exists(url: str) -> bool:
    """Return False only for a SQLite file that does not exist; other stores are opened."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return True
    return Path(parsed.database).is_file()


def _routes(settings: Settings):  # noqa: ANN202
    return dict(sorted(settings.routes.items()))


def deployment_status(settings: Settings, attempts: list[dict], now: datetime) -> list[BreakerStatus]:
    """Replay recorded attempts through each deployment's breaker, as the router would have."""
    thresholds: dict[str, tuple[int, float]] = {}
    for route in settings.routes.values():
        for name in (*route.deployments, *route.downgrade_to):
            thresholds.setdefault(name, (route.breaker_failures, route.breaker_cooldown_s))
    breakers = {
        name: CircuitBreaker(failures=failures, cooldown_s=cooldown)
        for name, (failures, cooldown) in thresholds.items()
    }
    for name in settings.deployments:
        breakers.setdefault(name, CircuitBreaker())
    for attempt in attempts:
        breaker = breakers.get(attempt["deployment"])
        if breaker is None:
            continue
        moment = attempt["ended_at"].timestamp()
        kind = attempt["error_kind"]
        if attempt["outcome"] == "error" and kind and ErrorKind(kind).counts_against_deployment:
            if breaker.state(moment).value == "half_open":
                breaker.probing = True
            breaker.record_failure(moment, str(kind))
        else:
            breaker.record_success()
    return [breakers[name].status(name, now.timestamp()) for name in sorted(breakers)]


def _print_status(settings: Settings, hours: float, as_json: bool) -> None:
    now = datetime.now(UTC)
    attempts: list[dict] = []
    url = settings.database_url()
    if _store_exists(url):
        # Any other failure to read the store is an error, because an empty
        # table here would read as every deployment being healthy.
        store = open_store(url, must_exist=True)
        try:
            attempts = recent_attempts(store, since=now - timedelta(hours=hours))
        finally:
            store.dispose()
    else:
        errors.print(
            f"no store at {url} yet, so no attempts are recorded and every breaker shows as closed"
        )

    statuses = deployment_status(settings, attempts, now)
    counts: dict[str, list[int]] = {}
    for attempt in attempts:
        seen = counts.setdefault(attempt["deployment"], [0, 0])
        seen[0] += 1
        seen[1] += attempt["outcome"] == "error"
    if as_json:
        rows = [
            {**asdict(status), "attempts": counts.get(status.deployment, [0, 0])[0],
             "errors": counts.get(status.deployment, [0, 0])[1]}
            for status in statuses
        ]
        typer.echo(json.dumps(rows, indent=2, default=str))
        return
    table = Table(
        title=f"deployment health over the last {hours:g} h (from recorded attempts)",
        title_justify="left",
        caption="failures: consecutive failures that count against the breaker",
        caption_justify="left",
        box=box.SIMPLE_HEAD,
    )
    table.add_column("deployment", overflow="fold")
    for name in ("breaker", "failures", "probe in", "attempts", "errors"):
        table.add_column(name, no_wrap=True, justify="right" if name != "breaker" else "left")
    for status in statuses:
        seen = counts.get(status.deployment, [0, 0])
        table.add_row(
            status.deployment,
            status.state.value,
            str(status.consecutive_failures),
            "-" if status.state.value == "closed" else f"{status.retry_in_s:.0f}s",
            str(seen[0]),
            str(seen[1]),
        )
    console.print(table)
