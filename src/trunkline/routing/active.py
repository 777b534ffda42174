"""The router of the agent run in progress, for tools that make model calls of their own."""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from trunkline.routing.router import Router

#: Set by `Agent.run` for the run's tools, so that a tool's calls share the
#: agent's rate limits, budgets and trace.
active_router: ContextVar[Router | None] = ContextVar("active_router", default=None)
