"""`trunkline keys` and `trunkline audit`: gateway keys and the log of admin actions."""

from __future__ import annotations

import getpass
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from trunkline.config import load_settings
from trunkline.store.audit import list_actions
from trunkline.store.database import Store, open_store
from trunkline.store.keys import (
    ApiKey,
    KeyLimits,
    NewKey,
    create_key,
    get_key,
    list_keys,
    parse_role,
    revoke_key,
    rotate_key,
    set_limits,
)

keys_app = typer.Typer(help="Gateway keys: create, list, revoke, rotate and limit them.", no_args_is_help=True)
console = Console()

BudgetOption = Annotated[
    float | None, typer.Option("--budget", min=0.000001, help="Spending limit of the key in USD per UTC day.")
]
RpmOption = Annotated[int | None, typer.Option("--rpm", min=1, help="Requests per minute the key may send.")]
TpmOption = Annotated[
    int | None,
    typer.Option("--tpm", min=1, help="Tokens per minute the key may use, counted as prompt plus max_tokens."),
]
RoutesOption = Annotated[
    str | None,
    typer.Option("--routes", help="Comma-separated routes or deployments the key may call; default: all."),
]
ExpiresOption = Annotated[
    float | None, typer.Option("--expires-in-days", min=0.001, help="Days until the key stops working.")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


@contextmanager
def _store(*, writing: bool = False) -> Iterator[Store]:
    store = open_store(load_settings().database_url(), must_exist=not writing)
    try:
        yield store
    finally:
        store.dispose()


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"


def _limits(
    budget: float | None, rpm: int | None, tpm: int | None, routes: str | None, expires_in_days: float | None
) -> KeyLimits:
    names = None
    if routes is not None:
        names = tuple(name.strip() for name in routes.split(",") if name.strip())
    expires = datetime.now(UTC) + timedelta(days=expires_in_days) if expires_in_days else None
    return KeyLimits(budget_usd_per_day=budget, rpm=rpm, tpm=tpm, routes=names, expires_at=expires)


def _print_new(new: NewKey, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps({**new.key.as_dict(), "key": new.secret}, indent=2))
        return
    typer.echo(new.secret)
    console.print(
        f"key {new.key.key_id} ({new.key.role.value}) created; it is shown only this once, "
        "so store it now",
        style="yellow",
        highlight=False,
    )


@keys_app.command("create")
def create_command(
    role: Annotated[str, typer.Option("--role", help="admin, developer, viewer or metrics.")],
    name: Annotated[str | None, typer.Option("--name", help="A label for people, such as the team or service.")] = None,
    budget: BudgetOption = None,
    rpm: RpmOption = None,
    tpm: TpmOption = None,
    routes: RoutesOption = None,
    expires_in_days: ExpiresOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create a key and print it once; the store keeps only its hash."""
    limits = _limits(budget, rpm, tpm, routes, expires_in_days)
    with _store(writing=True) as store:
        new = create_key(store, parse_role(role), name=name, limits=limits, actor=_actor())
    _print_new(new, as_json)


@keys_app.command("list")
def list_command(
    active: Annotated[bool, typer.Option("--active", help="Leave out revoked keys.")] = False,
    as_json: JsonOption = False,
) -> None:
    """List the keys with their role, state and limits; never the keys themselves."""
    with _store() as store:
        keys = list_keys(store, include_revoked=not active)
    if as_json:
        typer.echo(json.dumps([key.as_dict() for key in keys], indent=2))
        return
    table = Table(box=box.SIMPLE_HEAD)
    for column in ("id", "name", "role", "state", "created", "budget/day", "rpm", "tpm", "routes"):
        table.add_column(column)
    for key in keys:
        table.add_row(*_key_cells(key))
    console.print(table)


def _key_cells(key: ApiKey) -> list[str]:
    return [
        key.key_id,
        escape(key.name or ""),
        key.role.value,
        key.state(),
        key.created_at.strftime("%Y-%m-%d %H:%M"),
        f"${key.budget_usd_per_day:g}" if key.budget_usd_per_day is not None else "-",
        str(key.rpm or "-"),
        str(key.tpm or "-"),
        escape(",".join(key.routes)) if key.routes else "all",
    ]


@keys_app.command("revoke")
def revoke_command(key_id: Annotated[str, typer.Argument(help="The key's id, from `trunkline keys list`.")]) -> None:
    """Revoke a key; gateways stop accepting it within their key cache time (5 s by default)."""
    with _store() as store:
        key = revoke_key(store, key_id, actor=_actor())
    typer.echo(f"key {key.key_id} revoked at {key.revoked_at:%Y-%m-%d %H:%M:%S} UTC")


@keys_app.command("rotate")
def rotate_command(
    key_id: Annotated[str, typer.Argument(help="The key's id, from `trunkline keys list`.")],
    as_json: JsonOption = False,
) -> None:
    """Revoke a key and print a new one with the same role, name and limits."""
    with _store() as store:
        new = rotate_key(store, key_id, actor=_actor())
    _print_new(new, as_json)


_REMOVABLE = {"budget": "budget_usd_per_day", "rpm": "rpm", "tpm": "tpm", "routes": "routes", "expiry": "expires_at"}


@keys_app.command("limits")
def limits_command(
    key_id: Annotated[str, typer.Argument(help="The key's id, from `trunkline keys list`.")],
    budget: BudgetOption = None,
    rpm: RpmOption = None,
    tpm: TpmOption = None,
    routes: RoutesOption = None,
    expires_in_days: ExpiresOption = None,
    remove: Annotated[
        list[str] | None,
        typer.Option("--remove", help="Lift a limit: budget, rpm, tpm, routes or expiry; repeat for several."),
    ] = None,
) -> None:
    """Change a key's limits; the ones not named keep their values."""
    unknown = sorted(set(remove or ()) - set(_REMOVABLE))
    if unknown:
        raise typer.BadParameter(
            f"cannot remove {', '.join(unknown)}; use budget, rpm, tpm, routes or expiry", param_hint="--remove"
        )
    given = _limits(budget, rpm, tpm, routes, expires_in_days)
    with _store() as store:
        old = get_key(store, key_id)
        values = {}
        for field in _REMOVABLE.values():
            new_value = getattr(given, field)
            values[field] = new_value if new_value is not None else getattr(old, field)
        for name in remove or ():
            values[_REMOVABLE[name]] = None
        key = set_limits(store, key_id, KeyLimits(**values), actor=_actor())
    typer.echo(f"key {key.key_id}: " + ", ".join(
        f"{column} {value}" for column, value in zip(
            ("budget/day", "rpm", "tpm", "routes"), _key_cells(key)[5:], strict=True
        )
    ))


def describe_details(details: dict) -> str:
    """Render an audit entry's details in one line; a change lists each field that moved."""
    if set(details) == {"before", "after"}:
        before, after = details["before"], details["after"]
        moved = [name for name in after if before.get(name) != after.get(name)]
        return ", ".join(f"{name}: {before.get(name)} -> {after.get(name)}" for name in moved) or "no change"
    return ", ".join(f"{name}={value}" for name, value in details.items() if value is not None)


def audit_command(
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000, help="Entries to show, newest first.")] = 50,
    actor: Annotated[str | None, typer.Option("--actor", help="Only this actor, such as key:3f2a01bc9d4e or cli:alice.")] = None,
    action: Annotated[str | None, typer.Option("--action", help="Only this action, such as key.created or label.moved.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Show who created, revoked or rotated keys, moved labels or changed limits, and when."""
    with _store() as store:
        rows, total = list_actions(store, limit=limit, actor=actor, action=action)
    if as_json:
        typer.echo(json.dumps([{**row, "at": row["at"].isoformat()} for row in rows], indent=2))
        return
    table = Table(box=box.SIMPLE_HEAD, caption=f"{len(rows)} of {total} entries", caption_justify="left")
    for column in ("when (UTC)", "actor", "action", "target", "details"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row["at"].strftime("%Y-%m-%d %H:%M:%S"),
            escape(row["actor"]),
            row["action"],
            escape(row["target"] or ""),
            escape(describe_details(row["details"])),
        )
    console.print(table)
