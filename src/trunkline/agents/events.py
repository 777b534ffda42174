"""The events that `Agent.stream` yields while the loop runs, for interfaces that show the loop live."""

from __future__ import annotations

from dataclasses import dataclass

from trunkline.agents.results import AgentResult, ToolCallResult
from trunkline.types.messages import ToolCall


@dataclass(frozen=True)
class StepStarted:
    """A step began: its model call is about to be sent."""

    step: int


@dataclass(frozen=True)
class TextDelta:
    """A piece of the model's reply text in a step, as the provider streamed it."""

    step: int
    text: str


@dataclass(frozen=True)
class ToolCallsRequested:
    """The step's reply asked for these tool calls; they run next unless a bound stops the loop."""

    step: int
    calls: tuple[ToolCall, ...]


@dataclass(frozen=True)
class ToolCallFinished:
    """One tool call ended, in the order the calls finish, which may differ from the request order."""

    step: int
    result: ToolCallResult


@dataclass(frozen=True)
class AgentFinished:
    """The loop ended; `result` is what `Agent.run` returns."""

    result: AgentResult


AgentEvent = StepStarted | TextDelta | ToolCallsRequested | ToolCallFinished | AgentFinished
