"""An agent's loop on the trace page: the agent, its steps, and each step's model and tool calls.

The view is read from the spans an `Agent` records (see docs/agents.md,
"Spans and records"): ``invoke_agent`` (kind ``agent``) contains ``agent
step N`` spans (kind ``step``), and each step contains its model call (kind
``call``) and its ``execute_tool`` spans (kind ``tool``).
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from trunkline.redaction import redact
from trunkline.store.traces import TraceNode
from trunkline.types.calls import CallRecord

#: Characters of a tool call's arguments or result shown in the tree before the rest is cut.
PREVIEW_CHARS = 120


@dataclass(frozen=True)
class ToolCallView:
    """One ``execute_tool`` span: the tool, its outcome and what it was sent and returned."""

    span_id: str
    #: The name the model asked for, which may be no tool's name.
    tool: str
    call_id: str | None
    outcome: str
    error_kind: str | None
    duration_ms: float
    #: The arguments as recorded, redacted; None when only their length was recorded.
    arguments: str | None
    result: str | None
    #: The lengths, when the agent kept them in place of the texts (``record_tool_content=False``).
    arguments_chars: int | None
    result_chars: int | None
    #: The span's error message, for a failed call.
    error: str | None

    @property
    def failed(self) -> bool:
        return self.outcome != "ok"

    @property
    def arguments_preview(self) -> str | None:
        return _preview(self.arguments)

    @property
    def result_preview(self) -> str | None:
        return _preview(self.result)


@dataclass
class StepView:
    """One ``agent step`` span with its model call and the tool calls it ran."""

    span_id: str
    number: int | None
    status: str
    error: str | None
    duration_ms: float
    #: Tool calls the step's model reply requested, as the span records it.
    requested_tool_calls: int | None
    #: The step's model calls in order, each its span name and its record, or
    #: None when the store has no record. A step has two when the answer was
    #: asked for again to match the agent's output schema.
    model_calls: list[tuple[str, CallRecord | None]] = field(default_factory=list)
    tools: list[ToolCallView] = field(default_factory=list)
    #: The stop reason, when the loop ended at this step with a stop reason other than ``answered``.
    stopped_by: str | None = None

    @property
    def call(self) -> CallRecord | None:
        """The record of the step's first model call, the one that chose the tools."""
        return self.model_calls[0][1] if self.model_calls else None

    @property
    def not_run(self) -> int:
        """Requested tool calls that did not run, as when a bound stopped the loop first."""
        if self.requested_tool_calls is None:
            return 0
        return max(self.requested_tool_calls - len(self.tools), 0)

    @property
    def failed_tools(self) -> int:
        return sum(tool.failed for tool in self.tools)


@dataclass
class AgentView:
    """One ``invoke_agent`` span: the run's figures from its attributes, and its steps."""

    span_id: str
    name: str
    status: str
    error: str | None
    duration_ms: float
    #: None when the run ended before it recorded its figures, as when it raised.
    stop_reason: str | None
    step_count: int | None
    model_call_count: int | None
    tool_call_count: int | None
    input_tokens: int | None
    output_tokens: int | None
    cost_usd: float | None
    #: Tool name to outcome to count, as the span's ``tool_calls_by_tool`` records it.
    tool_calls_by_tool: dict[str, dict[str, int]]
    steps: list[StepView] = field(default_factory=list)

    @property
    def answered(self) -> bool:
        return self.stop_reason == "answered"


def find_agents(nodes: list[TraceNode], shown_span_ids: Collection[str]) -> list[AgentView]:
    """Build a view of every agent span among `nodes`, in the order the spans started.

    Only spans whose ids are in `shown_span_ids` are included, so the view matches the
    spans the page lays out when a trace is cut at its span limit.
    """
    return [
        _agent_view(node, shown_span_ids)
        for node in nodes
        if node.kind == "agent" and node.span_id in shown_span_ids
    ]


def _agent_view(node: TraceNode, shown_span_ids: Collection[str]) -> AgentView:
    attributes = node.attributes
    agent = AgentView(
        span_id=node.span_id,
        name=str(attributes.get("gen_ai.agent.name") or node.name.removeprefix("invoke_agent ")),
        status=node.status,
        error=node.error,
        duration_ms=node.duration_ms,
        stop_reason=attributes.get("stop_reason"),
        step_count=attributes.get("steps"),
        model_call_count=attributes.get("model_calls"),
        tool_call_count=attributes.get("tool_calls"),
        input_tokens=attributes.get("input_tokens"),
        output_tokens=attributes.get("output_tokens"),
        cost_usd=attributes.get("cost_usd"),
        tool_calls_by_tool=_by_tool(attributes.get("tool_calls_by_tool")),
    )
    agent.steps = [
        _step_view(child, shown_span_ids)
        for child in node.children
        if child.kind == "step" and child.span_id in shown_span_ids
    ]
    # The loop ends at its last step, so a stop reason other than "answered"
    # names the bound or failure that ended it at that step. When the page
    # cuts the trace before that step, no shown step is marked.
    last_steps = [child for child in node.children if child.kind == "step"][-1:]
    stopped = agent.stop_reason not in (None, "answered")
    if stopped and agent.steps and last_steps and agent.steps[-1].span_id == last_steps[0].span_id:
        agent.steps[-1].stopped_by = agent.stop_reason
    return agent


def _step_view(node: TraceNode, shown_span_ids: Collection[str]) -> StepView:
    step = StepView(
        span_id=node.span_id,
        number=node.attributes.get("step"),
        status=node.status,
        error=node.error,
        duration_ms=node.duration_ms,
        requested_tool_calls=node.attributes.get("tool_calls"),
    )
    for child in node.children:
        if child.span_id not in shown_span_ids:
            continue
        if child.kind == "call":
            step.model_calls.append((child.name, child.call))
        elif child.kind == "tool":
            step.tools.append(_tool_view(child))
    return step


def _tool_view(node: TraceNode) -> ToolCallView:
    attributes = node.attributes
    duration_ms = attributes.get("duration_ms")
    return ToolCallView(
        span_id=node.span_id,
        tool=str(attributes.get("gen_ai.tool.name") or node.name.removeprefix("execute_tool ")),
        call_id=attributes.get("gen_ai.tool.call.id"),
        outcome=node.outcome,
        error_kind=attributes.get("error_kind"),
        duration_ms=float(duration_ms) if duration_ms is not None else node.duration_ms,
        arguments=_recorded_text(attributes, "gen_ai.tool.call.arguments"),
        result=_recorded_text(attributes, "gen_ai.tool.call.result"),
        arguments_chars=attributes.get("arguments_chars"),
        result_chars=attributes.get("result_chars"),
        error=node.error,
    )


def _recorded_text(attributes: dict[str, Any], name: str) -> str | None:
    # Redacted again because a span may come from a writer that did not redact.
    text = attributes.get(name)
    return redact(str(text)) if text is not None else None


def _by_tool(value: Any) -> dict[str, dict[str, int]]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return {}
    return value if isinstance(value, dict) else {}


def _preview(text: str | None) -> str | None:
    if text is None or len(text) <= PREVIEW_CHARS:
        return text
    return text[:PREVIEW_CHARS] + "…"
