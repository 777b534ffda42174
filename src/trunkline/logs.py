"""Log output through structlog: readable on a terminal, JSON lines elsewhere.

Trunkline's modules log with the standard library's `logging`, so that an
application that configures logging its own way keeps control. `configure_logging`
routes the ``trunkline`` loggers through structlog's `ProcessorFormatter`, which
renders each line as JSON or for a terminal and adds the ids of the trace,
span, run and session open where the line was logged.

Levels: INFO reports what a run did (start, end, summary), DEBUG reports
each attempt, and WARNING and ERROR report what went wrong and what to do.
No level logs a prompt or an output.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, Literal, TextIO

import structlog

from trunkline.errors import ConfigError
from trunkline.redaction import redact
from trunkline.tracing.context import active_context

LogFormat = Literal["auto", "console", "json"]
_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
_FORMATS = ("auto", "console", "json")


def _add_trace_ids(_logger: Any, _method: str, event: dict[str, Any]) -> dict[str, Any]:
    """Add the ids of the trace context open where the line was logged."""
    context = active_context()
    if context is not None:
        event.setdefault("trace_id", context.trace_id)
        if context.span_id:
            event.setdefault("span_id", context.span_id)
        if context.run_id:
            event.setdefault("run_id", context.run_id)
        if context.session_id:
            event.setdefault("session_id", context.session_id)
    return event


def _redact_event(_logger: Any, _method: str, event: dict[str, Any]) -> dict[str, Any]:
    """Remove secrets from the message and every string value of a log line."""
    for key, value in event.items():
        if isinstance(value, str):
            event[key] = redact(value)
    return event


def configure_logging(
    level: str | None = None,
    log_format: LogFormat | str | None = None,
    stream: TextIO | None = None,
) -> None:
    """Send the ``trunkline`` loggers to `stream` (standard error by default).

    Args:
        level: DEBUG, INFO, WARNING or ERROR; by default ``TRUNKLINE_LOG_LEVEL``,
            else WARNING.
        log_format: ``json``, ``console`` or ``auto``, which picks console on a
            terminal and JSON otherwise; by default ``TRUNKLINE_LOG_FORMAT``,
            else ``auto``.
        stream: where lines go.

    Raises:
        ConfigError: the level or format is not one of the above.
    """
    level = (level or os.environ.get("TRUNKLINE_LOG_LEVEL") or "WARNING").upper()
    log_format = (log_format or os.environ.get("TRUNKLINE_LOG_FORMAT") or "auto").lower()
    if level not in _LEVELS:
        raise ConfigError(
            f"log level {level!r} is not one of {', '.join(_LEVELS)}; "
            "set TRUNKLINE_LOG_LEVEL to one of them"
        )
    if log_format not in _FORMATS:
        raise ConfigError(
            f"log format {log_format!r} is not one of {', '.join(_FORMATS)}; "
            "set TRUNKLINE_LOG_FORMAT to one of them"
        )
    stream = stream or sys.stderr
    terminal = hasattr(stream, "isatty") and stream.isatty()
    use_json = log_format == "json" or (log_format == "auto" and not terminal)
    shared: list[Any] = [
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _add_trace_ids,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=terminal)
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            _redact_event,
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger("trunkline")
    root.handlers = [handler]
    root.setLevel(level)
    # The lines are rendered here; passing them on would print them twice
    # where the application has a root handler of its own.
    root.propagate = False
