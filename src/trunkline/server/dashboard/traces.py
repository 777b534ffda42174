"""The traces pages: the filterable call list, and one trace's spans and calls in full."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import select

from trunkline.server.auth import require
from trunkline.server.dashboard.agents import AgentView, find_agents
from trunkline.server.dashboard.calls import (
    CallPage,
    agent_trace_ids,
    list_calls_page,
    page_request,
)
from trunkline.server.dashboard.params import NotFound
from trunkline.server.dashboard.rendering import page_errors, render
from trunkline.store.database import Store
from trunkline.store.keys import ApiKey, Role
from trunkline.store.tables import calls
from trunkline.store.traces import TraceNode, load_trace
from trunkline.types.calls import CallRecord

router = APIRouter(include_in_schema=False)
viewer = require(Role.VIEWER)

#: Spans shown on one trace page; a batch run's trace can hold thousands.
MAX_SPANS = 500


@dataclass(frozen=True)
class SpanBar:
    """One span as a row of the waterfall, placed in percent of the trace's duration."""

    node: TraceNode
    depth: int
    parent_span_id: str | None
    offset_ms: float
    offset_percent: float
    width_percent: float


@dataclass
class TraceView:
    """A trace's spans in depth-first order, up to `MAX_SPANS`, and its calls."""

    trace_id: str
    started_at: datetime
    duration_ms: float
    bars: list[SpanBar]
    calls: list[CallRecord]
    #: Spans left out past the limit.
    omitted: int
    run_ids: list[str]
    #: The agent runs among the shown spans, each as its loop of steps and calls.
    agents: list[AgentView]


def load_trace_view(store: Store, trace_id: str, *, max_spans: int = MAX_SPANS) -> TraceView:
    """Load a trace as `trunkline trace` does and lay its spans out for a waterfall.

    Raises:
        NotFound: the store has no span and no call of this trace.
    """
    roots = load_trace(store, trace_id)
    if not roots:
        roots = _calls_without_spans(store, trace_id)
    if not roots:
        raise NotFound(f"no trace with id {trace_id!r} in the store; it may have been pruned")
    ordered: list[tuple[TraceNode, int, str | None]] = []
    pending: list[tuple[TraceNode, int, str | None]] = [(root, 0, None) for root in reversed(roots)]
    total = 0
    while pending:
        node, depth, parent = pending.pop()
        total += 1
        if len(ordered) < max_spans:
            ordered.append((node, depth, parent))
        pending.extend((child, depth + 1, node.span_id) for child in reversed(node.children))
    nodes = [node for node, _, _ in ordered]
    start = min(node.started_at for node in nodes)
    end = max(node.ended_at for node in nodes)
    duration_ms = max((end - start).total_seconds() * 1000.0, 0.001)
    bars = []
    for node, depth, parent in ordered:
        offset_ms = (node.started_at - start).total_seconds() * 1000.0
        bars.append(
            SpanBar(
                node=node,
                depth=depth,
                parent_span_id=parent,
                offset_ms=offset_ms,
                offset_percent=100.0 * offset_ms / duration_ms,
                width_percent=max(100.0 * node.duration_ms / duration_ms, 0.2),
            )
        )
    records = [node.call for node in nodes if node.call is not None]
    run_ids = sorted({record.run_id for record in records if record.run_id})
    agents = find_agents(nodes, {node.span_id for node in nodes})
    return TraceView(
        trace_id, start, duration_ms, bars, records, total - len(ordered), run_ids, agents
    )


def _calls_without_spans(store: Store, trace_id: str) -> list[TraceNode]:
    """Show a trace's calls as spans of their own when its spans were never stored."""
    query = select(calls.c.record).where(calls.c.trace_id == trace_id).order_by(calls.c.started_at)
    with store.engine.connect() as connection:
        records = [CallRecord.model_validate_json(row.record) for row in connection.execute(query)]
    return [
        TraceNode(
            span_id=record.span_id,
            name=f"chat {record.route}",
            kind="call",
            started_at=record.started_at,
            ended_at=record.ended_at,
            status=record.outcome,
            error=record.error_message,
            attributes={},
            call=record,
        )
        for record in records
    ]


def trace_json(view: TraceView) -> dict[str, Any]:
    """Return the trace as flat spans in depth-first order, each call's record in full.

    ``agents`` contains each agent run's loop as the page's agent section shows
    it. A model call there carries its call id and figures, and its full
    record is in ``spans``.
    """
    return {
        "trace_id": view.trace_id,
        "started_at": view.started_at.isoformat(),
        "duration_ms": view.duration_ms,
        "run_ids": view.run_ids,
        "omitted_spans": view.omitted,
        "spans": [
            {
                "span_id": bar.node.span_id,
                "parent_span_id": bar.parent_span_id,
                "depth": bar.depth,
                "name": bar.node.name,
                "kind": bar.node.kind,
                "status": bar.node.status,
                "error": bar.node.error,
                "started_at": bar.node.started_at.isoformat(),
                "offset_ms": bar.offset_ms,
                "duration_ms": bar.node.duration_ms,
                "attributes": bar.node.attributes,
                "call": bar.node.call.model_dump(mode="json") if bar.node.call else None,
            }
            for bar in view.bars
        ],
        "agents": [_agent_json(agent) for agent in view.agents],
    }


def _agent_json(agent: AgentView) -> dict[str, Any]:
    data = asdict(agent)
    for step, view in zip(data["steps"], agent.steps, strict=True):
        calls = [None if record is None else _call_summary(record) for _, record in view.model_calls]
        step.pop("model_calls")
        step["call"] = calls[0] if calls else None
        step["calls"] = calls
    return data


def _call_summary(call: CallRecord) -> dict[str, Any]:
    return {
        "call_id": call.call_id,
        "model": call.model_served or call.model_requested,
        "outcome": call.outcome,
        "input_tokens": call.usage.input_tokens,
        "output_tokens": call.usage.output_tokens,
        "cost_usd": None if call.cost.price_missing else call.cost.total_usd,
        "tool_calls_requested": len(call.tool_calls),
    }


def _page_links(page: CallPage, query: dict[str, str]) -> dict[str, str | None]:
    base = {**query, "limit": str(page.limit)}
    return {
        "first": "/traces?" + urlencode(base),
        "newer": "/traces?" + urlencode({**base, "after": page.newer}) if page.newer else None,
        "older": "/traces?" + urlencode({**base, "before": page.older}) if page.older else None,
    }


@router.get("/traces", response_class=HTMLResponse)
@page_errors
def traces_page(request: Request, key: ApiKey = Depends(viewer)) -> HTMLResponse:
    """Render calls newest first, filtered by run, session, model, route, outcome, key and time.

    The ``trace=agent`` filter keeps calls whose trace contains an agent
    span, and the page marks such calls.
    """
    filters, limit, before, after = page_request(request.query_params)
    store = request.app.state.store
    page = list_calls_page(store, filters, limit=limit, before=before, after=after)
    return render(
        request,
        "traces.html",
        title="Traces",
        page=page,
        filters=filters,
        links=_page_links(page, filters.query()),
        agent_traces=agent_trace_ids(store, [row["trace_id"] for row in page.rows]),
    )


@router.get("/traces/{trace_id}", response_class=HTMLResponse)
@page_errors
def trace_page(trace_id: str, request: Request, key: ApiKey = Depends(viewer)) -> HTMLResponse:
    """Render one trace: its span waterfall, then each call's attempts, fallbacks and messages."""
    view = load_trace_view(request.app.state.store, trace_id)
    return render(request, "trace.html", title=f"Trace {trace_id[:12]}", view=view)
