"""Wiring the store into tracing, so that every call and span is recorded."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from trunkline.config import Settings, load_settings
from trunkline.store.database import Store, open_store
from trunkline.store.writer import StoreWriter
from trunkline.tracing import add_exporter, remove_exporter


@dataclass
class Recorder:
    """An open store and the background writer that exports into it."""

    store: Store
    writer: StoreWriter


@contextmanager
def recording(settings: Settings | None = None, *, url: str | None = None) -> Iterator[Recorder]:
    """Record every call and span made inside the block to the store.

    The store is `url`, or the configured one. Leaving the block commits
    everything still queued.

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
    try:
        yield Recorder(store=store, writer=writer)
    finally:
        remove_exporter(writer)
        writer.close()
        store.dispose()
