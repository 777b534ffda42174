"""Exporters: the destinations of finished call records and spans.

Exporters run on the caller's path, so each must only enqueue. A failing
exporter is logged and skipped: telemetry never breaks the call it records.
"""

from __future__ import annotations

import logging
from typing import Protocol

from trunkline.types.calls import CallRecord
from trunkline.types.spans import SpanRecord

logger = logging.getLogger(__name__)


class Exporter(Protocol):
    """Receives every finished call record and span of the process."""

    def export_call(self, record: CallRecord) -> None: ...

    def export_span(self, record: SpanRecord) -> None: ...


_exporters: list[Exporter] = []


def exporters() -> tuple[Exporter, ...]:
    return tuple(_exporters)


def add_exporter(exporter: Exporter) -> None:
    """Register `exporter` once; adding the same object again does nothing."""
    if not any(existing is exporter for existing in _exporters):
        _exporters.append(exporter)


def remove_exporter(exporter: Exporter) -> None:
    _exporters[:] = [existing for existing in _exporters if existing is not exporter]


def export_call(record: CallRecord) -> None:
    for exporter in tuple(_exporters):
        try:
            exporter.export_call(record)
        except Exception:
            logger.exception("exporter %r failed on call %s", exporter, record.call_id)


def export_span(record: SpanRecord) -> None:
    for exporter in tuple(_exporters):
        try:
            exporter.export_span(record)
        except Exception:
            logger.exception("exporter %r failed on span %s", exporter, record.span_id)
