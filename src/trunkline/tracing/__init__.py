"""Trace, run and session context over asyncio, spans, and where records go."""

from trunkline.tracing.context import (
    LiveSpan,
    TraceContext,
    active_context,
    current_context,
    inside_span,
    join_run,
    new_span_id,
    new_trace_id,
    open_span,
    session,
    span,
    start_run,
)
from trunkline.tracing.exporters import (
    Exporter,
    add_exporter,
    export_call,
    export_span,
    exporters,
    remove_exporter,
)

__all__ = [
    "Exporter",
    "LiveSpan",
    "TraceContext",
    "active_context",
    "add_exporter",
    "current_context",
    "export_call",
    "export_span",
    "exporters",
    "inside_span",
    "join_run",
    "new_span_id",
    "new_trace_id",
    "open_span",
    "remove_exporter",
    "session",
    "span",
    "start_run",
]
