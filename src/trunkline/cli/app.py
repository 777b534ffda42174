"""The `trunkline` command: a thin layer over the Python API."""

from __future__ import annotations

import sys

import typer
from rich.console import Console
from rich.markup import escape

from trunkline.cli import db, evals, improve, loadtest, plan, records, routes, run, serve, trace, worker
from trunkline.cli.export import export_app
from trunkline.cli.keys import audit_command, keys_app
from trunkline.cli.prompts import prompts_app
from trunkline.errors import TrunklineError
from trunkline.logs import configure_logging
from trunkline.redaction import redact

app = typer.Typer(
    name="trunkline",
    help="Run LLM pipelines and keep a queryable record of every model call.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("run")(run.run_command)
app.command("plan")(plan.plan_command)
app.command("runs")(records.runs_command)
app.command("calls")(records.calls_command)
app.command("show")(records.show_command)
app.command("costs")(records.costs_command)
# The same command as `trunkline db migrate`, kept for scripts that call it.
app.command("migrate", hidden=True)(db.migrate_command)
app.command("prune")(records.prune_command)
app.command("routes")(routes.routes_command)
app.command("trace")(trace.trace_command)
app.command("eval")(evals.eval_command)
app.command("compare")(evals.compare_command)
app.command("experiments")(evals.experiments_command)
app.command("improve")(improve.improve_command)
app.command("serve")(serve.serve_command)
app.command("worker")(worker.worker_command)
app.command("audit")(audit_command)
app.command("loadtest")(loadtest.loadtest_command)
app.add_typer(evals.evals_app, name="evals")
app.add_typer(export_app, name="export")
app.add_typer(prompts_app, name="prompts")
app.add_typer(keys_app, name="keys")
app.add_typer(db.db_app, name="db")

errors = Console(stderr=True)


def main() -> None:
    """Run the app; Trunkline's errors become one clear line and exit status 2.

    Typer's standalone mode already turns usage errors into a message with
    status 2 and Ctrl-C into status 1.
    """
    try:
        configure_logging()
        app()
    except TrunklineError as error:
        errors.print(f"[bold red]error:[/] {escape(redact(str(error)))}", highlight=False)
        sys.exit(2)
