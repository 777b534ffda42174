"""The Router over scripted fake models: retries, fallbacks, validation, records."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import BaseModel

from trunkline.errors import AllDeploymentsFailed, ErrorKind, OutputInvalid, ProviderError
from trunkline.providers.fake import FakeFailure, FakeReply, ScriptedModel
from trunkline.routing import Router
from trunkline.tracing import session, start_run
from unit.helpers import fake_settings, router_with


class Verdict(BaseModel):
    label: str
    confidence: float


async def test_success_records_usage_and_cost(exported) -> None:
    model = ScriptedModel([FakeReply("hello", input_tokens=1000, output_tokens=500)])
    result = await router_with(model).complete("hi")
    record = result.record
    assert result.text == "hello"
    assert record.outcome == "ok"
    assert record.usage.input_tokens == 1000
    assert record.usage.output_tokens == 500
    assert record.cost.total_usd == pytest.approx(0.002)
    assert record.cost.source == "config"
    assert exported.calls == [record]


async def test_retry_after_is_honoured(exported) -> None:
    model = ScriptedModel(
        [FakeFailure(429, headers={"retry-after-ms": "20"}), FakeReply("ok")]
    )
    result = await router_with(model).complete("hi")
    first, second = result.record.attempts
    assert first.error_kind == ErrorKind.RATE_LIMITED
    assert first.status_code == 429
    assert first.wait_s == pytest.approx(0.02)
    assert first.wait_reason == "retry-after"
    assert second.outcome == "ok"
    assert result.record.retries == 1


async def test_retry_after_over_cap_stops(exported) -> None:
    model = ScriptedModel([FakeFailure(429, headers={"retry-after": "120"}), FakeReply("late")])
    with pytest.raises(ProviderError) as caught:
        await router_with(model, retry_after_max_s=5).complete("hi")
    assert caught.value.kind == ErrorKind.RATE_LIMITED
    assert len(model.requests) == 1
    assert exported.calls[0].outcome == "error"


async def test_bad_request_is_sent_once(exported) -> None:
    model = ScriptedModel([FakeFailure(400, body="bad field"), FakeReply("never")])
    with pytest.raises(ProviderError):
        await router_with(model).complete("hi")
    assert len(model.requests) == 1
    assert exported.calls[0].error_kind == ErrorKind.BAD_REQUEST


async def test_fallback_after_attempts_spent(exported) -> None:
    first = ScriptedModel([FakeFailure(503)] * 2)
    second = ScriptedModel([FakeReply("from second")])
    result = await router_with(first, second, max_attempts=2).complete("hi")
    record = result.record
    assert result.text == "from second"
    assert record.deployment == "d1"
    assert [hop.deployment for hop in record.fallbacks] == ["d0"]
    assert record.fallbacks[0].reason == ErrorKind.OVERLOADED
    assert len(record.attempts) == 3
    assert record.retries == 1


async def test_all_deployments_failed_keeps_causes(exported) -> None:
    first = ScriptedModel([FakeFailure(500)])
    second = ScriptedModel([FakeFailure(502)])
    with pytest.raises(AllDeploymentsFailed) as caught:
        await router_with(first, second, max_attempts=1).complete("hi")
    assert len(caught.value.causes) == 2
    assert caught.value.kind == ErrorKind.SERVER_ERROR
    assert caught.value.record.outcome == "error"


async def test_attempt_timeout(exported) -> None:
    model = ScriptedModel([FakeReply("slow", latency_s=2.0), FakeReply("fast")])
    result = await router_with(model, timeout_s=0.05).complete("hi")
    assert result.record.attempts[0].error_kind == ErrorKind.TIMEOUT
    assert result.text == "fast"


async def test_invalid_output_repaired(exported) -> None:
    model = ScriptedModel(
        [FakeReply('{"label": "spam"}'), FakeReply('{"label": "spam", "confidence": 0.9}')]
    )
    result = await router_with(model).complete("classify", output=Verdict)
    assert result.output == Verdict(label="spam", confidence=0.9)
    assert result.record.validation.repairs == 1
    assert result.record.validation.valid
    repair_prompt = model.requests[1].messages[-1].content
    assert "confidence" in repair_prompt


async def test_invalid_output_after_repairs_fails(exported) -> None:
    model = ScriptedModel([FakeReply("not json")] * 2)
    with pytest.raises(OutputInvalid):
        await router_with(model, max_repairs=1).complete("classify", output=Verdict)
    record = exported.calls[0]
    assert record.error_kind == ErrorKind.INVALID_OUTPUT
    assert record.output_text == "not json"
    assert record.validation.valid is False


async def test_json_schema_output(exported) -> None:
    schema = {
        "type": "object",
        "properties": {"intent": {"enum": ["a", "b"]}},
        "required": ["intent"],
    }
    model = ScriptedModel([FakeReply('{"intent": "c"}'), FakeReply('{"intent": "b"}')])
    result = await router_with(model).complete("pick", output=schema)
    assert result.output == {"intent": "b"}
    assert model.requests[0].output_schema == schema


async def test_length_cut_output_is_invalid(exported) -> None:
    model = ScriptedModel([FakeReply('{"label": "sp', finish_reason="length")])
    with pytest.raises(OutputInvalid):
        await router_with(model, max_repairs=0).complete("x", output=Verdict)
    assert "max_tokens" in exported.calls[0].error_message


async def test_unknown_price_is_null(exported) -> None:
    settings = fake_settings("d0")
    settings.prices.clear()
    router = Router(settings, providers={"d0": ScriptedModel([FakeReply("x")])})
    record = (await router.complete("hi")).record
    assert record.cost.total_usd is None
    assert record.cost.price_missing


async def test_genai_prices_used(exported) -> None:
    settings = fake_settings("d0")
    settings.prices.clear()
    settings.deployments["d0"] = settings.deployments["d0"].model_copy(update={"model": "gpt-4o-mini"})
    model = ScriptedModel([FakeReply("x", input_tokens=1_000_000, output_tokens=0, model="gpt-4o-mini")])
    record = (await Router(settings, providers={"d0": model}).complete("hi")).record
    assert record.cost.total_usd == pytest.approx(0.15)
    assert record.cost.source.startswith("genai-prices")


async def test_run_and_session_ids_follow_tasks(exported) -> None:
    model = ScriptedModel(default=FakeReply("x", latency_s=0.01))
    router = router_with(model)

    async def one_run(name: str) -> None:
        with start_run(name, run_id=name):
            await asyncio.gather(router.complete("a"), router.complete("b"))

    with session("s1", team="search"):
        await asyncio.gather(one_run("r1"), one_run("r2"))
    by_run: dict[str, set[str]] = {}
    for record in exported.calls:
        by_run.setdefault(record.run_id, set()).add(record.trace_id)
    assert set(by_run) == {"r1", "r2"}
    assert all(len(traces) == 1 for traces in by_run.values())
    assert by_run["r1"] != by_run["r2"]
    assert {record.session_id for record in exported.calls} == {"s1"}
    assert all(record.tags == {"team": "search"} for record in exported.calls)
    run_spans = {span.span_id: span for span in exported.spans if span.kind == "run"}
    assert all(record.parent_span_id in run_spans for record in exported.calls)


async def test_cancelled_call_is_recorded(exported) -> None:
    model = ScriptedModel([FakeReply("slow", latency_s=5.0)])
    task = asyncio.create_task(router_with(model).complete("hi"))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert exported.calls[0].error_kind == ErrorKind.CANCELLED


def test_complete_sync() -> None:
    model = ScriptedModel([FakeReply("sync")])
    assert router_with(model).complete_sync("hi").text == "sync"


async def test_record_and_span_share_one_trace(exported) -> None:
    model = ScriptedModel([FakeReply("x")])
    record = (await router_with(model).complete("hi")).record
    [call_span] = [span for span in exported.spans if span.kind == "call"]
    assert call_span.trace_id == record.trace_id
    assert call_span.span_id == record.span_id
