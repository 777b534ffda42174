"""Trunkline's spans and call records as OTLP protobuf spans with GenAI attributes.

A model call becomes a ``chat MODEL`` span with the attributes of the
OpenTelemetry GenAI semantic conventions (``gen_ai.*``) and Trunkline's own
under ``trunkline.``. Each of its attempts becomes a child span with the id
the attempt had while it ran, so that spans opened inside a provider (the
local model's generation on its worker thread) hang under their attempt.
Runs, rows, steps and tool calls keep their names. Trace and span ids are
Trunkline's, so a span exported later (`trunkline export otlp`) joins the
same trace. Message contents are added only when `capture_content` is on;
the router has redacted them by then.

The protobuf wire format is written here by hand rather than through the
generated message classes, because building a ``KeyValue`` object per
attribute costs several times more (`benchmarks/otlp_encoding.py` compares
the two). Most attribute pairs (provider, model, route) repeat from call to
call, so their encoded bytes are cached.
"""

from __future__ import annotations

import json
import struct
from datetime import datetime
from typing import Any

from trunkline.ids import random_hex
from trunkline.types.calls import Attempt, CallRecord
from trunkline.types.spans import SpanRecord

# Span.SpanKind values of the OTLP protocol.
_KIND_INTERNAL = b"\x30\x01"
_KIND_CLIENT = b"\x30\x03"
_STATUS_OK = b"\x7a\x02\x18\x01"

# GenAI names for the providers, as the semantic conventions spell them.
_PROVIDER_NAMES = {
    "openai": "openai",
    "azure": "azure.ai.openai",
    "anthropic": "anthropic",
    "local": "llama_cpp",
    "fake": "trunkline.fake",
}

_INT64 = range(-(1 << 63), 1 << 63)
_fixed64 = struct.Struct("<Q").pack
_double = struct.Struct("<d").pack
_SMALL_VARINTS = [bytes((value,)) for value in range(0x80)]


def _varint(value: int) -> bytes:
    if 0 <= value < 0x80:
        return _SMALL_VARINTS[value]
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(tag: bytes, payload: bytes) -> bytes:
    """Encode a length-delimited field: its tag, the payload's length, then the payload."""
    return tag + _varint(len(payload)) + payload


def _any_value(value: Any) -> bytes:
    """Encode an ``AnyValue`` message."""
    # bool first: it is also an int.
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, int) and value in _INT64:
        return b"\x18" + _varint(value)
    if isinstance(value, float):
        return b"\x21" + _double(value)
    if isinstance(value, list | tuple):
        items = b"".join(_field(b"\x0a", _any_value(item)) for item in value)
        return _field(b"\x2a", items)
    return _field(b"\x0a", str(value).encode())


_KEYS: dict[str, bytes] = {}
# Encoded attributes whose text or flag value tends to repeat; bounded.
_REPEATED: dict[tuple[str, str | bool], bytes] = {}
_MAX_REPEATED = 4096
# Values new on every call, which would only churn that cache.
_UNIQUE_KEYS = frozenset(
    {"trunkline.call_id", "gen_ai.response.id", "gen_ai.input.messages", "gen_ai.output.messages"}
)


def _attribute(key: str, value: Any, tag: bytes = b"\x4a") -> bytes:
    """Encode one ``KeyValue`` as the field `tag` (a span's ``attributes`` by default)."""
    prefix = _KEYS.get(key)
    if prefix is None:
        prefix = _KEYS[key] = _field(b"\x0a", key.encode())
    return _field(tag, prefix + _field(b"\x12", _any_value(value)))


def _attributes(attributes: dict[str, Any]) -> bytes:
    """Encode a span's attributes; None values are left out."""
    parts = []
    for key, value in attributes.items():
        if value is None:
            continue
        if (value.__class__ is str or value.__class__ is bool) and key not in _UNIQUE_KEYS:
            cached = _REPEATED.get((key, value))
            if cached is None:
                if len(_REPEATED) >= _MAX_REPEATED:
                    _REPEATED.clear()
                cached = _REPEATED[(key, value)] = _attribute(key, value)
            parts.append(cached)
        else:
            parts.append(_attribute(key, value))
    return b"".join(parts)


def _nanoseconds(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000_000)


def _span(
    trace_id: bytes,
    span_id: bytes,
    parent_span_id: str | bytes | None,
    name: str,
    kind: bytes,
    start_ns: int,
    end_ns: int,
    attributes: bytes,
    ok: bool,
    error: str | None,
) -> bytes:
    """Encode one ``Span`` message."""
    if isinstance(parent_span_id, str):
        parent_span_id = bytes.fromhex(parent_span_id)
    parent = b"\x22\x08" + parent_span_id if parent_span_id else b""
    if ok:
        status = _STATUS_OK
    else:
        status = _field(b"\x7a", _field(b"\x12", (error or "error").encode()) + b"\x18\x02")
    return b"".join(
        (
            b"\x0a\x10", trace_id,
            b"\x12\x08", span_id,
            parent,
            _field(b"\x2a", name.encode()),
            kind,
            b"\x39", _fixed64(start_ns),
            b"\x41", _fixed64(max(end_ns, start_ns)),
            attributes,
            status,
        )
    )


def resource(service_name: str, service_version: str) -> bytes:
    """Encode the ``Resource`` every exported span belongs to."""
    return _attribute("service.name", service_name, b"\x0a") + _attribute(
        "service.version", service_version, b"\x0a"
    )


def encode_request(spans: list[bytes], resource_attributes: bytes) -> bytes:
    """Return the serialized OTLP ``ExportTraceServiceRequest`` that carries `spans`."""
    scope = _field(b"\x0a", _field(b"\x0a", b"trunkline"))
    scope_spans = scope + b"".join(_field(b"\x12", span) for span in spans)
    resource_spans = _field(b"\x0a", resource_attributes) + _field(b"\x12", scope_spans)
    return _field(b"\x0a", resource_spans)


def span_from_record(record: SpanRecord) -> bytes:
    """Encode a run, row, step, agent, tool or provider span.

    Attributes go under ``trunkline.``, except those that already carry a
    GenAI convention name, such as a tool span's ``gen_ai.tool.name``.
    """
    attributes = {
        key if key.startswith("gen_ai.") else f"trunkline.{key}": value
        for key, value in record.attributes.items()
    }
    attributes["trunkline.span_kind"] = record.kind
    attributes["trunkline.run_id"] = record.run_id
    attributes["trunkline.session_id"] = record.session_id
    return _span(
        bytes.fromhex(record.trace_id),
        bytes.fromhex(record.span_id),
        record.parent_span_id,
        record.name,
        _KIND_INTERNAL,
        _nanoseconds(record.started_at),
        _nanoseconds(record.ended_at),
        _attributes(attributes),
        record.status == "ok",
        record.error,
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
        "trunkline.fallback_path": [f"{hop.deployment}:{hop.reason}" for hop in record.fallbacks] or None,
        "trunkline.run_id": record.run_id,
        "trunkline.session_id": record.session_id,
        "trunkline.model_version": record.model_version,
        "trunkline.time_to_first_token_ms": record.time_to_first_token_ms,
    }
    if record.error_kind is not None:
        attributes["error.type"] = record.error_kind.value
    return attributes


def content_attributes(record: CallRecord) -> dict[str, str]:
    """Return the call's messages as the GenAI ``input``/``output`` message attributes.

    The router redacted the record's contents before any exporter saw it.
    """
    inputs = [
        {"role": message.role, "parts": [{"type": "text", "content": message.content}]}
        for message in record.messages
    ]
    attributes = {"gen_ai.input.messages": json.dumps(inputs, ensure_ascii=False)}
    if record.output_text is not None:
        output = {
            "role": "assistant",
            "parts": [{"type": "text", "content": record.output_text}],
            "finish_reason": record.finish_reason or "error",
        }
        attributes["gen_ai.output.messages"] = json.dumps([output], ensure_ascii=False)
    return attributes


def _attempt_span(trace_id: bytes, call_span_id: bytes, attempt: Attempt) -> bytes:
    started = _nanoseconds(attempt.started_at)
    attributes = {
        "trunkline.attempt.number": attempt.attempt_number,
        "trunkline.deployment": attempt.deployment,
        "gen_ai.provider.name": _PROVIDER_NAMES.get(attempt.provider, attempt.provider),
        "gen_ai.request.model": attempt.model,
        "http.response.status_code": attempt.status_code,
        "error.type": attempt.error_kind.value if attempt.error_kind else None,
        "trunkline.attempt.queued_ms": attempt.queued_ms or None,
        "trunkline.attempt.wait_s": attempt.wait_s,
        "trunkline.attempt.wait_reason": attempt.wait_reason,
    }
    return _span(
        trace_id,
        bytes.fromhex(attempt.span_id or random_hex(64)),
        call_span_id,
        f"attempt {attempt.attempt_number} {attempt.deployment}",
        _KIND_CLIENT,
        started,
        started + int(attempt.latency_ms * 1_000_000),
        _attributes(attributes),
        attempt.outcome == "ok",
        attempt.error_message,
    )


def spans_from_call(record: CallRecord, *, capture_content: bool = False) -> list[bytes]:
    """Encode a call record as its call span and one child span per attempt."""
    trace_id = bytes.fromhex(record.trace_id)
    call_span_id = bytes.fromhex(record.span_id)
    attributes = call_attributes(record)
    if capture_content:
        attributes.update(content_attributes(record))
    spans = [
        _span(
            trace_id,
            call_span_id,
            record.parent_span_id,
            f"chat {record.model_requested}",
            _KIND_CLIENT,
            _nanoseconds(record.started_at),
            _nanoseconds(record.ended_at),
            _attributes(attributes),
            record.outcome == "ok",
            record.error_message,
        )
    ]
    spans.extend(_attempt_span(trace_id, call_span_id, attempt) for attempt in record.attempts)
    return spans
