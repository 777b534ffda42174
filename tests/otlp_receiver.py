"""OTLP traces receivers on 127.0.0.1, over HTTP and over gRPC, that keep every span they are sent, decoded."""

from __future__ import annotations

import gzip
import http.server
import threading
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return [_value(item) for item in any_value.array_value.values]
    return getattr(any_value, kind) if kind else None


@dataclass
class ReceivedSpan:
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, Any]
    status_code: int
    start_ns: int
    end_ns: int


def decode_request(body: bytes) -> tuple[dict[str, Any], list[ReceivedSpan]]:
    """Return the resource attributes and the spans of a serialized export request."""
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    resource: dict[str, Any] = {}
    spans = []
    for resource_spans in request.resource_spans:
        resource.update({kv.key: _value(kv.value) for kv in resource_spans.resource.attributes})
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(
                    ReceivedSpan(
                        name=span.name,
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex(),
                        attributes={kv.key: _value(kv.value) for kv in span.attributes},
                        status_code=span.status.code,
                        start_ns=span.start_time_unix_nano,
                        end_ns=span.end_time_unix_nano,
                    )
                )
    return resource, spans


@dataclass
class OtlpReceiver:
    """Serves ``POST /v1/traces``. `spans` contains what arrived.

    `fail` makes it reply 503 to every request, `fail_next` to that many
    requests only; `headers` keeps the headers of the last request.
    """

    spans: list[ReceivedSpan] = field(default_factory=list)
    resource: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    fail: bool = False
    fail_next: int = 0
    requests: int = 0

    def start(self) -> None:
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server hook name
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                receiver.requests += 1
                receiver.headers = {key.lower(): value for key, value in self.headers.items()}
                if receiver.fail or receiver.fail_next or self.path != "/v1/traces":
                    receiver.fail_next = max(receiver.fail_next - 1, 0)
                    self.send_response(404 if self.path != "/v1/traces" else 503)
                    self.end_headers()
                    return
                resource, spans = decode_request(body)
                receiver.resource.update(resource)
                receiver.spans.extend(spans)
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: object) -> None:
                return

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1/traces"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@dataclass
class GrpcOtlpReceiver:
    """Serves the OTLP ``TraceService/Export`` method over gRPC; `spans` contains what arrived."""

    spans: list[ReceivedSpan] = field(default_factory=list)
    resource: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)

    def start(self) -> None:
        from concurrent import futures

        import grpc

        receiver = self

        def export(body: bytes, context: Any) -> bytes:
            receiver.metadata = dict(context.invocation_metadata())
            resource, spans = decode_request(body)
            receiver.resource.update(resource)
            receiver.spans.extend(spans)
            return ExportTraceServiceResponse().SerializeToString()

        handler = grpc.method_handlers_generic_handler(
            "opentelemetry.proto.collector.trace.v1.TraceService",
            {"Export": grpc.unary_unary_rpc_method_handler(export)},
        )
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        self._server.add_generic_rpc_handlers((handler,))
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self._server.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self._server.stop(grace=None)
