"""Spans and GenAI attributes arrive exactly at a real OTLP/HTTP receiver."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest

from integration.cli import run_trunkline
from integration.test_cli import write_project
from otlp_receiver import OtlpReceiver
from trunkline.providers.fake import FakeFailure, FakeReply, ScriptedModel
from trunkline.tracing import add_exporter, remove_exporter, span, start_run
from trunkline.tracing.otlp import OtlpExporter, otlp_endpoint
from unit.helpers import router_with


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    server = OtlpReceiver()
    server.start()
    yield server
    server.stop()


async def test_span_tree_and_attributes_arrive(receiver: OtlpReceiver) -> None:
    exporter = OtlpExporter(receiver.endpoint, interval_s=0.05)
    add_exporter(exporter)
    model = ScriptedModel(
        [
            FakeFailure(503, headers={"retry-after-ms": "1"}),
            FakeReply("yes", input_tokens=120, output_tokens=7, cache_read_tokens=20),
        ],
        default=FakeReply("no", input_tokens=50, output_tokens=3),
    )
    router = router_with(model)

    async def one_run(run_id: str, questions: int) -> None:
        with start_run("triage", run_id=run_id):
            for index in range(questions):
                with span(f"row {index}", "row"):
                    await router.complete("question", temperature=0.0, max_tokens=16)

    try:
        # The retried call runs alone, so that its reply is the scripted one.
        await one_run("run-0", 1)
        await asyncio.gather(one_run("run-a", 2), one_run("run-b", 2))
        assert exporter.flush()
    finally:
        remove_exporter(exporter)
        exporter.close()

    by_id = {received.span_id: received for received in receiver.spans}
    runs = [received for received in receiver.spans if received.name == "triage"]
    calls = [received for received in receiver.spans if received.name.startswith("chat ")]
    assert len(runs) == 3
    assert len(calls) == 5
    for call in calls:
        row = by_id[call.parent_span_id]
        run = by_id[row.parent_span_id]
        assert row.name.startswith("row ")
        assert run.name == "triage"
        assert call.trace_id == row.trace_id == run.trace_id
        assert call.attributes["trunkline.run_id"] == run.attributes["trunkline.run_id"]
    assert len({run.trace_id for run in runs}) == 3
    retried = next(call for call in calls if call.attributes["trunkline.attempts"] == 2)
    assert retried.attributes["gen_ai.operation.name"] == "chat"
    assert retried.attributes["gen_ai.provider.name"] == "trunkline.fake"
    assert retried.attributes["gen_ai.request.model"] == "d0-model"
    assert retried.attributes["gen_ai.usage.input_tokens"] == 120
    assert retried.attributes["gen_ai.usage.output_tokens"] == 7
    assert retried.attributes["trunkline.usage.cache_read_tokens"] == 20
    assert retried.attributes["gen_ai.request.temperature"] == 0.0
    assert retried.attributes["gen_ai.request.max_tokens"] == 16
    assert retried.attributes["gen_ai.response.finish_reasons"] == ["stop"]
    assert retried.attributes["trunkline.cost_usd"] == pytest.approx((120 * 1 + 7 * 2) / 1e6)
    attempts = [received for received in receiver.spans if received.parent_span_id == retried.span_id]
    assert sorted(received.attributes["trunkline.attempt.number"] for received in attempts) == [1, 2]
    failed = next(received for received in attempts if received.attributes["trunkline.attempt.number"] == 1)
    assert failed.attributes["http.response.status_code"] == 503
    assert failed.attributes["error.type"] == "overloaded"
    assert "question" not in str([received.attributes for received in receiver.spans])
    assert exporter.dropped == 0


async def test_collector_down_drops_and_counts(receiver: OtlpReceiver) -> None:
    receiver.fail = True
    exporter = OtlpExporter(receiver.endpoint, max_queue=5, batch_size=5, interval_s=0.05, timeout_s=0.5)
    add_exporter(exporter)
    router = router_with(ScriptedModel(default=FakeReply("x")))
    try:
        for _ in range(10):
            await router.complete("hi")
        exporter.flush(timeout_s=10)
    finally:
        remove_exporter(exporter)
        exporter.close()
    # Each call is a call span plus one attempt span: 20 spans in all.
    assert exporter.sent == 0
    assert exporter.dropped == 20
    assert len(exporter._queue) == 0  # noqa: SLF001


def test_endpoint_from_the_standard_variables(monkeypatch) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    assert otlp_endpoint() is None
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318/")
    assert otlp_endpoint() == "http://127.0.0.1:4318/v1/traces"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://127.0.0.1:9/traces")
    assert otlp_endpoint() == "http://127.0.0.1:9/traces"


def test_cli_run_sends_spans_to_the_configured_collector(receiver: OtlpReceiver, tmp_path) -> None:
    write_project(tmp_path, "is water wet,yes\nis fire cold,no\n")
    base = receiver.endpoint.removesuffix("/v1/traces")
    completed = run_trunkline(tmp_path, "run", "flow", "--json", env={"OTEL_EXPORTER_OTLP_ENDPOINT": base})
    assert completed.returncode == 0, completed.stderr
    run_id = json.loads(completed.stdout)["run_id"]
    names = sorted({received.name for received in receiver.spans})
    assert "yes-no" in names
    assert "chat scripted-model" in names
    runs = [received for received in receiver.spans if received.name == "yes-no"]
    assert runs[0].attributes["trunkline.run_id"] == run_id


def test_export_otlp_resends_a_stored_run(receiver: OtlpReceiver, tmp_path) -> None:
    write_project(tmp_path, "is water wet,yes\nis fire cold,no\n")
    completed = run_trunkline(tmp_path, "run", "flow", "--json")
    run_id = json.loads(completed.stdout)["run_id"]
    assert receiver.spans == []

    sent = run_trunkline(tmp_path, "export", "otlp", "--run", run_id, "--endpoint", receiver.endpoint)
    assert sent.returncode == 0, sent.stderr
    # One run span, two rows with two steps each, and two calls with one attempt each.
    assert len(receiver.spans) == 1 + 2 + 4 + 2 + 2
    assert sent.stdout.startswith(f"sent 11 spans of run {run_id}")
    assert len({received.trace_id for received in receiver.spans}) == 1

    receiver.fail = True
    failed = run_trunkline(tmp_path, "export", "otlp", "--run", run_id, "--endpoint", receiver.endpoint)
    assert failed.returncode == 2
    assert "not accepted" in failed.stderr
