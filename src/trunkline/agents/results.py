"""What an agent's run returns: the answer, the conversation, every call and a summary."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

from trunkline.errors import ToolErrorKind
from trunkline.types.calls import CallRecord
from trunkline.types.messages import Message

#: The reason the loop ended. ``answered``: the model replied without tool calls.
#: The others name the bound that stopped it, or ``call_failed`` when a model
#: call failed after the router's retries and fallbacks.
StopReason = Literal[
    "answered",
    "max_steps",
    "max_tool_calls",
    "max_tool_errors",
    "deadline",
    "budget",
    "call_failed",
    "invalid_output",
]

ToolOutcome = Literal["ok", "error"]


@dataclass(frozen=True)
class ToolCallResult:
    """One tool call the agent ran, as its span records it."""

    call_id: str
    #: The name the model asked for, which may be no tool's name.
    tool: str
    #: The arguments as the model sent them, JSON text that may be invalid.
    arguments: str
    #: The text returned to the model: the result, or the error message.
    content: str
    outcome: ToolOutcome
    error_kind: ToolErrorKind | None
    duration_ms: float
    #: The step, counted from 1, whose model call asked for this tool call.
    step: int


@dataclass
class AgentSummary:
    """Counts, tokens and cost of one agent run.

    Tokens and cost add up every model call of the run, failed ones
    included. `cost_usd` is None when a call's price was not known.
    """

    stop_reason: StopReason
    steps: int = 0
    model_calls: int = 0
    #: ``(tool name, outcome)`` to the number of calls.
    tool_calls: Counter[tuple[str, ToolOutcome]] = field(default_factory=Counter)
    #: Error kind to the number of failed tool calls.
    tool_errors: Counter[ToolErrorKind] = field(default_factory=Counter)
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = 0.0
    duration_ms: float = 0.0

    @property
    def tool_call_count(self) -> int:
        return sum(self.tool_calls.values())

    def add_call(self, record: CallRecord) -> None:
        """Add one model call's tokens and cost."""
        self.model_calls += 1
        self.input_tokens += record.usage.input_tokens
        self.output_tokens += record.usage.output_tokens
        if record.cost.price_missing or record.cost.total_usd is None or self.cost_usd is None:
            self.cost_usd = None
        else:
            self.cost_usd += record.cost.total_usd

    def add_tool_call(self, result: ToolCallResult) -> None:
        self.tool_calls[(result.tool, result.outcome)] += 1
        if result.error_kind is not None:
            self.tool_errors[result.error_kind] += 1

    def by_tool(self) -> dict[str, dict[str, int]]:
        """Return ``{tool: {outcome: count}}``, for reports and span attributes."""
        table: dict[str, dict[str, int]] = {}
        for (name, outcome), count in sorted(self.tool_calls.items()):
            table.setdefault(name, {})[outcome] = count
        return table


@dataclass
class AgentResult:
    """The end of an agent run.

    `output` is the model's last text, which is the answer when
    ``summary.stop_reason`` is ``answered`` and may be empty otherwise.
    """

    output: str
    #: The whole conversation: the input, each assistant turn and each tool message.
    messages: list[Message]
    #: The record of every model call, in order.
    calls: list[CallRecord]
    tool_results: list[ToolCallResult]
    summary: AgentSummary
    #: The answer validated against the agent's output schema: a model
    #: instance or the decoded JSON; None without a schema.
    parsed: Any = None
    #: The failed call's error message when the stop reason is ``call_failed`` or ``budget``.
    error: str | None = None

    @property
    def answered(self) -> bool:
        return self.summary.stop_reason == "answered"
