"""Reading a trace back as a tree of spans, with each model call's figures attached."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import select

from trunkline.errors import StoreError
from trunkline.store.database import Store, as_utc
from trunkline.store.tables import calls, runs, spans
from trunkline.types.calls import CallRecord


@dataclass
class TraceNode:
    """One span of a trace, its model call if it is one, and its children in start order."""

    span_id: str
    name: str
    kind: str
    started_at: datetime
    ended_at: datetime
    status: str
    error: str | None
    attributes: dict[str, Any]
    call: CallRecord | None = None
    children: list[TraceNode] = field(default_factory=list)

    @property
    def duration_ms(self) -> float:
        return (self.ended_at - self.started_at).total_seconds() * 1000.0

    @property
    def outcome(self) -> str:
        """The ``outcome`` attribute that tool spans carry, else ok or error from the status."""
        recorded = self.attributes.get("outcome")
        if recorded:
            return str(recorded)
        return "ok" if self.status == "ok" else "error"


@dataclass(frozen=True)
class TraceReference:
    """The trace that a trace, run or call id names, and which kind of id matched."""

    kind: Literal["trace", "run", "call"]
    trace_id: str
    #: The batch run the trace belongs to, or None for calls made outside a run.
    run_id: str | None = None
    #: The full call id, when `kind` is ``call``.
    call_id: str | None = None
    #: The call's span id, when `kind` is ``call``.
    span_id: str | None = None


def resolve_reference(store: Store, reference: str) -> TraceReference:
    """Find the trace that `reference` names: a trace id, a run id, or a call id or prefix.

    Ids are tried in that order. A run id names the trace of the run's latest
    ``run`` span.

    Raises:
        StoreError: nothing matches, or a prefix matches several calls.
    """
    if not reference:
        raise StoreError("a trace, run or call id is required; list them with `trunkline calls`")
    with store.engine.connect() as connection:
        found = connection.execute(
            select(spans.c.trace_id, spans.c.run_id).where(spans.c.trace_id == reference).limit(1)
        ).first()
        if found is not None:
            return TraceReference(kind="trace", trace_id=found.trace_id, run_id=found.run_id)
        run = connection.execute(select(runs.c.run_id).where(runs.c.run_id == reference)).first()
        if run is not None:
            found = connection.execute(
                select(spans.c.trace_id)
                .where(spans.c.run_id == reference, spans.c.kind == "run")
                .order_by(spans.c.started_at.desc())
                .limit(1)
            ).first()
            if found is not None:
                return TraceReference(kind="run", trace_id=found.trace_id, run_id=run.run_id)
        matches = connection.execute(
            select(calls.c.trace_id, calls.c.call_id, calls.c.span_id, calls.c.run_id)
            .where(calls.c.call_id.startswith(reference, autoescape=True))
            .limit(3)
        ).all()
    if len(matches) == 1:
        [match] = matches
        return TraceReference(
            kind="call",
            trace_id=match.trace_id,
            run_id=match.run_id,
            call_id=match.call_id,
            span_id=match.span_id,
        )
    if len(matches) > 1:
        raise StoreError(
            f"call id prefix {reference!r} matches several calls; give more characters"
        )
    raise StoreError(
        f"no trace, run or call with id {reference!r} in {store.safe_url()}; "
        "list ids with `trunkline runs` or `trunkline calls`"
    )


def load_trace(store: Store, trace_id: str) -> list[TraceNode]:
    """Return the root spans of `trace_id` with their subtrees; calls hang under their spans."""
    with store.engine.connect() as connection:
        span_rows = connection.execute(
            select(spans).where(spans.c.trace_id == trace_id).order_by(spans.c.started_at)
        ).mappings().all()
        call_rows = connection.execute(
            select(calls.c.span_id, calls.c.record).where(calls.c.trace_id == trace_id)
        ).all()
    records = {row.span_id: CallRecord.model_validate_json(row.record) for row in call_rows}
    nodes = {
        row["span_id"]: TraceNode(
            span_id=row["span_id"],
            name=row["name"],
            kind=row["kind"],
            started_at=as_utc(row["started_at"]),
            ended_at=as_utc(row["ended_at"]),
            status=row["status"],
            error=row["error"],
            attributes=dict(row["attributes"] or {}),
            call=records.get(row["span_id"]),
        )
        for row in span_rows
    }
    # A span opened inside an attempt (a local model's generation) has the
    # attempt as parent. Attempts are kept in their call's record, so such a
    # span is attached to the call.
    attempt_calls = {
        attempt.span_id: span_id
        for span_id, record in records.items()
        for attempt in record.attempts
        if attempt.span_id
    }
    roots: list[TraceNode] = []
    for row in span_rows:
        node = nodes[row["span_id"]]
        parent_id = row["parent_span_id"]
        parent = nodes.get(attempt_calls.get(parent_id, parent_id)) if parent_id else None
        if parent is None:
            roots.append(node)
        else:
            parent.children.append(node)
    return roots


def load_subtree(store: Store, trace_id: str, span_id: str) -> TraceNode:
    """Load span `span_id` of `trace_id` with its subtree, built as `load_trace` builds it.

    Raises:
        StoreError: the trace has no span with that id.
    """
    pending = load_trace(store, trace_id)
    while pending:
        node = pending.pop()
        if node.span_id == span_id:
            return node
        pending.extend(node.children)
    raise StoreError(
        f"span {span_id} is not in trace {trace_id} in {store.safe_url()}, so it was pruned "
        "or never written; `trunkline show` prints a call's record without its spans"
    )
