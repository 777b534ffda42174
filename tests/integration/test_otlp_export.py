"""Spans and GenAI attributes arrive exactly at a real OTLP/HTTP receiver."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest

from integration.cli import run_trunkline
from integration.test_cli import write_project
from otlp_receiver import GrpcOtlpReceiver, OtlpReceiver
from trunkline.config import Settings
from trunkline.errors import ConfigError
from trunkline.providers.fake import FakeFailure, FakeReply, ScriptedModel
from trunkline.redaction import register_secret
from trunkline.tracing import add_exporter, remove_exporter, span, start_run
from trunkline.tracing.otlp import OtlpExporter, exporter_from_settings, otlp_endpoint, otlp_headers
from unit.helpers import router_with

OTEL_VARIABLES = (
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    "OTEL_SERVICE_NAME",
    "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT",
)


@pytest.fixture(autouse=True)
def clean_otel_environment(monkeypatch) -> None:  # noqa: ANN001
    for name in OTEL_VARIABLES:
        monkeypatch.delenv(name, raising=False)


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
    assert retried.name == "chat d0-model"
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
    configured = Settings.model_validate({"tracing": {"otlp_endpoint": "http://127.0.0.1:7/v1/traces"}})
    assert otlp_endpoint() is None
    assert otlp_endpoint(configured) == "http://127.0.0.1:7/v1/traces"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318/")
    assert otlp_endpoint(configured) == "http://127.0.0.1:4318/v1/traces"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    # Over gRPC the general variable is the collector's address as it is.
    assert otlp_endpoint() == "http://127.0.0.1:4318/"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://127.0.0.1:9/traces")
    assert otlp_endpoint() == "http://127.0.0.1:9/traces"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
    with pytest.raises(ConfigError, match="http/json.*http/protobuf, grpc"):
        exporter_from_settings(configured)


def test_headers_from_the_configuration_and_the_standard_variable(monkeypatch) -> None:
    configured = Settings.model_validate({"tracing": {"otlp_headers": {"x-team": "search", "x-key": "a"}}})
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-key=b%20c, x-other=d")
    assert otlp_headers(configured) == {"x-team": "search", "x-key": "b c", "x-other": "d"}
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "no-separator")
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        otlp_headers(configured)


async def test_message_contents_only_when_asked_and_redacted(receiver: OtlpReceiver, monkeypatch) -> None:
    secret = "tl-content-secret-0123456789"
    register_secret(secret)
    settings = Settings.model_validate({"tracing": {"otlp_endpoint": receiver.endpoint}})
    router = router_with(ScriptedModel(default=FakeReply(f"the key is {secret}")))
    for capture in ("false", "true"):
        monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", capture)
        exporter = exporter_from_settings(settings)
        assert exporter is not None
        add_exporter(exporter)
        try:
            await router.complete([{"role": "system", "content": "Be brief."}, {"role": "user", "content": f"hi {secret}"}])
            assert exporter.flush()
        finally:
            remove_exporter(exporter)
            exporter.close()
    plain, captured = [received for received in receiver.spans if received.name.startswith("chat ")]
    assert "gen_ai.input.messages" not in plain.attributes
    assert "gen_ai.output.messages" not in plain.attributes
    assert json.loads(captured.attributes["gen_ai.input.messages"]) == [
        {"role": "system", "parts": [{"type": "text", "content": "Be brief."}]},
        {"role": "user", "parts": [{"type": "text", "content": "hi [REDACTED]"}]},
    ]
    assert json.loads(captured.attributes["gen_ai.output.messages"]) == [
        {"role": "assistant", "parts": [{"type": "text", "content": "the key is [REDACTED]"}], "finish_reason": "stop"}
    ]
    assert secret not in str([received.attributes for received in receiver.spans])


async def test_passing_collector_failures_are_retried(receiver: OtlpReceiver, monkeypatch) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "checkout")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=acme")
    receiver.fail_next = 2
    exporter = exporter_from_settings(Settings(), receiver.endpoint)
    assert exporter is not None
    add_exporter(exporter)
    try:
        await router_with(ScriptedModel(default=FakeReply("x"))).complete("hi")
        assert exporter.flush()
    finally:
        remove_exporter(exporter)
        exporter.close()
    assert receiver.requests == 3
    assert exporter.sent == 2
    assert exporter.dropped == 0
    assert receiver.resource["service.name"] == "checkout"
    assert receiver.headers["x-tenant"] == "acme"


async def test_spans_arrive_over_grpc(monkeypatch) -> None:
    pytest.importorskip("grpc", reason="grpcio is not installed; pip install 'trunkline[grpc]'")
    receiver = GrpcOtlpReceiver()
    receiver.start()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=acme")
    exporter = exporter_from_settings(Settings())
    assert exporter is not None
    assert exporter.protocol == "grpc"

    add_exporter(exporter)
    router = router_with(
        ScriptedModel([FakeFailure(429), FakeReply("yes", input_tokens=11, output_tokens=2)])
    )
    try:
        with start_run("grpc-run", run_id="grpc-run"):
            await router.complete("hi", max_tokens=8)
        assert exporter.flush()
    finally:
        remove_exporter(exporter)
        exporter.close()
        receiver.stop()

    by_name = {received.name: received for received in receiver.spans}
    run = by_name["grpc-run"]
    call = next(received for received in receiver.spans if received.name.startswith("chat "))
    assert call.parent_span_id == run.span_id
    assert call.attributes["gen_ai.usage.input_tokens"] == 11
    assert call.attributes["gen_ai.usage.output_tokens"] == 2
    attempts = [received for received in receiver.spans if received.parent_span_id == call.span_id]
    assert [received.attributes.get("error.type") for received in attempts] == ["rate_limited", None]
    assert receiver.metadata["x-tenant"] == "acme"
    assert exporter.dropped == 0


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
    # A collector that is down is a failure to retry later, not a usage error.
    assert failed.returncode == 1
    assert "11 were not accepted; check that the collector is running" in failed.stderr
    assert "trunkline export otlp --run" not in failed.stderr


def test_endpoint_forms(monkeypatch) -> None:
    bare = OtlpExporter("http://127.0.0.1:4318")
    bare.close()
    # A collector's address alone gets the OTLP/HTTP traces path.
    assert bare.endpoint == "http://127.0.0.1:4318/v1/traces"
    for wrong in ("not a url", "ftp://127.0.0.1:4318/v1/traces"):
        with pytest.raises(ConfigError, match="not an http:// or https:// URL"):
            OtlpExporter(wrong)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "127.0.0.1:4318")
    with pytest.raises(ConfigError, match="OTEL_EXPORTER_OTLP_ENDPOINT='127.0.0.1:4318' has no http"):
        otlp_endpoint()
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "bogus")
    with pytest.raises(ConfigError, match="OTEL_EXPORTER_OTLP_TRACES_PROTOCOL='bogus'"):
        exporter_from_settings(Settings(), "http://127.0.0.1:4318")


def test_malformed_header_entry_is_not_echoed(monkeypatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "x-team=a,x-key:hcSecretTeamKey0123")
    with pytest.raises(ConfigError) as caught:
        otlp_headers()
    message = str(caught.value)
    assert "entry 2 of OTEL_EXPORTER_OTLP_TRACES_HEADERS" in message
    assert "hcSecretTeamKey0123" not in message


async def test_silent_collector_costs_a_bounded_close(caplog) -> None:
    """A collector that accepts connections and never replies: close gives up and names the run."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    exporter = OtlpExporter(f"http://127.0.0.1:{port}/v1/traces", timeout_s=30, interval_s=0.05)
    add_exporter(exporter)
    try:
        with start_run("silent", run_id="run-silent"):
            await router_with(ScriptedModel(default=FakeReply("x"))).complete("hi")
    finally:
        remove_exporter(exporter)
        with caplog.at_level("WARNING", logger="trunkline.tracing.otlp"):
            exporter.close(timeout_s=0.5)
        listener.close()
    # The run span, the call span and its attempt span.
    assert exporter.dropped == 3
    assert exporter.sent == 0
    warning = caplog.records[-1].getMessage()
    assert "3 spans were not delivered" in warning
    assert "trunkline export otlp --run run-silent" in warning
