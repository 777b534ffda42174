"""Sending spans to an OpenTelemetry collector over OTLP/HTTP, off the call path.

`OtlpExporter` is a tracing exporter: `export_call` and `export_span` only
enqueue the record. A daemon thread encodes records straight into OTLP
protobuf messages and posts them in batches. Building the SDK's span
objects and running its encoder cost several times more CPU per span. The queue is bounded: when the collector is down
or slow and the queue is full, new spans are dropped and counted, with one
warning per minute, so memory never grows without bound and no call waits.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections import deque

import urllib.error
import urllib.request

from opentelemetry.proto.trace.v1.trace_pb2 import Span

from trunkline.tracing.otel import encode_request, span_from_record, spans_from_call
from trunkline.types.calls import CallRecord
from trunkline.types.spans import SpanRecord

logger = logging.getLogger(__name__)

_WARN_EVERY_S = 60.0


def otlp_endpoint() -> str | None:
    """Return the traces endpoint from the standard OpenTelemetry variables, or None."""
    traces = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    if traces:
        return traces
    base = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    return f"{base.rstrip('/')}/v1/traces" if base else None


def _spans(record: CallRecord | SpanRecord) -> list[Span]:
    if isinstance(record, CallRecord):
        return spans_from_call(record)
    return [span_from_record(record)]


def _span_count(record: CallRecord | SpanRecord) -> int:
    return 1 + len(record.attempts) if isinstance(record, CallRecord) else 1


class OtlpExporter:
    """Queues spans and sends them in batches to an OTLP/HTTP traces endpoint.

    Args:
        endpoint: the full traces URL, such as ``http://127.0.0.1:4318/v1/traces``.
        max_queue: records (calls and spans) kept waiting at most; more are
            dropped, and their spans counted.
        batch_size: records converted and sent per request.
        interval_s: seconds between sends when the queue is not full.
        timeout_s: seconds one send may take.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        headers: dict[str, str] | None = None,
        max_queue: int = 4096,
        batch_size: int = 512,
        interval_s: float = 1.0,
        timeout_s: float = 5.0,
    ) -> None:
        self.endpoint = endpoint
        self.max_queue = max_queue
        self.batch_size = batch_size
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self._headers = {"Content-Type": "application/x-protobuf", **(headers or {})}
        # Records wait here unconverted: conversion costs the sending thread,
        # not the call path.
        self._queue: deque[CallRecord | SpanRecord] = deque()
        self._wake = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._closed = False
        self._last_warning = 0.0
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

    def close(self) -> None:
        """Send what is queued, then stop; calling it twice is harmless."""
        if self._closed:
            return
        self.flush()
        self._closed = True
        self._wake.set()
        self._thread.join(timeout=10)
        atexit.unregister(self.close)

    def _enqueue(self, record: CallRecord | SpanRecord) -> None:
        if len(self._queue) >= self.max_queue or self._closed:
            self._drop(_span_count(record), "the queue is full")
            return
        self._queue.append(record)
        if len(self._queue) >= self.batch_size:
            self._wake.set()

    def _drop(self, count: int, reason: str) -> None:
        self.dropped += count
        now = time.monotonic()
        if now - self._last_warning >= _WARN_EVERY_S:
            self._last_warning = now
            logger.warning(
                "dropped %d spans for %s because %s (%d dropped so far); check that the "
                "collector is running, or raise its capacity",
                count,
                self.endpoint,
                reason,
                self.dropped,
            )

    def _send(self, batch: list[Span]) -> bool:
        request = urllib.request.Request(
            self.endpoint, data=encode_request(batch), headers=self._headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:  # noqa: S310
                return 200 <= response.status < 300
        except (urllib.error.URLError, OSError, ValueError) as error:
            # A failing collector must not stop the thread; the caller counts the drop.
            logger.debug("sending %d spans to %s failed: %r", len(batch), self.endpoint, error)
            return False

    def _loop(self) -> None:
        while True:
            self._wake.wait(self.interval_s)
            self._wake.clear()
            self._idle.clear()
            while self._queue:
                records = [self._queue.popleft() for _ in range(min(self.batch_size, len(self._queue)))]
                batch = [span for record in records for span in _spans(record)]
                if self._send(batch):
                    self.sent += len(batch)
                else:
                    self._drop(len(batch), "the collector did not accept them")
            self._idle.set()
            if self._closed:
                return
