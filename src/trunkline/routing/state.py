"""The state of one call in flight, and the record built from it at the end."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from trunkline.config import Route
from trunkline.errors import (
    AllDeploymentsFailed,
    CallError,
    ErrorKind,
    OutputInvalid,
    TrunklineError,
)
from trunkline.redaction import redact, redact_value
from trunkline.routing.output import OutputSpec
from trunkline.tracing import LiveSpan, TraceContext, export_call
from trunkline.types.calls import (
    Attempt,
    CallRecord,
    Downgrade,
    FallbackHop,
    ModelRequest,
    ModelResponse,
    Validation,
)
from trunkline.types.messages import ToolCall
from trunkline.types.usage import Cost, Usage


@dataclass
class CallResult:
    """A finished call: the output and the record that describes it.

    `output` is the validated object when an output schema was given (a
    model instance for a Pydantic class, decoded JSON for a JSON Schema) and
    the text otherwise.
    """

    output: Any
    record: CallRecord
    #: The tool calls as the model sent them, for the caller to run; the
    #: record's copies have secrets redacted from their arguments.
    tool_calls: tuple[ToolCall, ...] = ()

    @property
    def text(self) -> str:
        return self.record.output_text or ""


_NO_USAGE = Usage()
_NO_COST = Cost(total_usd=0.0, input_usd=0.0, output_usd=0.0)


@dataclass
class CallState:
    """One call's request, policy and deadline, and what it has gathered so far."""

    route_name: str
    policy: Route
    template: ModelRequest
    spec: OutputSpec | None
    #: Seconds on the event loop's clock by which the call must end, or None.
    deadline: float | None
    #: Budget scope name to its limit in USD, for every budget this call falls under.
    budgets: dict[str, float]
    task: str
    #: The trace context the call was made in; its span is a child of it.
    context: TraceContext
    #: True for `Router.stream`: attempts open a stream instead of awaiting a response.
    streaming: bool = False
    #: The prompt version (``name@version``) the call renders, when the caller gives it.
    prompt: str | None = None
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    clock: float = field(default_factory=time.perf_counter)
    attempts: list[Attempt] = field(default_factory=list)
    fallbacks: list[FallbackHop] = field(default_factory=list)
    downgrades: list[Downgrade] = field(default_factory=list)
    usage: Usage = _NO_USAGE
    cost: Cost = _NO_COST
    validation: Validation | None = None
    deployment: str | None = None
    provider: str | None = None
    model: str | None = None
    time_to_first_token_ms: float | None = None

    def add_usage(self, usage: Usage) -> None:
        self.usage = usage if self.usage is _NO_USAGE else self.usage + usage

    def add_cost(self, cost: Cost) -> None:
        if self.cost is _NO_COST:
            self.cost = cost
            return
        if self.cost.price_missing or cost.price_missing:
            self.cost = Cost(price_missing=True, source=cost.source)
            return
        self.cost = Cost(
            input_usd=(self.cost.input_usd or 0.0) + (cost.input_usd or 0.0),
            output_usd=(self.cost.output_usd or 0.0) + (cost.output_usd or 0.0),
            total_usd=(self.cost.total_usd or 0.0) + (cost.total_usd or 0.0),
            source=cost.source,
        )


def build_record(
    base: dict[str, Any],
    state: CallState,
    response: ModelResponse | None,
    parsed: Any,
    error: BaseException | None,
    partial_text: str | None = None,
) -> CallRecord:
    """Build the call's record; `partial_text` keeps what a broken stream had sent."""
    fields: dict[str, Any] = {
        **base,
        "provider": state.provider,
        "deployment": state.deployment,
        "model_requested": state.model or base["model_requested"],
        "usage": state.usage,
        "cost": state.cost,
        "started_at": state.started_at,
        "ended_at": datetime.now(UTC),
        "latency_ms": (time.perf_counter() - state.clock) * 1000.0,
        "time_to_first_token_ms": state.time_to_first_token_ms,
        "attempts": state.attempts,
        "fallbacks": state.fallbacks,
        "downgrades": state.downgrades,
        "validation": state.validation,
    }
    if response is not None and error is None:
        fields.update(
            model_served=response.model,
            model_version=response.model_version,
            response_id=response.response_id,
            output_text=response.text,
            output_parsed=parsed.model_dump(mode="json") if isinstance(parsed, BaseModel) else parsed,
            finish_reason=response.finish_reason,
            tool_calls=list(response.tool_calls),
            outcome="ok",
        )
    else:
        if isinstance(error, CallError):
            kind = error.kind
        elif isinstance(error, TrunklineError):
            kind = ErrorKind.CONFIGURATION
        else:
            kind = ErrorKind.CANCELLED
        text = partial_text
        if isinstance(error, OutputInvalid):
            text = error.text
        elif isinstance(error, AllDeploymentsFailed):
            # Keep the last unusable output when a deployment's repairs ran out.
            invalid = [cause for cause in error.causes if isinstance(cause, OutputInvalid)]
            text = invalid[-1].text if invalid else partial_text
        fields.update(
            outcome="error",
            error_kind=kind,
            error_message=redact(str(error)) or type(error).__name__,
            output_text=text,
            finish_reason="error",
        )
    return CallRecord(**fields)


def without_secrets(record: CallRecord) -> CallRecord:
    """Return `record` with secrets redacted from its messages and output; unchanged parts are shared.

    Every exporter, the store included, receives the record after this one
    pass; the caller's output (`CallResult.output`) is left as the model gave it.
    """
    messages = []
    for message in record.messages:
        text = redact(message.content)
        update: dict[str, Any] = {} if text == message.content else {"content": text}
        if message.tool_calls:
            calls = _redacted_calls(message.tool_calls)
            if calls is not None:
                update["tool_calls"] = calls
        messages.append(message.model_copy(update=update) if update else message)
    changes: dict[str, Any] = {}
    if any(new is not old for new, old in zip(messages, record.messages, strict=True)):
        changes["messages"] = messages
    if record.tool_calls:
        calls = _redacted_calls(record.tool_calls)
        if calls is not None:
            changes["tool_calls"] = list(calls)
    if record.output_text:
        text = redact(record.output_text)
        if text != record.output_text:
            changes["output_text"] = text
            changes["output_parsed"] = redact_value(record.output_parsed)
    return record.model_copy(update=changes) if changes else record


def _redacted_calls(calls: Sequence[ToolCall]) -> tuple[ToolCall, ...] | None:
    """Return `calls` with secrets redacted from their arguments, or None when none had any."""
    redacted = tuple(
        call.model_copy(update={"arguments": redact(call.arguments)}) for call in calls
    )
    if all(new.arguments == old.arguments for new, old in zip(redacted, calls, strict=True)):
        return None
    return redacted


def finish_call(
    base: dict[str, Any],
    state: CallState,
    live: LiveSpan,
    response: ModelResponse | None,
    parsed: Any,
    error: BaseException | None,
    partial_text: str | None = None,
) -> CallRecord:
    """Build the call's record, end its span and export both; a failure's error carries the record."""
    record = without_secrets(build_record(base, state, response, parsed, error, partial_text))
    # Named as the GenAI conventions name it, once the deployment is known.
    live.name = f"chat {record.model_requested}"
    live.attributes.update(span_attributes(record))
    if error is not None:
        live.fail(error)
    live.end()
    export_call(record)
    if isinstance(error, TrunklineError):
        error.record = record  # type: ignore[attr-defined]
    return record


def span_attributes(record: CallRecord) -> dict[str, Any]:
    return {
        "call_id": record.call_id,
        "provider": record.provider,
        "model": record.model_served or record.model_requested,
        "input_tokens": record.usage.input_tokens,
        "output_tokens": record.usage.output_tokens,
        "cost_usd": record.cost.total_usd,
        "attempts": len(record.attempts),
        "outcome": record.outcome,
    }
