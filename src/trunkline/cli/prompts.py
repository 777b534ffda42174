"""`trunkline prompts`: push, pull, list, show, diff and label registered prompts."""

from __future__ import annotations

import difflib
import getpass
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from trunkline.config import load_settings
from trunkline.errors import ConfigError
from trunkline.prompts import PromptRegistry, parse_reference, prompt_yaml, pull, push
from trunkline.store.database import open_store

prompts_app = typer.Typer(help="The prompt registry: versions, labels and YAML files.", no_args_is_help=True)
console = Console()


@contextmanager
def _registry(*, writing: bool = False) -> Iterator[PromptRegistry]:
    # Reading commands never create an empty store.
    store = open_store(load_settings().database_url(), must_exist=not writing)
    try:
        yield PromptRegistry(store)
    finally:
        store.dispose()


def _user(name: str | None) -> str:
    if name:
        return name
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


@prompts_app.command("push")
def push_command(
    folder: Annotated[Path, typer.Argument(help="Folder of .yaml prompt files, searched recursively.")],
    author: Annotated[str | None, typer.Option("--author", help="Recorded as each new version's author; default: the user.")] = None,
) -> None:
    """Add a version for every prompt file whose content is new; unchanged files add nothing."""
    with _registry(writing=True) as registry:
        pushed = push(registry, folder, author=_user(author))
    for item in pushed:
        state = "new" if item.created else "unchanged"
        typer.echo(f"{item.version.reference:<40} {state:<10} {item.path}")
    created = sum(item.created for item in pushed)
    typer.echo(f"{created} new versions, {len(pushed) - created} unchanged")


@prompts_app.command("pull")
def pull_command(
    folder: Annotated[Path, typer.Argument(help="Folder the .yaml files are written to.")],
    label: Annotated[str | None, typer.Option("--label", help="Write the version this label points at; prompts without it are skipped.")] = None,
    names: Annotated[list[str] | None, typer.Option("--name", help="Only this prompt; repeat for several.")] = None,
) -> None:
    """Write each prompt's latest version (or its labelled one) as a YAML file."""
    with _registry() as registry:
        written = pull(registry, folder, label=label, names=names)
    for path in written:
        typer.echo(str(path))
    typer.echo(f"{len(written)} prompt files written to {folder}")


@prompts_app.command("list")
def list_command(as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False) -> None:
    """List the prompts with their latest version and labels."""
    with _registry() as registry:
        summaries = registry.list()
    if as_json:
        rows = [
            {
                "name": item.name,
                "latest_version": item.latest_version,
                "versions": item.versions,
                "labels": item.labels,
                "updated_at": item.updated_at.isoformat(),
            }
            for item in summaries
        ]
        typer.echo(json.dumps(rows, indent=2))
        return
    if not summaries:
        typer.echo("no prompts yet; add some with `trunkline prompts push DIR`")
        return
    table = Table(box=box.SIMPLE_HEAD)
    for column in ("name", "latest", "versions", "labels", "updated (UTC)"):
        table.add_column(column)
    for item in summaries:
        labels = ", ".join(f"{label}@{version}" for label, version in sorted(item.labels.items()))
        table.add_row(
            escape(item.name), str(item.latest_version), str(item.versions), escape(labels),
            item.updated_at.strftime("%Y-%m-%d %H:%M"),
        )
    console.print(table)


@prompts_app.command("show")
def show_command(
    reference: Annotated[str, typer.Argument(help="NAME, NAME@VERSION or NAME:LABEL.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of YAML.")] = False,
    history: Annotated[bool, typer.Option("--history", help="Also list every version and every label move.")] = False,
) -> None:
    """Print one version as YAML, with its hash, author, time and labels."""
    with _registry() as registry:
        prompt = registry.get(reference)
        versions = registry.versions(prompt.name) if history else []
        moves = registry.label_history(prompt.name) if history else []
    if as_json:
        payload = prompt.model_dump(mode="json")
        if history:
            payload["versions"] = [
                {"version": item.version, "content_hash": item.content_hash, "author": item.author,
                 "created_at": item.created_at.isoformat(), "parent_version": item.parent_version}
                for item in versions
            ]
            payload["label_moves"] = [
                {"label": move.label, "from_version": move.from_version, "to_version": move.to_version,
                 "moved_by": move.moved_by, "moved_at": move.moved_at.isoformat()}
                for move in moves
            ]
        typer.echo(json.dumps(payload, indent=2))
        return
    typer.echo(f"# {prompt.reference}  hash {prompt.content_hash[:12]}  by {prompt.author or '-'}  "
               f"at {prompt.created_at:%Y-%m-%d %H:%M:%S} UTC")
    if prompt.labels:
        typer.echo(f"# labels: {', '.join(prompt.labels)}")
    if prompt.parent_version is not None:
        typer.echo(f"# derived from {prompt.name}@{prompt.parent_version}")
    typer.echo(prompt_yaml(prompt), nl=False)
    if history:
        typer.echo("\n# versions")
        for item in versions:
            typer.echo(f"#   {item.version}  {item.content_hash[:12]}  {item.author or '-'}  {item.created_at:%Y-%m-%d %H:%M:%S}")
        typer.echo("# label moves")
        for move in moves:
            before = "-" if move.from_version is None else str(move.from_version)
            typer.echo(f"#   {move.label}: {before} -> {move.to_version} by {move.moved_by or '-'} at {move.moved_at:%Y-%m-%d %H:%M:%S}")


@prompts_app.command("diff")
def diff_command(
    first: Annotated[str, typer.Argument(help="The old version: NAME@A or NAME:LABEL.")],
    second: Annotated[str, typer.Argument(help="The new version: NAME@B or NAME:LABEL.")],
) -> None:
    """Print a unified diff of two versions' YAML; exit 1 when they differ, as diff does."""
    with _registry() as registry:
        old, new = registry.get(first), registry.get(second)
    lines = difflib.unified_diff(
        prompt_yaml(old, with_version=False).splitlines(keepends=True),
        prompt_yaml(new, with_version=False).splitlines(keepends=True),
        fromfile=old.reference,
        tofile=new.reference,
    )
    text = "".join(lines)
    if not text:
        typer.echo(f"{old.reference} and {new.reference} have the same content")
        return
    typer.echo(text, nl=False)
    raise typer.Exit(1)


@prompts_app.command("label")
def label_command(
    reference: Annotated[str, typer.Argument(help="NAME@VERSION the label points at from now on.")],
    label: Annotated[str, typer.Argument(help="The label, such as production or staging.")],
    moved_by: Annotated[str | None, typer.Option("--by", help="Recorded as who moved the label; default: cli:USER.")] = None,
) -> None:
    """Point a label at a version; the move is kept in the label's history."""
    parsed = parse_reference(reference)
    if parsed.version is None:
        raise ConfigError(f"give the version the label points at, as in {parsed.name}@3; got {reference!r}")
    with _registry(writing=True) as registry:
        # The audit log names CLI actors cli:USER, as `trunkline keys` does.
        actor = moved_by or f"cli:{_user(None)}"
        move = registry.set_label(parsed.name, parsed.version, label, moved_by=actor)
    before = "nowhere" if move.from_version is None else f"version {move.from_version}"
    typer.echo(f"{parsed.name}:{label} now points at version {move.to_version} (was {before})")
