"""`trunkline db`: upgrade a store in place, and copy one store's records into another."""

from __future__ import annotations

from typing import Annotated

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from trunkline.config import load_settings
from trunkline.store.copy import copy_store
from trunkline.store.database import Store, open_store

db_app = typer.Typer(help="The record store: migrate it, copy it to another database.", no_args_is_help=True)
console = Console()


@db_app.command("migrate")
def migrate_command(
    url: Annotated[
        str | None,
        typer.Argument(help="The store to upgrade; by default the configured one (TRUNKLINE_DATABASE_URL)."),
    ] = None,
) -> None:
    """Create the store or upgrade it in place to the latest schema revision."""
    store = Store(url or load_settings().database_url())
    try:
        before = store.current_revision()
        store.upgrade()
        after = store.current_revision()
    finally:
        store.dispose()
    if before == after:
        typer.echo(f"store {store.safe_url()} is at the latest revision, {after}")
    else:
        typer.echo(f"store {store.safe_url()} upgraded from revision {before or 'none (empty)'} to {after}")


@db_app.command("copy")
def copy_command(
    source: Annotated[str, typer.Argument(help="The store to read, such as sqlite:///.trunkline/trunkline.db.")],
    target: Annotated[
        str, typer.Argument(help="The store to write, such as postgresql+psycopg://user@host/trunkline.")
    ],
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, max=100_000, help="Rows per committed transaction.")
    ] = 1000,
) -> None:
    """Copy every record of SOURCE that TARGET does not have yet.

    TARGET is created or upgraded first; SOURCE is only read. Rows whose key
    TARGET has already are kept as TARGET has them, so an interrupted copy can
    be run again.
    """
    source_store = open_store(source, migrate=False, must_exist=True)
    target_store = open_store(target)
    try:
        with console.status("copying") as status:
            results = copy_store(
                source_store,
                target_store,
                batch_size=batch_size,
                progress=lambda counts: status.update(f"copying {counts.table}: {counts.read:,} rows read"),
            )
    finally:
        source_store.dispose()
        target_store.dispose()
    table = Table(box=box.SIMPLE_HEAD)
    for heading in ("table", "read", "copied", "already in target"):
        table.add_column(heading, justify="left" if heading == "table" else "right")
    for counts in results:
        table.add_row(counts.table, f"{counts.read:,}", f"{counts.copied:,}", f"{counts.present:,}")
    console.print(table)
    copied = sum(counts.copied for counts in results)
    console.print(f"copied {copied:,} rows from {source_store.safe_url()} to {target_store.safe_url()}")
