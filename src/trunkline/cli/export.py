"""`trunkline export`: send a stored run to other back ends.

`export otlp` re-sends a run's stored spans to an OpenTelemetry collector.
`export mlflow` logs a finished run to MLflow from the store, for a run whose
logging failed or that ran without --mlflow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy import select

from trunkline.config import load_settings
from trunkline.errors import ConfigError, StoreError
from trunkline.mlflow_runs import log_run, open_target, read_row_inputs, require_finished, run_rows
from trunkline.store.database import open_store
from trunkline.store.runs import get_run
from trunkline.store.tables import calls, spans
from trunkline.tracing.otlp import PROTOCOLS, exporter_from_settings, otlp_endpoint
from trunkline.types.calls import CallRecord
from trunkline.types.spans import SpanRecord

export_app = typer.Typer(help="Send stored records to other back ends.", no_args_is_help=True)


@export_app.command("otlp")
def export_otlp(
    run: Annotated[str, typer.Option("--run", help="The run whose spans and calls are sent.")],
    endpoint: Annotated[
        str | None,
        typer.Option(
            "--endpoint",
            help="OTLP traces endpoint; by default OTEL_EXPORTER_OTLP_ENDPOINT or \\[tracing] otlp_endpoint.",
        ),
    ] = None,
    protocol: Annotated[
        str | None,
        typer.Option(
            "--protocol",
            help=f"One of {', '.join(PROTOCOLS)}; by default OTEL_EXPORTER_OTLP_PROTOCOL or \\[tracing] otlp_protocol.",
        ),
    ] = None,
) -> None:
    """Re-send a run's spans and calls, for a collector that was down when the run happened."""
    settings = load_settings()
    if not (endpoint or otlp_endpoint(settings)):
        raise ConfigError(
            "no OTLP endpoint: pass --endpoint, set OTEL_EXPORTER_OTLP_ENDPOINT, or set "
            "otlp_endpoint under [tracing] in trunkline.toml"
        )
    store = open_store(settings.database_url(), must_exist=True)
    try:
        with store.engine.connect() as connection:
            span_rows = connection.execute(select(spans).where(spans.c.run_id == run)).mappings().all()
            call_rows = connection.execute(select(calls.c.record).where(calls.c.run_id == run)).all()
    finally:
        store.dispose()
    if not span_rows and not call_rows:
        raise StoreError(f"no spans or calls of run {run!r} in the store; list runs with `trunkline runs`")

    exporter = exporter_from_settings(
        settings, endpoint, protocol=protocol, max_queue=len(span_rows) + len(call_rows) + 16
    )
    assert exporter is not None  # an endpoint was found above
    # This command reports what was not accepted itself.
    exporter.warn_on_drop = False
    target = exporter.endpoint
    for row in span_rows:
        exporter.export_span(SpanRecord.model_validate(dict(row)))
    for row in call_rows:
        exporter.export_call(CallRecord.model_validate_json(row.record))
    exporter.flush(timeout_s=60)
    exporter.close()
    if exporter.dropped:
        typer.echo(
            f"error: sent {exporter.sent} spans of run {run} to {target}, but {exporter.dropped} were "
            "not accepted; check that the collector is running, then run this command again",
            err=True,
        )
        raise typer.Exit(1)
    typer.echo(f"sent {exporter.sent} spans of run {run} to {target}")


@export_app.command("mlflow")
def export_mlflow(
    run: Annotated[str, typer.Option("--run", help="The finished run to log.")],
    data: Annotated[
        Path | None,
        typer.Option(
            "--data",
            help="The dataset the run read, for the inputs column of the rows table; by default "
            "the run's own data file, if its content is unchanged.",
        ),
    ] = None,
) -> None:
    """Log a finished run to MLflow from the store, without running any row again."""
    settings = load_settings()
    store = open_store(settings.database_url(), must_exist=True)
    try:
        record = get_run(store, run)
        require_finished(record)
        found = read_row_inputs(record, run_rows(store, record), data)
        if found.problem:
            typer.echo(f"warning: {found.problem}", err=True)
        target = open_target(settings.mlflow, workflow=record["workflow"])
        logged = log_run(target, store, run, inputs=found.inputs)
    finally:
        store.dispose()
    typer.echo(logged.logged_message())
    superseded = logged.superseded_message()
    if superseded is not None:
        typer.echo(superseded, err=True)
