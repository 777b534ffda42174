"""CPU to encode call records as OTLP spans: Trunkline's direct wire encoding beside the generated classes.

Records come from `Router.complete` over a provider that replies at once
(as in `router_cost.py`), each a call with one attempt. Three variants
alternate in every round, each encoding every record into one
``ExportTraceServiceRequest``:

- ``wire``: `trunkline.tracing.otel`, which writes the protobuf bytes itself;
- ``wire+contents``: the same with message contents captured;
- ``generated``: the call attributes built as `opentelemetry-proto` message
  objects and serialized, the usual way. It leaves out times, status and
  some attempt attributes, so its cost is a lower bound.

    python benchmarks/otlp_encoding.py --rounds 5 --records 3000
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Callable
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from router_cost import MESSAGES, InstantProvider, bench_settings
from trunkline.routing import Router
from trunkline.tracing import add_exporter, remove_exporter
from trunkline.tracing.otel import call_attributes, encode_request, resource, spans_from_call
from trunkline.types.calls import CallRecord


class _Collect:
    def __init__(self) -> None:
        self.calls: list[CallRecord] = []

    def export_call(self, record: CallRecord) -> None:
        self.calls.append(record)

    def export_span(self, record: object) -> None:
        return None


async def make_records(count: int) -> list[CallRecord]:
    collected = _Collect()
    add_exporter(collected)
    try:
        router = Router(bench_settings("sqlite:///:memory:"), providers={"bench": InstantProvider()})
        for _ in range(count):
            await router.complete(MESSAGES, route="bench", max_tokens=16)
    finally:
        remove_exporter(collected)
    return collected.calls


def _any_value(value: Any) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, list | tuple):
        return AnyValue(array_value=ArrayValue(values=[_any_value(item) for item in value]))
    return AnyValue(string_value=str(value))


def _key_values(attributes: dict[str, Any]) -> list[KeyValue]:
    return [KeyValue(key=key, value=_any_value(value)) for key, value in attributes.items() if value is not None]


def generated_request(records: list[CallRecord]) -> bytes:
    """Encode with the generated message classes: the baseline the wire encoding replaced."""
    spans = []
    for record in records:
        trace_id, call_id = bytes.fromhex(record.trace_id), bytes.fromhex(record.span_id)
        spans.append(
            Span(trace_id=trace_id, span_id=call_id, name=f"chat {record.model_requested}",
                 attributes=_key_values(call_attributes(record)))
        )
        for attempt in record.attempts:
            attributes = {
                "trunkline.attempt.number": attempt.attempt_number,
                "trunkline.deployment": attempt.deployment,
                "gen_ai.request.model": attempt.model,
                "trunkline.attempt.queued_ms": attempt.queued_ms,
            }
            spans.append(
                Span(trace_id=trace_id, span_id=bytes.fromhex(attempt.span_id or "0" * 16),
                     parent_span_id=call_id, attributes=_key_values(attributes))
            )
    request = ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource=Resource(attributes=_key_values({"service.name": "trunkline"})),
                scope_spans=[ScopeSpans(scope=InstrumentationScope(name="trunkline"), spans=spans)],
            )
        ]
    )
    return request.SerializeToString()


def wire_request(records: list[CallRecord], capture_content: bool) -> bytes:
    encoded = [span for record in records for span in spans_from_call(record, capture_content=capture_content)]
    return encode_request(encoded, resource("trunkline", "benchmark"))


def per_record_us(encode: Callable[[], bytes], count: int) -> float:
    start = time.process_time()
    encode()
    return (time.process_time() - start) / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description="CPU to encode call records as OTLP spans.")
    parser.add_argument("--rounds", type=int, default=5, help="Alternating rounds per variant.")
    parser.add_argument("--records", type=int, default=3000, help="Call records encoded per round.")
    arguments = parser.parse_args()
    records = asyncio.run(make_records(arguments.records))
    variants: dict[str, Callable[[], bytes]] = {
        "wire": lambda: wire_request(records, False),
        "wire+contents": lambda: wire_request(records, True),
        "generated": lambda: generated_request(records),
    }
    results: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(arguments.rounds):
        for name, encode in variants.items():
            results[name].append(per_record_us(encode, len(records)))
    print(f"{arguments.rounds} rounds x {len(records)} call records, median CPU per record")
    baseline = statistics.median(results["generated"])
    for name, samples in results.items():
        value = statistics.median(samples)
        print(f"{name:<14} {value:8.1f} us  {value / baseline:5.2f} of generated")


if __name__ == "__main__":
    main()
