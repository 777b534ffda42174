"""`trunkline export otlp`: re-send a run's stored spans to an OpenTelemetry collector."""

from __future__ import annotations

from typing import Annotated

import typer
from sqlalchemy import select

from trunkline.config import load_settings
from trunkline.errors import ConfigError, StoreError
from trunkline.store.database import open_store
from trunkline.store.tables import calls, spans
from trunkline.tracing.otlp import OtlpExporter, otlp_endpoint
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
            help="OTLP/HTTP traces URL; by default OTEL_EXPORTER_OTLP_ENDPOINT or otlp_endpoint.",
        ),
    ] = None,
) -> None:
    """Re-send a run's spans and calls, for a collector that was down when the run happened."""
    settings = load_settings()
    target = endpoint or otlp_endpoint() or settings.otlp_endpoint
    if not target:
        raise ConfigError(
            "no OTLP endpoint: pass --endpoint, set OTEL_EXPORTER_OTLP_ENDPOINT, or set "
            "otlp_endpoint in trunkline.toml"
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

    exporter = OtlpExporter(target, max_queue=len(span_rows) + 4 * len(call_rows) + 16)
    for row in span_rows:
        exporter.export_span(SpanRecord.model_validate(dict(row)))
    for row in call_rows:
        exporter.export_call(CallRecord.model_validate_json(row.record))
    finished = exporter.flush(timeout_s=60)
    exporter.close()
    if not finished or exporter.dropped:
        raise StoreError(
            f"sent {exporter.sent} spans of run {run} to {target}, but {exporter.dropped} were not "
            "accepted; check that the collector is running and try again"
        )
    typer.echo(f"sent {exporter.sent} spans of run {run} to {target}")
