"""Trace context carried in `contextvars`, so that it follows asyncio tasks.

A task created inside a span copies the context at creation, so spans opened
by concurrent rows of one run each keep their own parent. Code that hands
work to a thread must copy the context itself (`contextvars.copy_context`);
`asyncio.to_thread` already does.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from trunkline.errors import ConfigError
from trunkline.ids import random_hex
from trunkline.redaction import redact
from trunkline.tracing.exporters import export_span
from trunkline.types.spans import SpanKind, SpanRecord


def new_trace_id() -> str:
    """Return a random 128-bit trace id as 32 hex digits, as OpenTelemetry uses."""
    return random_hex(128)


def new_span_id() -> str:
    """Return a random 64-bit span id as 16 hex digits."""
    return random_hex(64)


@dataclass(frozen=True)
class TraceContext:
    """Ids that every span and call record opened inside it inherits."""

    trace_id: str
    span_id: str | None = None
    run_id: str | None = None
    session_id: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    #: Spending limits in USD of the open run and session; they win over
    #: the configuration's ``[budgets]`` for calls made inside them.
    run_budget_usd: float | None = None
    session_budget_usd: float | None = None

    def with_span(self, span_id: str) -> TraceContext:
        """Return this context with `span_id` as its current span.

        The same as ``dataclasses.replace(self, span_id=span_id)`` at under
        half its cost, because every model call makes three of these. It
        lists every field, so a field added to the class is added here too.
        """
        return TraceContext(
            self.trace_id,
            span_id,
            self.run_id,
            self.session_id,
            self.tags,
            self.run_budget_usd,
            self.session_budget_usd,
        )


_context: ContextVar[TraceContext | None] = ContextVar("trunkline_trace_context", default=None)


def active_context() -> TraceContext | None:
    """Return the open trace context, or None outside any."""
    return _context.get()


def current_context() -> TraceContext:
    """Return the active context, or a fresh trace when none is open."""
    context = _context.get()
    if context is None:
        return TraceContext(trace_id=new_trace_id())
    return context


@dataclass
class LiveSpan:
    """A span that is still open; set `attributes` or `status` before it ends."""

    name: str
    kind: SpanKind
    context: TraceContext
    parent_span_id: str | None
    started_at: datetime
    attributes: dict[str, Any] = field(default_factory=dict)
    status: str = "ok"
    error: str | None = None

    @property
    def span_id(self) -> str:
        return self.context.span_id or ""

    def fail(self, error: BaseException | str) -> None:
        self.status = "error"
        text = str(error) if isinstance(error, str) else f"{type(error).__name__}: {error}"
        self.error = redact(text)

    def end(self) -> None:
        """Export the span; for spans opened with `open_span`."""
        export_span(self.finish())

    def finish(self) -> SpanRecord:
        return SpanRecord(
            span_id=self.span_id,
            trace_id=self.context.trace_id,
            parent_span_id=self.parent_span_id,
            run_id=self.context.run_id,
            session_id=self.context.session_id,
            name=self.name,
            kind=self.kind,
            started_at=self.started_at,
            ended_at=datetime.now(UTC),
            status="error" if self.status == "error" else "ok",
            error=self.error,
            attributes=self.attributes,
        )


def open_span(
    name: str, kind: SpanKind, parent: TraceContext | None = None, **attributes: Any
) -> LiveSpan:
    """Start a child span of `parent` (by default the current context) without making it current.

    For leaf spans such as a model call, inside which nothing opens spans
    of its own; the caller ends it with `LiveSpan.end`.
    """
    parent = parent or current_context()
    return LiveSpan(
        name=name,
        kind=kind,
        context=parent.with_span(new_span_id()),
        parent_span_id=parent.span_id,
        started_at=datetime.now(UTC),
        attributes=attributes,
    )


@contextmanager
def span(
    name: str, kind: SpanKind, *, parent: TraceContext | None = None, **attributes: Any
) -> Iterator[LiveSpan]:
    """Open a child span of `parent` (by default the current context) and export it when the block ends.

    An exception leaving the block marks the span as failed and propagates.
    Work handed to a thread passes the context it had on the event loop as
    `parent`, since threads do not inherit it.
    """
    parent = parent or current_context()
    context = parent.with_span(new_span_id())
    live = LiveSpan(
        name=name,
        kind=kind,
        context=context,
        parent_span_id=parent.span_id,
        started_at=datetime.now(UTC),
        attributes=dict(attributes),
    )
    token = _context.set(context)
    try:
        yield live
    except BaseException as error:
        live.fail(error)
        raise
    finally:
        _context.reset(token)
        export_span(live.finish())


class inside_span:  # noqa: N801 - used like the function-style context managers beside it
    """Make `span_id`, a child of `parent`, the current span inside the block.

    For spans exported later from a record rather than by `span`, such as a
    model call's attempts: spans opened inside the block become their children.
    A class rather than a generator-based context manager: a model call
    enters two of these, and the class costs about 1 us less each (Python 3.11).
    """

    __slots__ = ("_context", "_token")

    def __init__(self, span_id: str, parent: TraceContext) -> None:
        self._context = parent.with_span(span_id)
        self._token: Token[TraceContext | None] | None = None

    def __enter__(self) -> TraceContext:
        self._token = _context.set(self._context)
        return self._context

    def __exit__(self, *exc_info: object) -> None:
        assert self._token is not None
        _context.reset(self._token)


@contextmanager
def start_run(
    name: str,
    *,
    run_id: str,
    session_id: str | None = None,
    tags: dict[str, str] | None = None,
    budget_usd: float | None = None,
    **attributes: Any,
) -> Iterator[LiveSpan]:
    """Open a run's span; every span and call inside it carries `run_id`.

    The run starts a new trace, unless it is opened inside another span (a
    run of an experiment inside an improvement loop, say): then it is a child
    of that span, so that the whole loop reads as one trace. `budget_usd`
    caps what the run's model calls may spend together.
    """
    _check_budget(budget_usd)
    outer = _context.get()
    nested = outer is not None and outer.span_id is not None
    context = TraceContext(
        trace_id=outer.trace_id if nested else new_trace_id(),
        span_id=outer.span_id if nested else None,
        run_id=run_id,
        session_id=session_id or (outer.session_id if outer else None),
        tags={**(outer.tags if outer else {}), **(tags or {})},
        run_budget_usd=budget_usd,
        session_budget_usd=outer.session_budget_usd if outer else None,
    )
    token = _context.set(context)
    try:
        with span(name, "run", **attributes) as live:
            yield live
    finally:
        _context.reset(token)


@contextmanager
def join_run(
    *, trace_id: str, span_id: str, run_id: str, budget_usd: float | None = None
) -> Iterator[TraceContext]:
    """Continue, in another process, a run that `start_run` opened.

    Spans opened inside become children of the run's span `span_id` in its
    trace, and calls carry `run_id` and fall under the run's budget, as they
    would in the process that started the run.
    """
    _check_budget(budget_usd)
    context = TraceContext(trace_id=trace_id, span_id=span_id, run_id=run_id, run_budget_usd=budget_usd)
    token = _context.set(context)
    try:
        yield context
    finally:
        _context.reset(token)


@contextmanager
def session(
    session_id: str, *, budget_usd: float | None = None, **tags: str
) -> Iterator[TraceContext]:
    """Group the calls made inside the block under `session_id` and `tags`.

    `budget_usd` caps what the session's model calls may spend together.
    """
    _check_budget(budget_usd)
    outer = _context.get()
    base = outer or TraceContext(trace_id=new_trace_id())
    context = replace(
        base,
        session_id=session_id,
        tags={**base.tags, **tags},
        session_budget_usd=budget_usd if budget_usd is not None else base.session_budget_usd,
    )
    token = _context.set(context)
    try:
        yield context
    finally:
        _context.reset(token)


def _check_budget(budget_usd: float | None) -> None:
    if budget_usd is not None and not (math.isfinite(budget_usd) and budget_usd > 0):
        raise ConfigError(
            f"budget_usd must be a finite amount above 0 USD, got {budget_usd!r}; "
            "leave it unset for no budget"
        )
