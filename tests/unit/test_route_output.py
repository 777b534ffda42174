"""Structured output: native and prompted modes, the unusable-output kinds, bounded repairs."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from trunkline.config import Settings
from trunkline.errors import CallError, ErrorKind, OutputInvalid
from trunkline.providers.fake import FakeReply, ScriptedModel
from trunkline.routing import Router
from trunkline.types.messages import ToolCall
from unit.helpers import router_with


class Verdict(BaseModel):
    label: str
    confidence: float


GOOD = '{"label": "spam", "confidence": 0.9}'


@pytest.mark.parametrize(
    ("reply", "kind"),
    [
        (FakeReply(""), ErrorKind.EMPTY_OUTPUT),
        (FakeReply("   \n"), ErrorKind.EMPTY_OUTPUT),
        (FakeReply('{"label": "sp', finish_reason="length"), ErrorKind.OUTPUT_TRUNCATED),
        (FakeReply('{"label": 3'), ErrorKind.INVALID_OUTPUT),
        (FakeReply('{"label": "spam"}'), ErrorKind.INVALID_OUTPUT),
    ],
)
async def test_each_unusable_output_has_its_kind(exported, reply, kind) -> None:
    model = ScriptedModel([reply])
    with pytest.raises(OutputInvalid) as caught:
        await router_with(model, max_repairs=0).complete("classify", output=Verdict)
    assert caught.value.kind == kind
    record = exported.calls[0]
    assert record.error_kind == kind
    assert record.validation.valid is False
    assert record.validation.error.startswith(kind.value)


async def test_unusable_output_is_repaired_within_the_bound(exported) -> None:
    model = ScriptedModel([FakeReply(""), FakeReply('{"label": "x"}'), FakeReply(GOOD)])
    result = await router_with(model, max_repairs=2).complete("classify", output=Verdict)
    assert result.output == Verdict(label="spam", confidence=0.9)
    assert result.record.validation.repairs == 2
    assert len(result.record.attempts) == 3
    assert "empty" in model.requests[1].messages[-1].content


async def test_repairs_are_charged(exported) -> None:
    model = ScriptedModel(
        [FakeReply("{}", input_tokens=100, output_tokens=10), FakeReply(GOOD, input_tokens=200, output_tokens=20)]
    )
    record = (await router_with(model).complete("classify", output=Verdict)).record
    assert record.usage.input_tokens == 300
    assert record.cost.total_usd == pytest.approx((300 * 1.0 + 30 * 2.0) / 1_000_000)


async def test_tool_call_arguments_that_are_not_json(exported) -> None:
    class ToolReply(ScriptedModel):
        async def complete(self, request):  # noqa: ANN001, ANN202
            response = await super().complete(request)
            arguments = '{"city": "Par' if len(self.requests) == 1 else '{"city": "Paris"}'
            call = ToolCall(id="c1", name="weather", arguments=arguments)
            return response.model_copy(update={"tool_calls": (call,), "finish_reason": "tool_calls"})

    model = ToolReply(default=FakeReply(""))
    result = await router_with(model, max_repairs=1).complete("weather?")
    assert result.record.tool_calls[0].arguments == '{"city": "Paris"}'
    assert "not valid JSON" in model.requests[1].messages[-1].content

    broken = ToolReply(default=FakeReply(""))
    broken_router = router_with(broken, max_repairs=0)
    with pytest.raises(OutputInvalid) as caught:
        await broken_router.complete("weather?")
    assert caught.value.kind == ErrorKind.INVALID_TOOL_ARGUMENTS


def prompted_router(mode: str, model: ScriptedModel) -> Router:
    settings = Settings.model_validate(
        {
            "deployments": {"d0": {"provider": "fake", "model": "m", "structured_output": mode}},
            "routes": {"main": {"deployments": ["d0"]}},
            "default_route": "main",
            "prices": {"m": {"input_per_mtok": 0, "output_per_mtok": 0}},
        }
    )
    return Router(settings, providers={"d0": model})


@pytest.mark.parametrize("mode", ["instructions", "json_object"])
async def test_schema_in_the_prompt_where_no_native_mode(exported, mode) -> None:
    model = ScriptedModel([FakeReply(f"```json\n{GOOD}\n```")])
    result = await prompted_router(mode, model).complete("classify", output=Verdict)
    assert result.output.label == "spam"
    sent = model.requests[0]
    assert sent.output_schema is None
    assert '"confidence"' in sent.messages[-1].content
    if mode == "json_object":
        assert sent.extra["response_format"] == {"type": "json_object"}


async def test_native_mode_sends_the_schema(exported) -> None:
    model = ScriptedModel([FakeReply(GOOD)])
    await prompted_router("native", model).complete("classify", output=Verdict)
    assert model.requests[0].output_schema == Verdict.model_json_schema()
    assert len(model.requests[0].messages) == 1


async def test_attempts_say_why_each_output_was_repaired(exported) -> None:
    model = ScriptedModel([FakeReply(""), FakeReply('{"label": "x"}'), FakeReply(GOOD)])
    record = (await router_with(model, max_repairs=2).complete("classify", output=Verdict)).record
    kinds = [attempt.error_kind for attempt in record.attempts]
    assert kinds == [ErrorKind.EMPTY_OUTPUT, ErrorKind.INVALID_OUTPUT, None]
    assert [attempt.outcome for attempt in record.attempts] == ["error", "error", "ok"]
    assert record.attempts[0].wait_reason == "repair"


async def test_output_kept_when_every_deployment_gave_invalid_output(exported) -> None:
    first = ScriptedModel([FakeReply("not json")])
    second = ScriptedModel([FakeReply("still not json")])
    with pytest.raises(CallError):
        await router_with(first, second, max_repairs=0).complete("classify", output=Verdict)
    record = exported.calls[0]
    assert record.output_text == "still not json"
    assert record.attempts[-1].wait_reason == "repairs spent (0)"


@pytest.mark.parametrize(
    "text",
    [
        f"```json\n{GOOD}\n```",
        f"```json {GOOD}```",
        f"```json-object\n{GOOD}\n```",
        f"Here is the result:\n```\n{GOOD}\n```\nHope it helps.",
        f"Sure! {GOOD}",
        f"  {GOOD}\n",
    ],
)
async def test_json_inside_prose_or_fences_is_accepted(exported, text) -> None:
    model = ScriptedModel([FakeReply(text)])
    result = await router_with(model, max_repairs=0).complete("classify", output=Verdict)
    assert result.output == Verdict(label="spam", confidence=0.9)


async def test_embedded_json_schema_mismatch(exported) -> None:
    model = ScriptedModel([FakeReply('Result: {"label": "spam"}')])
    with pytest.raises(OutputInvalid) as caught:
        await router_with(model, max_repairs=0).complete("classify", output=Verdict)
    assert caught.value.kind == ErrorKind.INVALID_OUTPUT
    assert "confidence" in str(caught.value)


async def test_raw_newline_inside_json_string_is_accepted(exported) -> None:
    schema = {"type": "object", "properties": {"note": {"type": "string"}}, "required": ["note"]}
    model = ScriptedModel([FakeReply('{"note": "line one\nline two\tend"}')])
    result = await router_with(model, max_repairs=0).complete("write", output=schema)
    assert result.output == {"note": "line one\nline two\tend"}


class Note(BaseModel):
    note: str


async def test_raw_newline_accepted_by_model(exported) -> None:
    model = ScriptedModel([FakeReply('{"note": "line one\nline two"}')])
    result = await router_with(model, max_repairs=0).complete("write", output=Note)
    assert result.output == Note(note="line one\nline two")


async def test_raw_newline_model_mismatch_reported(exported) -> None:
    model = ScriptedModel([FakeReply('{"note": 3, "x": "a\nb"}')])
    with pytest.raises(OutputInvalid, match="note: Input should be a valid string"):
        await router_with(model, max_repairs=0).complete("write", output=Note)
