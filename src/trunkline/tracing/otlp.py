"""Sending spans to an OpenTelemetry collector over OTLP, off the call path.

`OtlpExporter` is a tracing exporter: `export_call` and `export_span` only
enqueue the record. A daemon thread encodes records into OTLP protobuf
(`trunkline.tracing.otel`) and sends them in batches over HTTP or gRPC.
The queue is bounded: when the collector is down or slow and the queue is
full, new spans are dropped and counted, with one warning per minute, so
memory never grows without bound and no call waits.

`exporter_from_settings` reads the standard OpenTelemetry variables
(``OTEL_EXPORTER_OTLP_*``, ``OTEL_SERVICE_NAME``,
``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``), which win over the
``[tracing]`` section of the configuration.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import deque
from typing import Protocol

from trunkline.config import Settings
from trunkline.errors import ConfigError
from trunkline.redaction import redact
from trunkline.tracing.otel import encode_request, resource, span_from_record, spans_from_call
from trunkline.types.calls import CallRecord
from trunkline.types.spans import SpanRecord

logger = logging.getLogger(__name__)

_WARN_EVERY_S = 60.0
# Seconds before the second and third try of a batch that the collector
# rejected with a transient error. The OTLP specification lists these as retryable.
_RETRY_WAITS_S = (0.5, 1.0)
_RETRYABLE_STATUS = {429, 502, 503, 504}
PROTOCOLS = ("http/protobuf", "grpc")


class ExportFailed(Exception):
    """The collector did not accept a batch. `retryable` is True when another try may succeed."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class _Sender(Protocol):
    def send(self, payload: bytes) -> None: ...

    def close(self) -> None: ...


class HttpSender:
    """Posts serialized requests to an OTLP/HTTP traces URL."""

    def __init__(self, endpoint: str, headers: dict[str, str], timeout_s: float) -> None:
        parsed = urllib.parse.urlsplit(endpoint)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ConfigError(
                f"OTLP/HTTP endpoint {redact(endpoint)!r} is not an http:// or https:// URL; "
                "give the traces URL, such as http://127.0.0.1:4318/v1/traces"
            )
        if parsed.path in ("", "/"):
            # A collector's address alone: OTLP/HTTP receives traces at this path.
            endpoint = endpoint.rstrip("/") + "/v1/traces"
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self._headers = {"Content-Type": "application/x-protobuf", **headers}

    def send(self, payload: bytes) -> None:
        request = urllib.request.Request(self.endpoint, data=payload, headers=self._headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:  # noqa: S310
                response.read()
        except urllib.error.HTTPError as error:
            raise ExportFailed(f"HTTP {error.code}", retryable=error.code in _RETRYABLE_STATUS) from None
        except (urllib.error.URLError, OSError, ValueError) as error:
            raise ExportFailed(repr(error), retryable=True) from None

    def close(self) -> None:
        pass


class GrpcSender:
    """Calls the OTLP ``TraceService/Export`` method over gRPC with the serialized request."""

    def __init__(self, endpoint: str, headers: dict[str, str], timeout_s: float) -> None:
        # gRPC's core library writes its own log lines to stderr at this
        # default. Failures reach Trunkline's logs through the exporter instead.
        os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
        try:
            import grpc
        except ImportError:
            raise ConfigError(
                "OTLP over gRPC needs the grpcio package; install it with "
                "pip install 'trunkline[grpc]', or set the protocol to http/protobuf"
            ) from None
        self._grpc = grpc

        parsed = urllib.parse.urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
        if not parsed.hostname or not parsed.port:
            raise ConfigError(
                f"OTLP gRPC endpoint {redact(endpoint)!r} needs a host and a port, "
                "such as http://127.0.0.1:4317"
            )
        if parsed.scheme not in ("http", "https"):
            raise ConfigError(
                f"OTLP gRPC endpoint {redact(endpoint)!r} must start with http:// (plain text) "
                "or https:// (TLS)"
            )

        target = f"{parsed.hostname}:{parsed.port}"
        if parsed.scheme == "https":
            self._channel = grpc.secure_channel(target, grpc.ssl_channel_credentials())
        else:
            self._channel = grpc.insecure_channel(target)
        # No serializers: the request is already protobuf bytes.
        self._export = self._channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export")
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self._metadata = tuple((key.lower(), value) for key, value in headers.items())

    def send(self, payload: bytes) -> None:
        grpc = self._grpc
        try:
            self._export(payload, timeout=self.timeout_s, metadata=self._metadata)
        except grpc.RpcError as error:
            code = error.code() if hasattr(error, "code") else None
            details = error.details() if hasattr(error, "details") else None
            passing = {
                grpc.StatusCode.UNAVAILABLE,
                grpc.StatusCode.DEADLINE_EXCEEDED,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                grpc.StatusCode.ABORTED,
            }
            name = code.name if code is not None else "unknown status"
            raise ExportFailed(f"gRPC {name}: {details or 'no details'}", retryable=code in passing) from None

    def close(self) -> None:
        self._channel.close()


def _spans(record: CallRecord | SpanRecord, capture_content: bool) -> list[bytes]:
    if isinstance(record, CallRecord):
        return spans_from_call(record, capture_content=capture_content)
    return [span_from_record(record)]


def _span_count(record: CallRecord | SpanRecord) -> int:
    return 1 + len(record.attempts) if isinstance(record, CallRecord) else 1


class OtlpExporter:
    """Queues spans and sends them in batches to an OTLP traces endpoint.

    Args:
        endpoint: for ``http/protobuf`` the full traces URL, such as
            ``http://127.0.0.1:4318/v1/traces``; for ``grpc`` the collector's
            address, such as ``http://127.0.0.1:4317``.
        protocol: ``http/protobuf`` or ``grpc``.
        headers: sent with every batch.
        capture_content: add messages and output, redacted, to call spans.
        service_name: the ``service.name`` resource attribute.
        max_queue: records (calls and spans) kept waiting at most; more are
            dropped, and their spans counted.
        batch_size: records converted and sent per request.
        interval_s: seconds between sends when the queue is not full.
        timeout_s: seconds one send may take.
        warn_on_drop: log dropped spans as warnings; off for callers that
            report failures themselves.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        protocol: str = "http/protobuf",
        headers: dict[str, str] | None = None,
        capture_content: bool = False,
        service_name: str = "trunkline",
        max_queue: int = 4096,
        batch_size: int = 512,
        interval_s: float = 1.0,
        timeout_s: float = 5.0,
        warn_on_drop: bool = True,
    ) -> None:
        if protocol not in PROTOCOLS:
            raise ConfigError(
                f"OTLP protocol {protocol!r} is not supported; use one of {', '.join(PROTOCOLS)}"
            )
        self.protocol = protocol
        self.capture_content = capture_content
        self.max_queue = max_queue
        self.batch_size = batch_size
        self.interval_s = interval_s
        sender_class = GrpcSender if protocol == "grpc" else HttpSender
        self._sender: _Sender = sender_class(endpoint, dict(headers or {}), timeout_s)
        self.endpoint = self._sender.endpoint
        from trunkline import __version__  # the package imports this module while it loads

        self._resource = resource(service_name, __version__)
        # Records wait here unconverted: conversion costs the sending thread,
        # not the call path.
        self._queue: deque[CallRecord | SpanRecord] = deque()
        self._wake = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._closed = False
        self._last_warning = 0.0
        self.warn_on_drop = warn_on_drop
        # Runs with dropped spans, named in the warnings so they can be sent again.
        self._dropped_runs: set[str] = set()
        # The batch being sent, counted as dropped if `close` gives up on it.
        self._in_flight: list[CallRecord | SpanRecord] = []
        self._abandoned = False
        #: Spans dropped because the queue was full or a send failed.
        self.dropped = 0
        #: Spans the collector accepted.
        self.sent = 0
        self._thread = threading.Thread(target=self._loop, name="trunkline-otlp", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    def export_call(self, record: CallRecord) -> None:
        self._enqueue(record)

    def export_span(self, record: SpanRecord) -> None:
        # A call's span is built from its record, which carries the call's figures.
        if record.kind != "call":
            self._enqueue(record)

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Send everything queued so far; False when it did not finish within `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while self._queue or not self._idle.is_set():
            self._wake.set()
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def close(self, timeout_s: float = 5.0) -> None:
        """Send what is queued within `timeout_s`, then stop; calling it twice is harmless.

        A collector that does not reply delays the caller by about
        `timeout_s` at most. Spans still queued or unconfirmed then are
        counted as dropped, and one warning gives the total and the runs to
        send again.
        """
        if self._closed:
            return
        self.flush(timeout_s)
        self._closed = True
        self._wake.set()
        self._thread.join(timeout=1.0)
        left = [self._queue.popleft() for _ in range(len(self._queue))]
        if self._thread.is_alive():
            # Still waiting for the collector: its batch counts as lost.
            self._abandoned = True
            left.extend(self._in_flight)
        if left:
            self._note_dropped(left)
        if self.dropped and self.warn_on_drop:
            logger.warning(
                "%d spans were not delivered to %s; %s",
                self.dropped,
                redact(self.endpoint),
                self._resend_hint(),
            )
        self._sender.close()
        atexit.unregister(self.close)

    def _enqueue(self, record: CallRecord | SpanRecord) -> None:
        if len(self._queue) >= self.max_queue or self._closed:
            self._drop([record], "the queue is full", "check that the collector is running, or raise otlp_max_queue")
            return
        self._queue.append(record)
        if len(self._queue) >= self.batch_size:
            self._wake.set()

    def _note_dropped(self, records: list[CallRecord | SpanRecord]) -> int:
        count = sum(_span_count(record) for record in records)
        self.dropped += count
        for record in records:
            if record.run_id and len(self._dropped_runs) < 20:
                self._dropped_runs.add(record.run_id)
        return count

    def _resend_hint(self) -> str:
        runs = sorted(self._dropped_runs)
        if not runs:
            return "they were not part of a run, so only the store keeps them"
        commands = "; ".join(f"trunkline export otlp --run {run}" for run in runs[:3])
        more = f" (and {len(runs) - 3} more runs)" if len(runs) > 3 else ""
        return f"the store keeps them: {commands}{more}"

    def _drop(self, records: list[CallRecord | SpanRecord], reason: str, advice: str) -> None:
        count = self._note_dropped(records)
        now = time.monotonic()
        if self.warn_on_drop and now - self._last_warning >= _WARN_EVERY_S:
            self._last_warning = now
            logger.warning(
                "dropped %d spans for %s because %s (%d dropped so far); %s; %s",
                count,
                redact(self.endpoint),
                reason,
                self.dropped,
                advice,
                self._resend_hint(),
            )

    def _send(self, spans: list[bytes]) -> None:
        payload = encode_request(spans, self._resource)
        for wait_s in (*_RETRY_WAITS_S, None):
            try:
                self._sender.send(payload)
            except ExportFailed as failure:
                logger.debug("sending %d spans to %s failed: %s", len(spans), redact(self.endpoint), failure)
                if not failure.retryable or wait_s is None or self._closed:
                    raise
                time.sleep(wait_s)
            else:
                return

    def _loop(self) -> None:
        while True:
            self._wake.wait(self.interval_s)
            self._wake.clear()
            self._idle.clear()
            while self._queue:
                records = [self._queue.popleft() for _ in range(min(self.batch_size, len(self._queue)))]
                self._in_flight = records
                spans = [span for record in records for span in _spans(record, self.capture_content)]
                try:
                    self._send(spans)
                    if self._abandoned:
                        # `close` has counted this batch as dropped already.
                        return
                except ExportFailed as failure:
                    if self._abandoned:
                        return
                    advice = (
                        "check that the collector is running and keeps up"
                        if failure.retryable
                        else "check the endpoint, the protocol and the headers"
                    )
                    self._drop(records, f"the collector did not accept them ({failure})", advice)
                except Exception:
                    # Whatever goes wrong, the thread must live on to drain the queue.
                    logger.exception("encoding or sending %d spans failed", len(spans))
                    self._drop(records, "they could not be encoded or sent", "report this as a bug")
                else:
                    self.sent += len(spans)
                self._in_flight = []
            self._idle.set()
            if self._closed:
                return


def _environment(name: str) -> tuple[str, str] | None:
    """Return the traces-specific OTLP variable, else the general one, as (variable, value), or None."""
    for variable in (f"OTEL_EXPORTER_OTLP_TRACES_{name}", f"OTEL_EXPORTER_OTLP_{name}"):
        value = os.environ.get(variable)
        if value:
            return variable, value
    return None


def otlp_protocol(settings: Settings | None = None) -> str:
    """Return the protocol from the OpenTelemetry variables, then the configuration."""
    found = _environment("PROTOCOL")
    if found is None:
        return settings.tracing.otlp_protocol if settings else "http/protobuf"
    variable, protocol = found
    if protocol not in PROTOCOLS:
        raise ConfigError(
            f"{variable}={protocol!r} is not a supported OTLP protocol; set it to one of "
            f"{', '.join(PROTOCOLS)}"
        )
    return protocol


def otlp_endpoint(settings: Settings | None = None) -> str | None:
    """Return the traces endpoint from the OpenTelemetry variables, then the configuration, or None."""
    grpc = otlp_protocol(settings) == "grpc"
    for variable in ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"):
        value = os.environ.get(variable)
        if not value:
            continue
        if not grpc and not value.startswith(("http://", "https://")):
            raise ConfigError(
                f"{variable}={redact(value)!r} has no http:// or https:// scheme; write, for "
                "example, http://127.0.0.1:4318"
            )
        if grpc or variable == "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT":
            return value
        # Over HTTP the general variable names the collector, not its traces path.
        return f"{value.rstrip('/')}/v1/traces"
    return settings.tracing.otlp_endpoint if settings else None


def otlp_headers(settings: Settings | None = None) -> dict[str, str]:
    """Return the configured headers, with those of ``OTEL_EXPORTER_OTLP_HEADERS`` winning."""
    headers = dict(settings.tracing.otlp_headers) if settings else {}
    found = _environment("HEADERS")
    if found is None:
        return headers
    variable, text = found
    for number, item in enumerate(text.split(","), start=1):
        if not item.strip():
            continue
        key, separator, value = item.partition("=")
        if not separator or not key.strip():
            # The entry is not quoted: it may be a secret with its separator mistyped.
            raise ConfigError(
                f"entry {number} of {variable} ({len(item)} characters) is not KEY=VALUE; "
                "separate entries with commas, as in x-api-key=VALUE,x-team=NAME"
            )
        headers[key.strip()] = urllib.parse.unquote(value.strip())
    return headers


def capture_content(settings: Settings | None = None) -> bool:
    value = os.environ.get("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT")
    if value is None:
        return settings.tracing.capture_content if settings else False
    return value.strip().lower() in {"1", "true", "yes", "on"}


def exporter_from_settings(
    settings: Settings,
    endpoint: str | None = None,
    *,
    protocol: str | None = None,
    max_queue: int | None = None,
) -> OtlpExporter | None:
    """Return an exporter for `endpoint` or the configured one, or None when none is configured."""
    endpoint = endpoint or otlp_endpoint(settings)
    if not endpoint:
        return None
    return OtlpExporter(
        endpoint,
        protocol=protocol or otlp_protocol(settings),
        headers=otlp_headers(settings),
        capture_content=capture_content(settings),
        service_name=os.environ.get("OTEL_SERVICE_NAME") or "trunkline",
        max_queue=max_queue or settings.tracing.otlp_max_queue,
    )
