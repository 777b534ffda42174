"""LLM-as-a-judge over scripted fake models, and its agreement with human labels."""

from __future__ import annotations

import json

import pytest

from trunkline.errors import CallError, ConfigError
from trunkline.evals import (
    Judge,
    JudgeError,
    Score,
    SyncScorer,
    agreement_from_pairs,
    measure_agreement,
)
from trunkline.evals.agreement import parse_label
from trunkline.providers.fake import FakeFailure, FakeReply, ScriptedModel
from trunkline.routing import CallResult
from trunkline.types.messages import Message
from unit.helpers import router_with

RUBRIC = "The answer names the capital city of the country asked about."


def verdict(value: str, reasoning: str = "It names Paris.") -> FakeReply:
    return FakeReply(json.dumps({"reasoning": reasoning, "verdict": value}))


def scored(value: int, reasoning: str = "Mostly right.") -> FakeReply:
    return FakeReply(json.dumps({"reasoning": reasoning, "score": value}))


async def test_pass_verdict_scores_one_with_reasoning(exported) -> None:
    model = ScriptedModel([verdict("pass")])
    judge = Judge(router_with(model), RUBRIC, context_columns=["question"])
    score = await judge.ascore("Paris", "Paris", {"question": "Capital of France?", "id": 7})
    assert score == Score(1.0, "It names Paris.")

    request = model.requests[0]
    assert request.temperature == 0.0
    system, user = request.messages[0], request.messages[1]
    assert system.role == "system"
    assert '"verdict" to "pass"' in system.content
    assert f"## Rubric\n{RUBRIC}" in user.content
    assert "## Context\nquestion: Capital of France?" in user.content
    assert "id: 7" not in user.content
    assert "## Expected output\nParis" in user.content
    assert user.content.endswith("## Output to grade\nParis")


async def test_fail_verdict_scores_zero(exported) -> None:
    judge = Judge(router_with(ScriptedModel([verdict("fail", "It names Lyon.")])), RUBRIC)
    assert await judge.ascore("Lyon", "Paris") == Score(0.0, "It names Lyon.")


async def test_no_expected_value_leaves_out_the_section(exported) -> None:
    model = ScriptedModel([verdict("pass")])
    await Judge(router_with(model), RUBRIC).ascore("Paris")
    content = model.requests[0].messages[1].content
    assert "## Expected output" not in content
    assert "## Context" not in content


@pytest.mark.parametrize(("value", "expected"), [(1, 0.0), (3, 0.5), (4, 0.75), (5, 1.0)])
async def test_scale_verdict_maps_to_zero_to_one(exported, value, expected) -> None:
    model = ScriptedModel([scored(value)])
    judge = Judge(router_with(model), RUBRIC, scale=5)
    assert await judge.ascore("Paris", "Paris") == Score(expected, "Mostly right.")
    instructions = model.requests[0].messages[0].content
    assert "from 1 (fails the rubric) to 5 (meets it fully)" in instructions


@pytest.mark.parametrize("reply", [scored(6), scored(0), scored(-1)])
async def test_scale_verdict_out_of_range_raises(exported, reply) -> None:
    model = ScriptedModel([reply, reply])
    judge = Judge(router_with(model, max_repairs=1), RUBRIC, scale=5)
    with pytest.raises(JudgeError) as caught:
        await judge.ascore("Paris", "Paris")
    message = str(caught.value)
    assert "judge on route 'main' returned no usable verdict after the route's repairs" in message
    assert f"(call {exported.calls[0].call_id})" in message
    assert isinstance(caught.value.__cause__, CallError)
    assert len(model.requests) == 2


async def test_unknown_verdict_raises(exported) -> None:
    judge = Judge(router_with(ScriptedModel([verdict("maybe")]), max_repairs=0), RUBRIC)
    with pytest.raises(JudgeError, match="returned no usable verdict"):
        await judge.ascore("Paris", "Paris")


@pytest.mark.parametrize(
    "text",
    ["It passes, clearly.", "", '{"reasoning": "fine"}', '{"reasoning": "fine", "verdict": "pass"'],
)
async def test_unparseable_reply_raises(exported, text) -> None:
    judge = Judge(router_with(ScriptedModel([FakeReply(text)]), max_repairs=0), RUBRIC)
    with pytest.raises(JudgeError, match="returned no usable verdict"):
        await judge.ascore("Paris", "Paris")


async def test_verdict_repaired_within_the_route_bound(exported) -> None:
    model = ScriptedModel([scored(9), scored(5, "Fixed.")])
    judge = Judge(router_with(model, max_repairs=1), RUBRIC, scale=5)
    assert await judge.ascore("Paris", "Paris") == Score(1.0, "Fixed.")
    assert "not usable" in model.requests[1].messages[-1].content


async def test_provider_failure_is_not_a_judge_error(exported) -> None:
    model = ScriptedModel([FakeFailure(status=400, body="bad request")])
    judge = Judge(router_with(model), RUBRIC)
    with pytest.raises(CallError) as caught:
        await judge.ascore("Paris", "Paris")
    assert not isinstance(caught.value, JudgeError)


async def test_missing_output_scores_zero_without_a_call(exported) -> None:
    model = ScriptedModel([])
    judge = Judge(router_with(model), RUBRIC)
    assert await judge.ascore(None, "Paris") == Score(0.0, "no output")
    assert model.requests == []


def test_judge_called_synchronously(exported) -> None:
    judge = Judge(router_with(ScriptedModel([verdict("pass"), verdict("fail")])), RUBRIC)
    assert judge("Paris", "Paris").value == 1.0
    assert judge("Lyon", "Paris").value == 0.0


async def test_judge_called_synchronously_inside_a_loop(exported) -> None:
    judge = Judge(router_with(ScriptedModel([verdict("pass")])), RUBRIC)
    with pytest.raises(RuntimeError, match="the judge scorer cannot be called synchronously"):
        judge("Paris", "Paris")


@pytest.mark.parametrize(
    ("rubric", "scale", "message"),
    [
        ("  ", None, "the judge needs a rubric"),
        (RUBRIC, 1, "scale must be a whole number of at least 2, got 1"),
        (RUBRIC, 2.5, "got 2.5"),
        (RUBRIC, True, "got True"),
    ],
)
def test_judge_rejects_bad_configuration(rubric, scale, message) -> None:
    with pytest.raises(ConfigError, match=message):
        Judge(router_with(ScriptedModel([])), rubric, scale=scale)


async def test_judge_rejects_router_output_of_another_type() -> None:
    class WrongRouter:
        async def complete(self, prompt, **options):  # noqa: ANN001, ANN003, ANN202
            return CallResult(output={"verdict": "pass"}, record=None)

    judge = Judge(WrongRouter(), RUBRIC)  # type: ignore[arg-type]
    with pytest.raises(JudgeError, match="expected a PassFailVerdict from the router, got dict"):
        await judge.ascore("Paris", "Paris")


def test_judge_messages_show_structured_values() -> None:
    judge = Judge(router_with(ScriptedModel([])), RUBRIC)
    messages = judge.messages({"city": "Paris"}, {"city": "Paris"}, {})
    assert all(isinstance(message, Message) for message in messages)
    assert messages[1].content.endswith('## Output to grade\n{"city": "Paris"}')


# Agreement with human labels


def test_agreement_counts_and_kappa() -> None:
    # 20 both pass, 5 judge pass and human fail, 10 judge fail and human pass, 15 both fail:
    # p_o = 0.7; judge passes 0.5, human passes 0.6, so p_e = 0.5 * 0.6 + 0.5 * 0.4 = 0.5.
    pairs = [(True, True)] * 20 + [(True, False)] * 5 + [(False, True)] * 10 + [(False, False)] * 15
    agreement = agreement_from_pairs(pairs)
    assert agreement.rows == 50
    assert agreement.both_pass == 20
    assert agreement.judge_pass_human_fail == 5
    assert agreement.judge_fail_human_pass == 10
    assert agreement.both_fail == 15
    assert agreement.rate == pytest.approx(0.7)
    assert agreement.kappa == pytest.approx(0.4)


def test_kappa_for_full_chance_and_opposite_agreement() -> None:
    full = agreement_from_pairs([(True, True), (False, False)] * 3)
    assert full.rate == 1.0
    assert full.kappa == pytest.approx(1.0)
    chance = agreement_from_pairs([(True, True), (True, False), (False, True), (False, False)])
    assert chance.rate == 0.5
    assert chance.kappa == pytest.approx(0.0)
    opposite = agreement_from_pairs([(True, False), (False, True)])
    assert opposite.rate == 0.0
    assert opposite.kappa == pytest.approx(-1.0)


def test_kappa_undefined_when_both_give_one_label() -> None:
    agreement = agreement_from_pairs([(True, True)] * 4)
    assert agreement.rate == 1.0
    assert agreement.kappa is None


def test_agreement_needs_rows() -> None:
    with pytest.raises(ConfigError, match="at least one labelled row"):
        agreement_from_pairs([])


@pytest.mark.parametrize(
    ("value", "passed"),
    [
        (True, True),
        (False, False),
        (1, True),
        (0, False),
        ("pass", True),
        (" FAIL ", False),
        ("Yes", True),
        ("no", False),
        ("true", True),
        ("0", False),
    ],
)
def test_parse_label(value, passed) -> None:
    assert parse_label(value, row_index=0) is passed


@pytest.mark.parametrize("value", ["maybe", 2, 0.5, None, ""])
def test_parse_label_rejects_other_values(value) -> None:
    with pytest.raises(ConfigError, match="row 3 has label"):
        parse_label(value, row_index=3)


def grade_by_output(request):  # noqa: ANN001, ANN201
    """Pass outputs that contain "Paris" and fail the rest, whatever order the rows come in."""
    graded = request.messages[1].content.rsplit("## Output to grade\n", 1)[1]
    return verdict("pass" if "Paris" in graded else "fail")


async def test_measure_agreement_with_a_scripted_judge(exported) -> None:
    rows = [
        {"output": "Paris", "expected": "Paris", "label": "pass"},
        {"output": "Paris, France", "expected": "Paris", "label": "pass"},
        {"output": "Lyon", "expected": "Paris", "label": "fail"},
        {"output": "Paris or Lyon", "expected": "Paris", "label": "fail"},
        {"output": "Marseille", "expected": "Paris", "label": "pass"},
    ]
    model = ScriptedModel(default=grade_by_output)
    agreement = await measure_agreement(Judge(router_with(model), RUBRIC), rows, concurrency=2)
    assert len(model.requests) == 5
    assert agreement.rows == 5
    assert agreement.both_pass == 2
    assert agreement.both_fail == 1
    assert agreement.judge_pass_human_fail == 1
    assert agreement.judge_fail_human_pass == 1
    assert agreement.rate == pytest.approx(0.6)
    # Judge passes 3/5 and human passes 3/5: p_e = 0.36 + 0.16 = 0.52.
    assert agreement.kappa == pytest.approx((0.6 - 0.52) / 0.48)


class LengthRatio(SyncScorer):
    name = "length_ratio"

    def __call__(self, output, expected=None, row=None):  # noqa: ANN001, ANN204
        return Score(min(len(output), len(expected)) / max(len(output), len(expected)))


async def test_measure_agreement_threshold_and_keys() -> None:
    rows = [
        {"answer": "abcd", "reference": "abcd", "human": True},
        {"answer": "ab", "reference": "abcd", "human": False},
        {"answer": "abc", "reference": "abcd", "human": True},
    ]
    options = {"output_key": "answer", "expected_key": "reference", "label_key": "human"}
    strict = await measure_agreement(LengthRatio(), rows, threshold=0.8, **options)
    assert (strict.both_pass, strict.both_fail, strict.judge_fail_human_pass) == (1, 1, 1)
    lenient = await measure_agreement(LengthRatio(), rows, threshold=0.5, **options)
    assert (lenient.both_pass, lenient.judge_pass_human_fail) == (2, 1)


async def test_measure_agreement_raises_the_judge_error(exported) -> None:
    rows = [{"output": "Paris", "label": "pass"}, {"output": "Lyon", "label": "fail"}]
    model = ScriptedModel(default=FakeReply("no verdict here"))
    judge = Judge(router_with(model, max_repairs=0), RUBRIC)
    with pytest.raises(JudgeError, match="returned no usable verdict"):
        await measure_agreement(judge, rows)


async def test_measure_agreement_checks_labels_before_calling(exported) -> None:
    model = ScriptedModel(default=verdict("pass"))
    judge = Judge(router_with(model), RUBRIC)
    with pytest.raises(ConfigError, match="row 1 has label 'perhaps'"):
        await measure_agreement(
            judge, [{"output": "a", "label": "pass"}, {"output": "b", "label": "perhaps"}]
        )
    with pytest.raises(ConfigError, match="row 0 has no 'label' column"):
        await measure_agreement(judge, [{"output": "a"}])
    assert model.requests == []


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "at least one labelled row"),
        ({"threshold": 1.5}, "threshold must be between 0 and 1"),
        ({"concurrency": 0}, "concurrency must be at least 1"),
    ],
)
async def test_measure_agreement_rejects_bad_input(options, message) -> None:
    rows = [] if not options else [{"output": "a", "label": "pass"}]
    with pytest.raises(ConfigError, match=message):
        await measure_agreement(LengthRatio(), rows, **options)
