"""`trunkline keys` and `trunkline audit`: gateway keys and the log of admin actions."""

from __future__ import annotations

import getpass
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from trunkline.config import Settings, load_settings
from trunkline.errors import ConfigError
from trunkline.store.audit import describe_details, list_actions
from trunkline.store.database import Store, open_store
from trunkline.store.keys import (
    ApiKey,
    KeyLimits,
    NewKey,
    check_routes,
    create_key,
    expiry_after,
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
    float | None, typer.Option("--budget", help="Spending limit of the key in USD per UTC day.")
]
RpmOption = Annotated[int | None, typer.Option("--rpm", help="Requests per minute the key may send.")]
TpmOption = Annotated[
    int | None,
    typer.Option("--tpm", help="Tokens per minute the key may use, counted as prompt plus max_tokens."),
]
RoutesOption = Annotated[
    str | None,
    typer.Option("--routes", help="Comma-separated routes or deployments the key may call; default: all."),
]
ExpiresOption = Annotated[
    float | None, typer.Option("--expires-in-days", help="Days until the key stops working.")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
#: Key ids and actors are what users copy into the next command, so their columns never shorten them.
WHOLE = {"no_wrap": True, "overflow": "fold"}
#: Other columns wrap long values onto more lines instead of cutting them off with an ellipsis.
WRAPPED = {"overflow": "fold"}


@contextmanager
def _store(settings: Settings | None = None, *, writing: bool = False) -> Iterator[Store]:
    settings = settings or load_settings()
    store = open_store(settings.database_url(), must_exist=not writing)
    try:
        yield store
    finally:
        store.dispose()


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"


def _route_names(routes: str, settings: Settings) -> tuple[str, ...]:
    """Split `--routes` and check each name against the configured routes and deployments."""
    names = tuple(name.strip() for name in routes.split(","))
    if any(not name for name in names):
        raise typer.BadParameter(
            f"{routes!r} has an empty item; separate the names with single commas, as in chat,claude",
            param_hint="--routes",
        )
    served = list(dict.fromkeys([*settings.routes, *settings.deployments]))
    check_routes(names, served)
    return names


def _limits(
    settings: Settings,
    budget: float | None,
    rpm: int | None,
    tpm: int | None,
    routes: str | None,
    expires_in_days: float | None,
) -> KeyLimits:
    names = _route_names(routes, settings) if routes is not None else None
    expires = expiry_after(expires_in_days) if expires_in_days is not None else None
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
    settings = load_settings()
    parsed_role = parse_role(role)
    limits = _limits(settings, budget, rpm, tpm, routes, expires_in_days)
    with _store(settings, writing=True) as store:
        new = create_key(store, parsed_role, name=name, limits=limits, actor=_actor())
    _print_new(new, as_json)


@keys_app.command("list")
def list_command(
    active: Annotated[bool, typer.Option("--active", help="Leave out revoked and expired keys.")] = False,
    as_json: JsonOption = False,
) -> None:
    """List the keys with their role, state, expiry and limits; never the keys themselves."""
    with _store() as store:
        keys = list_keys(store, include_revoked=not active)
    if active:
        now = datetime.now(UTC)
        keys = [key for key in keys if key.state(now) == "active"]
    if as_json:
        typer.echo(json.dumps([key.as_dict() for key in keys], indent=2))
        return
    table = Table(box=box.SIMPLE_HEAD)
    table.add_column("id", **WHOLE)
    table.add_column("name", **WRAPPED)
    table.add_column("role", min_width=9, **WRAPPED)
    table.add_column("state", min_width=7, **WRAPPED)
    table.add_column("expires", min_width=10, **WRAPPED)
    table.add_column("limits", **WRAPPED)
    table.add_column("routes", **WRAPPED)
    for key in keys:
        table.add_row(
            key.key_id,
            escape(key.name or ""),
            key.role.value,
            key.state(),
            f"{key.expires_at:%Y-%m-%d}" if key.expires_at is not None else "never",
            ", ".join(_limit_texts(key)) or "none",
            _routes_text(key),
        )
    console.print(table)


def _limit_texts(key: ApiKey) -> list[str]:
    texts = []
    if key.budget_usd_per_day is not None:
        texts.append(f"${key.budget_usd_per_day:g}/day")
    if key.rpm is not None:
        texts.append(f"{key.rpm} rpm")
    if key.tpm is not None:
        texts.append(f"{key.tpm} tpm")
    return texts


def _routes_text(key: ApiKey) -> str:
    return escape(",".join(key.routes)) if key.routes else "all"


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


#: The names `--remove` accepts, each with the option that sets the same limit and the field it clears.
_REMOVABLE = {
    "budget": ("--budget", "budget_usd_per_day"),
    "rpm": ("--rpm", "rpm"),
    "tpm": ("--tpm", "tpm"),
    "routes": ("--routes", "routes"),
    "expiry": ("--expires-in-days", "expires_at"),
}


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
    removed = set(remove or ())
    unknown = sorted(removed - set(_REMOVABLE))
    if unknown:
        raise typer.BadParameter(
            f"cannot remove {', '.join(unknown)}; use budget, rpm, tpm, routes or expiry", param_hint="--remove"
        )

    requested = {"budget": budget, "rpm": rpm, "tpm": tpm, "routes": routes, "expiry": expires_in_days}
    both = sorted(name for name in removed if requested[name] is not None)
    if both:
        options = ", ".join(f"{_REMOVABLE[name][0]} with --remove {name}" for name in both)
        raise typer.BadParameter(f"{options} contradict each other; give one of them", param_hint="--remove")
    if not removed and all(value is None for value in requested.values()):
        raise ConfigError(
            f"no limit was given for key {key_id}; set one with --budget, --rpm, --tpm, "
            "--routes or --expires-in-days, or lift one with --remove"
        )

    settings = load_settings()
    new = _limits(settings, budget, rpm, tpm, routes, expires_in_days)
    with _store(settings) as store:
        old = get_key(store, key_id)
        values = {}
        for _, field in _REMOVABLE.values():
            new_value = getattr(new, field)
            values[field] = new_value if new_value is not None else getattr(old, field)
        for name in removed:
            values[_REMOVABLE[name][1]] = None
        key = set_limits(store, key_id, KeyLimits(**values), actor=_actor())

    expires = f"{key.expires_at:%Y-%m-%d %H:%M} UTC" if key.expires_at is not None else "never"
    summary = ", ".join(_limit_texts(key)) or "no rate or budget limits"
    typer.echo(f"key {key.key_id}: {summary}; routes {_routes_text(key)}; expires {expires}")


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
    table.add_column("when (UTC)", min_width=10, **WRAPPED)
    table.add_column("actor", **WHOLE)
    table.add_column("action", **WHOLE)
    table.add_column("target", **WHOLE)
    table.add_column("details", **WRAPPED)
    for row in rows:
        table.add_row(
            row["at"].strftime("%Y-%m-%d %H:%M:%S"),
            escape(row["actor"]),
            row["action"],
            escape(row["target"] or ""),
            escape(describe_details(row["details"])),
        )
    console.print(table)
