"""Agents: a model that calls tools in a loop, within bounds, with every step traced."""

from trunkline.agents.agent import Agent
from trunkline.agents.events import (
    AgentEvent,
    AgentFinished,
    StepStarted,
    TextDelta,
    ToolCallFinished,
    ToolCallsRequested,
)
from trunkline.agents.results import AgentResult, AgentSummary, StopReason, ToolCallResult

__all__ = [
    "Agent",
    "AgentEvent",
    "AgentFinished",
    "AgentResult",
    "AgentSummary",
    "StepStarted",
    "StopReason",
    "TextDelta",
    "ToolCallFinished",
    "ToolCallResult",
    "ToolCallsRequested",
]
