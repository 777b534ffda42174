"""Trunkline's spans and call records as OpenTelemetry spans with GenAI attributes.

A model call becomes a ``chat MODEL`` span with the attributes of the
OpenTelemetry GenAI semantic conventions (``gen_ai.*``) and Trunkline's own
under ``trunkline.``. Each of its attempts becomes a child span. Runs, rows,
steps and tool calls keep their names. Trace and span ids are Trunkline's, so
a span exported later (`trunkline export otlp`) joins the same trace.
Message contents are never set here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import (
    AnyValue,
    ArrayValue,
    InstrumentationScope,
    KeyValue,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from trunkline.ids import random_hex
from trunkline.types.calls import CallRecord
from trunkline.types.spans import SpanRecord

_INTERNAL = Span.SpanKind.SPAN_KIND_INTERNAL
_CLIENT = Span.SpanKind.SPAN_KIND_CLIENT

# GenAI names for the providers, as the semantic conventions spell them.
_PROVIDER_NAMES = {
    "openai": "openai",
    "azure": "azure.ai.openai",
    "anthropic": "anthropic",
    "local": "llama_cpp",
    "fake": "trunkline.fake",
}


def _nanoseconds(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000_000)


def _status(ok: bool, error: str | None) -> Status:
    if ok:
        return Status(code=Status.StatusCode.STATUS_CODE_OK)
    return Status(code=Status.StatusCode.STATUS_CODE_ERROR, message=error or "error")


def _any_value(value: Any) -> AnyValue:
    # bool first: it is also an int.
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, list | tuple):
        return AnyValue(array_value=ArrayValue(values=[_any_value(item) for item in value]))
    return AnyValue(string_value=str(value))


def _attributes(attributes: dict[str, Any]) -> list[KeyValue]:
    """Encode attributes; None values are left out."""
    return [
        KeyValue(key=key, value=_any_value(value))
        for key, value in attributes.items()
        if value is not None
    ]


def encode_request(spans: list[Span]) -> bytes:
    """Return the OTLP ``ExportTraceServiceRequest`` that carries `spans`, serialized."""
    request = ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource=Resource(attributes=_attributes({"service.name": "trunkline"})),
                scope_spans=[ScopeSpans(scope=InstrumentationScope(name="trunkline"), spans=spans)],
            )
        ]
    )
    return request.SerializeToString()


def span_from_record(record: SpanRecord) -> Span:
    """Convert a run, row, step or tool span."""
    attributes = {f"trunkline.{key}": value for key, value in record.attributes.items()}
    attributes.update({"trunkline.span_kind": record.kind, "trunkline.run_id": record.run_id})
    attributes["trunkline.session_id"] = record.session_id
    return Span(
        trace_id=bytes.fromhex(record.trace_id),
        span_id=bytes.fromhex(record.span_id),
        parent_span_id=bytes.fromhex(record.parent_span_id) if record.parent_span_id else b"",
        name=record.name,
        kind=_INTERNAL,
        start_time_unix_nano=_nanoseconds(record.started_at),
        end_time_unix_nano=_nanoseconds(record.ended_at),
        attributes=_attributes(attributes),
        status=_status(record.status == "ok", record.error),
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
    return attributes


def spans_from_call(record: CallRecord) -> list[Span]:
    """Convert a call record to its call span and one child span per attempt."""
    trace_id = bytes.fromhex(record.trace_id)
    call_span_id = bytes.fromhex(record.span_id)
    model = record.model_served or record.model_requested
    spans = [
        Span(
            trace_id=trace_id,
            span_id=call_span_id,
            parent_span_id=bytes.fromhex(record.parent_span_id) if record.parent_span_id else b"",
            name=f"chat {model}",
            kind=_CLIENT,
            start_time_unix_nano=_nanoseconds(record.started_at),
            end_time_unix_nano=_nanoseconds(record.ended_at),
            attributes=_attributes(call_attributes(record)),
            status=_status(record.outcome == "ok", record.error_message),
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
            Span(
                trace_id=trace_id,
                span_id=bytes.fromhex(random_hex(64)),
                parent_span_id=call_span_id,
                name=f"attempt {attempt.attempt_number} {attempt.deployment}",
                kind=_CLIENT,
                start_time_unix_nano=started,
                end_time_unix_nano=started + int(attempt.latency_ms * 1_000_000),
                attributes=_attributes(attributes),
                status=_status(attempt.outcome == "ok", attempt.error_message),
            )
        )
    return spans
