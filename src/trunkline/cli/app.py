"""The `trunkline` command: a thin layer over the Python API."""

from __future__ import annotations

import logging
import sys

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape

from trunkline.cli import records, run
from trunkline.errors import TrunklineError

app = typer.Typer(
    name="trunkline",
    help="Run LLM pipelines and keep a queryable record of every model call.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("run")(run.run_command)
app.command("calls")(records.calls_command)
app.command("show")(records.show_command)
app.command("costs")(records.costs_command)
app.command("migrate")(records.migrate_command)

errors = Console(stderr=True)


def _configure_logging() -> None:
    handler = RichHandler(console=errors, show_path=False, show_time=False)
    logging.basicConfig(level=logging.WARNING, handlers=[handler], format="%(message)s")


def main() -> None:
    """Entry point: run the app, turning Trunkline's errors into one clear line and exit code 2."""
    _configure_logging()
    try:
        # Without standalone mode, click returns typer.Exit's code instead of exiting.
        status = app(standalone_mode=False)
    except TrunklineError as error:
        errors.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        errors.print("interrupted")
        sys.exit(130)
    except typer.Exit as done:
        sys.exit(done.exit_code)
    except typer.Abort:
        errors.print("aborted")
        sys.exit(1)
    except Exception as error:  # click's usage errors carry their own exit code
        import click

        if isinstance(error, click.ClickException):
            error.show()
            sys.exit(error.exit_code)
        raise
    if isinstance(status, int) and status:
        sys.exit(status)
