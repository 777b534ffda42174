"""`trunkline trace` rendering: span labels and the --max-nodes cut."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

from rich.console import Console

from trunkline.cli.trace import _first_spans, _label
from trunkline.store.traces import TraceNode
from trunkline.types import CallRecord, FallbackHop, Message
from trunkline.types.calls import Downgrade

STARTED = datetime(2026, 12, 1, 12, tzinfo=UTC)


def make_node(span_id: str, *children: TraceNode, call: CallRecord | None = None) -> TraceNode:
    return TraceNode(
        span_id=span_id,
        name=f"span {span_id}",
        kind="call" if call else "step",
        started_at=STARTED,
        ended_at=STARTED + timedelta(milliseconds=5),
        status="ok",
        error=None,
        attributes={},
        call=call,
        children=list(children),
    )


def make_call() -> CallRecord:
    return CallRecord(
        call_id="c" * 32,
        trace_id="a" * 32,
        span_id="b" * 16,
        route="main",
        deployment="cheap",
        model_requested="m1",
        messages=[Message.user("question")],
        started_at=STARTED,
        ended_at=STARTED + timedelta(milliseconds=5),
        latency_ms=5.0,
        outcome="ok",
        fallbacks=[FallbackHop(deployment="broken", reason="auth")],
        downgrades=[
            Downgrade(from_deployment="large", to_deployment="cheap", reason="budget", detail="x")
        ],
    )


def render(markup: str) -> str:
    output = io.StringIO()
    Console(file=output, width=300, color_system=None).print(markup)
    return output.getvalue()


def test_label_shows_fallbacks_and_downgrades() -> None:
    text = render(_label(make_node("1", call=make_call())))
    assert "fallbacks [broken: auth]" in text
    assert "downgrades [large->cheap (budget)]" in text


def span_ids(nodes: list[TraceNode]) -> list[str]:
    ids: list[str] = []
    for node in nodes:
        ids.append(node.span_id)
        ids.extend(span_ids(node.children))
    return ids


def test_first_spans_cuts_depth_first() -> None:
    roots = [make_node("1", make_node("2", make_node("3")), make_node("4")), make_node("5")]
    first, omitted = _first_spans(roots, 3)
    assert span_ids(first) == ["1", "2", "3"]
    assert omitted == 2
    assert span_ids(roots) == ["1", "2", "3", "4", "5"]


def test_first_spans_keeps_small_tree() -> None:
    roots = [make_node("1", make_node("2")), make_node("3")]
    first, omitted = _first_spans(roots, 10)
    assert span_ids(first) == ["1", "2", "3"]
    assert omitted == 0
