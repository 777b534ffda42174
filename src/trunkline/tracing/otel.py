"""Trunkline's spans and call records as OpenTelemetry spans with GenAI attributes.

A model call becomes a ``chat MODEL`` span with the attributes of the
OpenTelemetry GenAI semantic conventions (``gen_ai.*``) and Trunkline's own
under ``trunkline.``; each of its attempts becomes a child span. Runs, rows,
steps and tool calls keep their names. Trace and span ids are Trunkline's, so
a span exported later (`trunkline export otlp`) joins the same trace.
Message contents are never set here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from trunkline.ids import random_hex
from trunkline.types.calls import CallRecord
from trunkline.types.spans import SpanRecord

SCOPE = InstrumentationScope("trunkline")
RESOURCE = Resource.create({"service.name": "trunkline"})

# GenAI names for the providers, as the semantic conventions spell them.
_PROVIDER_NAMES = {
    "openai": "openai",
    "azure": "azure.ai.openai",
    "anthropic": "anthropic",
    "local": "llama_cpp",
    "fake": "trunkline.fake",
}


def _context(trace_id: str, span_id: str) -> SpanContext:
    return SpanContext(
        trace_id=int(trace_id, 16),
        span_id=int(span_id, 16),
        is_remote=False,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
    )


def _nanoseconds(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000_000)


def _status(ok: bool, error: str | None) -> Status:
    return Status(StatusCode.OK) if ok else Status(StatusCode.ERROR, error or "error")


def _plain(attributes: dict[str, Any]) -> dict[str, Any]:
    """Keep values OpenTelemetry accepts; others become strings, None is left out."""
    plain: dict[str, Any] = {}
    for key, value in attributes.items():
        if value is None:
            continue
        if isinstance(value, str | bool | int | float):
            plain[key] = value
        elif isinstance(value, list | tuple) and all(isinstance(item, str) for item in value):
            plain[key] = tuple(value)
        else:
            plain[key] = str(value)
    return plain


def span_from_record(record: SpanRecord) -> ReadableSpan:
    """Convert a run, row, step or tool span."""
    parent = _context(record.trace_id, record.parent_span_id) if record.parent_span_id else None
    attributes = {f"trunkline.{key}": value for key, value in record.attributes.items()}
    attributes.update({"trunkline.span_kind": record.kind, "trunkline.run_id": record.run_id})
    attributes["trunkline.session_id"] = record.session_id
    return ReadableSpan(
        name=record.name,
        context=_context(record.trace_id, record.span_id),
        parent=parent,
        resource=RESOURCE,
        attributes=_plain(attributes),
        kind=SpanKind.INTERNAL,
        status=_status(record.status == "ok", record.error),
        start_time=_nanoseconds(record.started_at),
        end_time=_nanoseconds(record.ended_at),
        instrumentation_scope=SCOPE,
    )


def call_attributes(record: CallRecord) -> dict[str, Any]:
    """Return the GenAI and Trunkline attributes of a model call."""
    parameters = record.parameters
    usage = record.usage
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": _PROVIDER_NAMES.get(record.provider or "", record.provider),
        "gen_ai.request.model": record.model_requested,
        "gen_ai.response.model": record.model_served,
        "gen_ai.response.id": record.response_id,
        "gen_ai.response.finish_reasons": [record.finish_reason] if record.finish_reason else None,
        "gen_ai.usage.input_tokens": usage.input_tokens,
        "gen_ai.usage.output_tokens": usage.output_tokens,
        "gen_ai.request.temperature": parameters.get("temperature"),
        "gen_ai.request.max_tokens": parameters.get("max_tokens"),
        "gen_ai.request.top_p": parameters.get("top_p"),
        "gen_ai.request.seed": parameters.get("seed"),
        "gen_ai.request.stop_sequences": parameters.get("stop"),
        "trunkline.call_id": record.call_id,
        "trunkline.route": record.route,
        "trunkline.deployment": record.deployment,
        "trunkline.cost_usd": record.cost.total_usd,
        "trunkline.price_missing": record.cost.price_missing,
        "trunkline.usage.cache_read_tokens": usage.cache_read_tokens,
        "trunkline.usage.cache_write_tokens": usage.cache_write_tokens,
        "trunkline.usage.reasoning_tokens": usage.reasoning_tokens,
        "trunkline.usage.estimated": usage.estimated,
        "trunkline.prompt.name": record.prompt_name,
        "trunkline.prompt.version": record.prompt_version,
        "trunkline.attempts": len(record.attempts),
        "trunkline.fallback_path": [f"{hop.deployment}:{hop.reason}" for hop in record.fallbacks],
        "trunkline.run_id": record.run_id,
        "trunkline.session_id": record.session_id,
        "trunkline.model_version": record.model_version,
        "trunkline.time_to_first_token_ms": record.time_to_first_token_ms,
    }
    if record.error_kind is not None:
        attributes["error.type"] = record.error_kind.value
    return _plain(attributes)


def spans_from_call(record: CallRecord) -> list[ReadableSpan]:
    """Convert a call record to its call span and one child span per attempt."""
    parent = _context(record.trace_id, record.parent_span_id) if record.parent_span_id else None
    call_context = _context(record.trace_id, record.span_id)
    model = record.model_served or record.model_requested
    spans = [
        ReadableSpan(
            name=f"chat {model}",
            context=call_context,
            parent=parent,
            resource=RESOURCE,
            attributes=call_attributes(record),
            kind=SpanKind.CLIENT,
            status=_status(record.outcome == "ok", record.error_message),
            start_time=_nanoseconds(record.started_at),
            end_time=_nanoseconds(record.ended_at),
            instrumentation_scope=SCOPE,
        )
    ]
    for attempt in record.attempts:
        started = _nanoseconds(attempt.started_at)
        attributes = {
            "trunkline.attempt.number": attempt.attempt_number,
            "trunkline.deployment": attempt.deployment,
            "gen_ai.provider.name": _PROVIDER_NAMES.get(attempt.provider, attempt.provider),
            "gen_ai.request.model": attempt.model,
            "http.response.status_code": attempt.status_code,
            "error.type": attempt.error_kind.value if attempt.error_kind else None,
            "trunkline.attempt.queued_ms": attempt.queued_ms,
            "trunkline.attempt.wait_s": attempt.wait_s,
            "trunkline.attempt.wait_reason": attempt.wait_reason,
        }
        spans.append(
            ReadableSpan(
                name=f"attempt {attempt.attempt_number} {attempt.deployment}",
                context=_context(record.trace_id, random_hex(64)),
                parent=call_context,
                resource=RESOURCE,
                attributes=_plain(attributes),
                kind=SpanKind.CLIENT,
                status=_status(attempt.outcome == "ok", attempt.error_message),
                start_time=started,
                end_time=started + int(attempt.latency_ms * 1_000_000),
                instrumentation_scope=SCOPE,
            )
        )
    return spans
