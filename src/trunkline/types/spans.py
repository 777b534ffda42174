"""Finished spans: runs, steps and calls as a tree under one trace."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

#: ``provider`` is work inside a provider during an attempt, such as the
#: local model's generation on its worker thread. ``agent`` is one run of an
#: agent's loop, with a ``step`` span per model call and a ``tool`` span per
#: tool call under it.
SpanKind = Literal["run", "row", "step", "call", "agent", "tool", "provider"]


class SpanRecord(BaseModel):
    """One finished span; `parent_span_id` links it into its trace."""

    span_id: str
    trace_id: str
    parent_span_id: str | None = None
    run_id: str | None = None
    session_id: str | None = None
    name: str
    kind: SpanKind
    started_at: datetime
    ended_at: datetime
    status: Literal["ok", "error"] = "ok"
    error: str | None = None
    attributes: dict[str, Any] = Field(default_factory=dict)
