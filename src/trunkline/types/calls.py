"""Requests, responses, attempts and the call record.

`CallRecord` is the contract that the store, the reports and the exporters
read. Bump `SCHEMA_VERSION` whenever a field changes meaning or is removed;
adding an optional field does not need a bump.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from trunkline.errors import ErrorKind
from trunkline.types.messages import Message, ToolCall, ToolDefinition
from trunkline.types.usage import Cost, Usage

SCHEMA_VERSION = 1

FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "error"]

#: Whether and which tool the model must call: ``auto`` lets it choose,
#: ``none`` forbids tool calls, ``required`` demands at least one, and any
#: other value is the name of the one tool it must call.
ToolChoice = str


class ModelRequest(BaseModel):
    """The request one attempt sends to one provider."""

    model_config = ConfigDict(frozen=True)

    model: str
    messages: tuple[Message, ...]
    temperature: float | None = None
    max_tokens: int | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    #: JSON Schema that the output must match, or None for free text.
    output_schema: dict[str, Any] | None = None
    #: The tools the model may call; their results come back as ``tool`` messages.
    tools: tuple[ToolDefinition, ...] = ()
    #: None leaves the choice to the provider's default, which is ``auto`` when tools are sent.
    tool_choice: ToolChoice | None = None
    #: False allows at most one tool call in the reply; None leaves the provider's default.
    parallel_tool_calls: bool | None = None
    #: Provider-specific parameters passed through unchanged.
    extra: dict[str, Any] = Field(default_factory=dict)

    def parameters(self) -> dict[str, Any]:
        """Return the sampling parameters that were set, for the record."""
        values = {
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "top_p": self.top_p,
            "stop": list(self.stop) or None,
            "seed": self.seed,
        }
        return {key: value for key, value in values.items() if value is not None}


class ModelResponse(BaseModel):
    """The response of one successful attempt."""

    model_config = ConfigDict(frozen=True)

    text: str
    #: The model that served the request, as the provider named it.
    model: str
    finish_reason: FinishReason = "stop"
    usage: Usage = Usage()
    response_id: str | None = None
    #: A version or fingerprint the provider reported, such as ``system_fingerprint``.
    model_version: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()


class Attempt(BaseModel):
    """One try at one deployment."""

    #: Counts from 1 across the whole call, fallbacks included.
    attempt_number: int
    deployment: str
    provider: str
    model: str
    outcome: Literal["ok", "error"]
    error_kind: ErrorKind | None = None
    error_message: str | None = None
    status_code: int | None = None
    started_at: datetime
    latency_ms: float
    #: Seconds waited after this attempt before the next one, or None.
    wait_s: float | None = None
    #: Why that wait was chosen (``backoff``, ``retry-after``), or why no
    #: further attempt was made at this deployment.
    wait_reason: str | None = None
    #: Milliseconds spent waiting for the deployment's rate limits before sending.
    queued_ms: float = 0.0
    #: The attempt's span id, current while the provider works on it, so that
    #: spans a provider opens (on a worker thread too) are its children.
    span_id: str | None = None


class FallbackHop(BaseModel):
    """A deployment the call left or skipped, and why.

    `reason` is the error kind that made the call leave it, or one of
    ``circuit_open``, ``context_window``, ``content_filter_not_allowed``,
    ``rate_limited`` and ``budget_exceeded`` for a deployment skipped before
    any attempt; `detail` explains it in words.
    """

    deployment: str
    reason: ErrorKind | str
    detail: str | None = None


class Downgrade(BaseModel):
    """A call moved from the route's preferred deployment to a cheaper one it allows."""

    from_deployment: str
    to_deployment: str
    #: ``budget``, ``rate_limit`` or ``scores``.
    reason: Literal["budget", "rate_limit", "scores"]
    detail: str


class Validation(BaseModel):
    """The check of the output against the requested schema."""

    output_schema: dict[str, Any]
    repairs: int = 0
    valid: bool = False
    error: str | None = None


class CallRecord(BaseModel):
    """Everything about one model call: what was asked, what came back, what it cost."""

    schema_version: int = SCHEMA_VERSION
    call_id: str
    trace_id: str
    span_id: str
    parent_span_id: str | None = None
    run_id: str | None = None
    session_id: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)

    route: str
    provider: str | None = None
    deployment: str | None = None
    model_requested: str
    prompt_name: str | None = None
    prompt_version: str | None = None
    messages: list[Message]
    parameters: dict[str, Any] = Field(default_factory=dict)
    #: The tool definitions sent with the request.
    tools: list[ToolDefinition] = Field(default_factory=list)
    tool_choice: ToolChoice | None = None

    model_served: str | None = None
    model_version: str | None = None
    response_id: str | None = None
    output_text: str | None = None
    output_parsed: Any = None
    finish_reason: FinishReason | None = None
    tool_calls: list[ToolCall] = Field(default_factory=list)

    usage: Usage = Usage()
    cost: Cost = Cost.missing()

    started_at: datetime
    ended_at: datetime
    latency_ms: float
    time_to_first_token_ms: float | None = None

    attempts: list[Attempt] = Field(default_factory=list)
    fallbacks: list[FallbackHop] = Field(default_factory=list)
    downgrades: list[Downgrade] = Field(default_factory=list)
    validation: Validation | None = None

    outcome: Literal["ok", "error"]
    error_kind: ErrorKind | None = None
    error_message: str | None = None

    #: The provider's id of the Batch API job that served the call, or None
    #: for an online call. A batch call's latency is the time from the job's
    #: creation to its end, and its cost is at the batch price.
    batch_id: str | None = None

    @property
    def fallbacks_taken(self) -> int:
        """Moves from one deployment to another; leaving the last one of a failed call leads nowhere."""
        hops = len(self.fallbacks)
        return hops if self.outcome == "ok" else max(hops - 1, 0)

    @property
    def retries(self) -> int:
        """Attempts beyond the first at the same deployment, summed over deployments."""
        return len(self.attempts) - len({attempt.deployment for attempt in self.attempts})
