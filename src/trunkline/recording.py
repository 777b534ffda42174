"""Wiring the store into tracing, so that every call and span is recorded."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from trunkline.config import Settings, load_settings
from trunkline.store.database import Store, open_store
from trunkline.store.writer import StoreWriter
from trunkline.tracing import add_exporter, remove_exporter
from trunkline.tracing.otlp import OtlpExporter, exporter_from_settings


@dataclass
class Recorder:
    """An open store and the background writer that exports into it."""

    store: Store
    writer: StoreWriter
    #: The OTLP exporter, when an endpoint is configured.
    otlp: OtlpExporter | None = None


@contextmanager
def recording(settings: Settings | None = None, *, url: str | None = None) -> Iterator[Recorder]:
    """Record every call and span made inside the block to the store, and to OTLP if configured.

    The store is `url`, or the configured one. Spans also go to an
    OpenTelemetry collector when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or
    ``otlp_endpoint`` under ``[tracing]`` in the configuration) names one. Leaving the block
    commits everything still queued and sends what the collector accepts.

    Example::

        with recording() as recorder:
            await Router().complete("Hello")
    """
    settings = settings or load_settings()
    store = open_store(url or settings.database_url())
    writer = StoreWriter(
        store,
        batch_size=settings.store.batch_size,
        flush_interval_s=settings.store.flush_interval_s,
    )
    add_exporter(writer)
    otlp = exporter_from_settings(settings)
    if otlp is not None:
        add_exporter(otlp)
    try:
        yield Recorder(store=store, writer=writer, otlp=otlp)
    finally:
        remove_exporter(writer)
        writer.close()
        store.dispose()
        if otlp is not None:
            remove_exporter(otlp)
            otlp.close()
