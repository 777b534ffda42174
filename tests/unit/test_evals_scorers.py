"""Scorers without a model: Score, exact, normalised, fuzzy, JSON Schema, numeric, functions,
and the registry by name."""

from __future__ import annotations

import asyncio
import math
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from trunkline.errors import ConfigError
from trunkline.evals import (
    ExactMatch,
    FunctionScorer,
    FuzzyMatch,
    JsonSchemaValid,
    NormalisedMatch,
    NumericCloseness,
    Score,
    Scorer,
    ScoringError,
    SyncScorer,
    build_scorer,
    normalise_text,
    register_scorer,
    registry,
    scorer_names,
)

# Score


def test_score_stores_value_as_float() -> None:
    score = Score(1)
    assert score.value == 1.0
    assert isinstance(score.value, float)
    assert score.explanation is None


@pytest.mark.parametrize("value", [-0.01, 1.01, math.nan, math.inf])
def test_score_rejects_values_outside_zero_to_one(value) -> None:
    with pytest.raises(ValueError, match="a score's value must be between 0 and 1"):
        Score(value)


@pytest.mark.parametrize("value", [True, "0.5", None])
def test_score_rejects_values_that_are_not_numbers(value) -> None:
    with pytest.raises(TypeError, match="a score's value must be a number"):
        Score(value)


def test_score_accepts_fraction() -> None:
    assert Score(Fraction(1, 4)).value == 0.25


def test_score_is_frozen() -> None:
    score = Score(0.5)
    with pytest.raises(AttributeError):
        score.value = 1.0  # type: ignore[misc]


# Exact match


def test_exact_match_and_mismatch() -> None:
    exact = ExactMatch()
    assert exact("Paris", "Paris") == Score(1.0)
    miss = exact("Paris", "paris")
    assert miss.value == 0.0
    assert miss.explanation == "output 'Paris' != expected 'paris'"


def test_exact_compares_text_forms() -> None:
    exact = ExactMatch()
    assert exact(3, "3").value == 1.0
    assert exact(3.0, "3").value == 0.0
    assert exact(True, "true").value == 1.0
    assert exact({"b": 1, "a": 2}, '{"a": 2, "b": 1}').value == 1.0
    assert exact({"a": 1}, {"a": 1}).value == 1.0


def test_exact_empty_strings() -> None:
    exact = ExactMatch()
    assert exact("", "").value == 1.0
    assert exact("", "a").value == 0.0
    assert exact(" ", "").value == 0.0


def test_exact_none_output_scores_zero() -> None:
    score = ExactMatch()(None, "Paris")
    assert score == Score(0.0, "no output")


@pytest.mark.parametrize(
    "scorer", [ExactMatch(), NormalisedMatch(), FuzzyMatch(), NumericCloseness()]
)
def test_comparing_scorers_need_expected(scorer) -> None:
    message = f"the {scorer.name} scorer compares with an expected value"
    with pytest.raises(ScoringError, match=message):
        scorer("Paris", None)


def test_exact_explanation_cuts_long_values() -> None:
    score = ExactMatch()("x" * 500, "y")
    assert score.value == 0.0
    assert len(score.explanation) < 200
    assert "..." in score.explanation


# Normalised match


@pytest.mark.parametrize(
    ("text", "normalised"),
    [
        ("Paris", "paris"),
        ("  Paris \n", "paris"),
        ("New   York\t\nCity", "new york city"),
        ("Yes.", "yes"),
        ("Yes. !", "yes"),
        ("really?!...", "really"),
        ("Straße", "strasse"),
        ("f(x).", "f(x)"),
        ('"quoted."', '"quoted."'),
        ("a.b", "a.b"),
        ("...leading", "...leading"),
        ("?", ""),
        ("", ""),
    ],
)
def test_normalise_text(text, normalised) -> None:
    assert normalise_text(text) == normalised


def test_normalised_match_ignores_case_and_spacing() -> None:
    normalised = NormalisedMatch()
    assert normalised("  PARIS.  ", "paris").value == 1.0
    assert normalised("new\n york", "New York").value == 1.0


def test_normalised_match_keeps_inner_text() -> None:
    normalised = NormalisedMatch()
    assert normalised("f(x", "f(x)").value == 0.0
    miss = normalised("York New", "new york.")
    assert miss.value == 0.0
    assert miss.explanation == "normalised output 'york new' != normalised expected 'new york'"


def test_normalised_match_edge_cases() -> None:
    normalised = NormalisedMatch()
    assert normalised("", "").value == 1.0
    assert normalised("  ", "").value == 1.0
    assert normalised(None, "").value == 0.0
    assert normalised(42, "42.").value == 1.0


# Fuzzy match


def test_fuzzy_is_one_for_normalised_equal_texts() -> None:
    assert FuzzyMatch()("  Paris. ", "paris") == Score(1.0)


def test_fuzzy_keeps_word_order() -> None:
    score = FuzzyMatch()("dog bites man", "man bites dog")
    assert score.value == pytest.approx(7 / 13)


def test_fuzzy_partial_similarity() -> None:
    # "kitten" and "sitting": Indel distance 5 over 13 characters.
    assert FuzzyMatch()("kitten", "sitting").value == pytest.approx(8 / 13)


def test_fuzzy_empty_and_missing_outputs() -> None:
    fuzzy = FuzzyMatch()
    assert fuzzy("", "").value == 1.0
    assert fuzzy("", "something").value == 0.0
    assert fuzzy(None, "something") == Score(0.0, "no output")


@given(st.text(max_size=40), st.text(max_size=40))
def test_fuzzy_is_bounded_and_symmetric(left, right) -> None:
    fuzzy = FuzzyMatch()
    forward = fuzzy(left, right).value
    assert 0.0 <= forward <= 1.0
    assert forward == pytest.approx(fuzzy(right, left).value)


# JSON Schema validity

SCHEMA = {
    "type": "object",
    "properties": {"intent": {"type": "string"}, "confidence": {"type": "number", "maximum": 1}},
    "required": ["intent"],
}


class Intent(BaseModel):
    intent: str


def test_json_schema_valid_string_output() -> None:
    assert JsonSchemaValid(SCHEMA)('{"intent": "refund", "confidence": 0.9}') == Score(1.0)


def test_json_schema_output_that_is_not_json() -> None:
    score = JsonSchemaValid(SCHEMA)('{"intent": ')
    assert score.value == 0.0
    assert score.explanation.startswith("output is not valid JSON:")


def test_json_schema_reports_the_validation_error() -> None:
    scorer = JsonSchemaValid(SCHEMA)
    missing = scorer('{"confidence": 0.5}')
    assert missing.value == 0.0
    assert missing.explanation == "output is invalid at (root): 'intent' is a required property"
    too_big = scorer({"intent": "refund", "confidence": 3})
    assert too_big.value == 0.0
    assert too_big.explanation == (
        "output is invalid at /confidence: 3 is greater than the maximum of 1"
    )


def test_json_schema_checks_values_that_are_not_strings() -> None:
    scorer = JsonSchemaValid(SCHEMA)
    assert scorer({"intent": "refund"}).value == 1.0
    assert scorer(["intent"]).value == 0.0
    assert scorer(7).value == 0.0
    assert scorer(Intent(intent="refund")).value == 1.0


def test_json_schema_empty_and_missing_outputs() -> None:
    scorer = JsonSchemaValid(SCHEMA)
    assert scorer("").value == 0.0
    assert scorer("").explanation.startswith("output is not valid JSON")
    assert scorer(None) == Score(0.0, "no output")


def test_json_schema_ignores_expected() -> None:
    assert JsonSchemaValid(SCHEMA)('{"intent": "a"}', expected="something else").value == 1.0


def test_json_schema_from_pydantic_model() -> None:
    scorer = JsonSchemaValid(Intent)
    assert scorer('{"intent": "refund"}').value == 1.0
    assert scorer('{"intent": 3}').value == 0.0


def test_json_schema_rejects_invalid_schema() -> None:
    with pytest.raises(ConfigError, match="schema is invalid at /properties/intent/type"):
        JsonSchemaValid({"type": "object", "properties": {"intent": {"type": "text"}}})
    with pytest.raises(ConfigError, match="needs a JSON Schema dict or a Pydantic model class"):
        JsonSchemaValid("not a schema")  # type: ignore[arg-type]


def test_json_schema_honours_declared_draft() -> None:
    # Draft 7 allows "items" as a list of schemas; 2020-12, the default, does not.
    tuple_items = {"type": "array", "items": [{"type": "string"}]}
    draft7 = JsonSchemaValid({"$schema": "http://json-schema.org/draft-07/schema#", **tuple_items})
    assert draft7('["a"]').value == 1.0
    assert draft7("[1]").value == 0.0
    with pytest.raises(ConfigError):
        JsonSchemaValid(tuple_items)


# Numeric closeness


def test_numeric_default_is_exact() -> None:
    numeric = NumericCloseness()
    assert numeric("2.50", 2.5).value == 1.0
    miss = numeric(2.51, "2.5")
    assert miss.value == 0.0
    assert miss.explanation == "output 2.51 is 0.01 from expected 2.5, beyond 0"


def test_numeric_absolute_tolerance_with_linear_decay() -> None:
    numeric = NumericCloseness(abs_tol=1.0, abs_zero=3.0)
    assert numeric(11.0, 10).value == 1.0
    assert numeric(9.0, 10).value == 1.0
    assert numeric(12.0, 10).value == pytest.approx(0.5)
    assert numeric(7.5, 10).value == pytest.approx(0.25)
    assert numeric(13.0, 10).value == 0.0
    assert numeric(100.0, 10).value == 0.0


def test_numeric_relative_tolerance_with_linear_decay() -> None:
    numeric = NumericCloseness(rel_tol=0.01, rel_zero=0.11)
    assert numeric(101, 100).value == 1.0
    assert numeric(106, 100).value == pytest.approx(0.5)
    assert numeric(-212, -200).value == pytest.approx(0.5)
    assert numeric(111, 100).value == 0.0


def test_numeric_wider_bound_applies() -> None:
    numeric = NumericCloseness(abs_tol=0.5, rel_tol=0.01)
    assert numeric(0.4, 0).value == 1.0
    assert numeric(1009, 1000).value == 1.0
    assert numeric(1011, 1000).value == 0.0


def test_numeric_low_zero_bound_is_step() -> None:
    # At expected 1000 the relative tolerance (10) exceeds the absolute zero bound (2).
    numeric = NumericCloseness(rel_tol=0.01, abs_zero=2.0)
    assert numeric(1010, 1000).value == 1.0
    assert numeric(1011, 1000).value == 0.0


def test_numeric_tolerance_alone_is_step() -> None:
    numeric = NumericCloseness(abs_tol=1.0)
    assert numeric(11, 10).value == 1.0
    assert numeric(11.001, 10).value == 0.0


@pytest.mark.parametrize(
    "output", [" 1e3 ", "1000", 1000, 1000.0, Decimal(1000), Fraction(2000, 2), "+1000.000"]
)
def test_numeric_accepted_number_forms(output) -> None:
    assert NumericCloseness()(output, 1000).value == 1.0


@pytest.mark.parametrize(
    "output",
    ["1,000", "about 1000", "", "nan", "inf", True, {"value": 1000}, [1000], Decimal("NaN")],
)
def test_numeric_non_numbers_score_zero(output) -> None:
    score = NumericCloseness()(output, 1000)
    assert score.value == 0.0
    assert score.explanation.endswith("is not a finite number")


def test_numeric_none_output() -> None:
    assert NumericCloseness()(None, 1) == Score(0.0, "no output")


@pytest.mark.parametrize("expected", ["ten", "nan", False])
def test_numeric_rejects_non_numeric_expected(expected) -> None:
    with pytest.raises(ScoringError, match="needs a finite number as the expected value"):
        NumericCloseness()(1, expected)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"abs_tol": -1}, "abs_tol must be a finite number >= 0"),
        ({"rel_tol": math.nan}, "rel_tol must be a finite number >= 0"),
        ({"abs_zero": math.inf}, "abs_zero must be a finite number >= 0"),
        ({"abs_tol": 2, "abs_zero": 1}, r"abs_zero \(1\) must not be below abs_tol \(2\)"),
        ({"rel_tol": 0.2, "rel_zero": 0.1}, r"rel_zero \(0.1\) must not be below rel_tol \(0.2\)"),
    ],
)
def test_numeric_rejects_invalid_bounds(options, message) -> None:
    with pytest.raises(ConfigError, match=message):
        NumericCloseness(**options)


# Python functions by import path


@pytest.mark.parametrize(
    ("function", "output", "expected", "value"),
    [
        ("half", "a", "b", 0.5),
        ("equal", "a", "a", 1.0),
        ("equal", "a", "b", 0.0),
        ("numpy_equal_scalar", "a", "a", 1.0),
        ("one", "a", "b", 1.0),
        ("Checks.always", "a", "b", 1.0),
    ],
)
def test_function_scorer_converts_returns(function, output, expected, value) -> None:
    scorer = FunctionScorer(f"unit.scoring_functions:{function}")
    assert scorer(output, expected) == Score(value)


def test_function_scorer_passes_score_and_row_through() -> None:
    scorer = FunctionScorer("unit.scoring_functions:explained")
    assert scorer("a", "b", {"note": "hi"}) == Score(0.25, "row says hi")
    assert scorer("a", "b") == Score(0.25, "row says None")
    assert scorer.name == "python:unit.scoring_functions:explained"


@pytest.mark.parametrize(
    ("function", "shown"),
    [
        ("too_high", "returned 1.5 of type float"),
        ("text", "returned '0.5' of type str"),
        ("nothing", "returned None of type NoneType"),
        ("not_a_number", "returned nan of type float"),
        ("numpy_equal", "of type ndarray"),
    ],
)
def test_function_scorer_rejects_other_returns(function, shown) -> None:
    scorer = FunctionScorer(f"unit.scoring_functions:{function}")
    with pytest.raises(ScoringError) as caught:
        scorer("a", "b")
    message = str(caught.value)
    assert f"'unit.scoring_functions:{function}'" in message
    assert shown in message
    assert "a number from 0 to 1, a bool or a Score" in message


def test_async_function_scorer_runs_both_ways() -> None:
    scorer = FunctionScorer("unit.scoring_functions:async_length_match")
    assert scorer("abc", "xyz").value == 1.0
    assert asyncio.run(scorer.ascore("abc", "xy")).value == 0.0


async def test_async_function_scorer_called_inside_a_loop() -> None:
    scorer = FunctionScorer("unit.scoring_functions:async_length_match")
    with pytest.raises(RuntimeError, match="use `await scorer.ascore"):
        scorer("abc", "xyz")
    assert (await scorer.ascore("abc", "xyz")).value == 1.0


async def test_sync_function_scorer_ascore() -> None:
    assert (await FunctionScorer("unit.scoring_functions:half").ascore("a", "b")).value == 0.5


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("unit.scoring_functions", "is invalid; write it as 'package.module:function'"),
        (":half", "is invalid"),
        ("unit.scoring_functions:", "is invalid"),
        ("no_such_module_here:score", "cannot import module 'no_such_module_here'"),
        ("unit.scoring_functions:missing", "has no attribute 'missing'"),
        ("unit.scoring_functions:Checks.missing", "has no attribute 'Checks.missing'"),
        ("unit.scoring_functions:NOT_A_FUNCTION", "is a int, not a callable"),
    ],
)
def test_function_scorer_rejects_bad_paths(path, message) -> None:
    with pytest.raises(ConfigError, match=message):
        FunctionScorer(path)


# The protocol and the registry


@pytest.mark.parametrize(
    "scorer",
    [
        ExactMatch(),
        NormalisedMatch(),
        FuzzyMatch(),
        JsonSchemaValid(SCHEMA),
        NumericCloseness(),
        FunctionScorer("unit.scoring_functions:half"),
    ],
)
async def test_every_scorer_follows_the_protocol(scorer) -> None:
    assert isinstance(scorer, Scorer)
    assert (await scorer.ascore("1", "1", {})) == scorer("1", "1", {})


def test_registry_names() -> None:
    builtin = {"exact", "normalised", "fuzzy", "embedding", "json_schema", "numeric", "python"}
    assert builtin | {"judge"} <= set(scorer_names())


def test_build_scorer_by_name_with_options() -> None:
    assert isinstance(build_scorer("exact"), ExactMatch)
    assert build_scorer("numeric", rel_tol=0.01)("101", "100").value == 1.0
    assert build_scorer("json_schema", schema=SCHEMA)('{"intent": "x"}').value == 1.0
    assert build_scorer("python", path="unit.scoring_functions:half")("a", "b").value == 0.5


def test_build_scorer_unknown_name_lists_the_names() -> None:
    message = "unknown scorer 'exactly'; the registered scorers are: .*exact"
    with pytest.raises(ConfigError, match=message):
        build_scorer("exactly")


def test_build_scorer_rejects_bad_options() -> None:
    with pytest.raises(ConfigError, match="invalid options for scorer 'exact'"):
        build_scorer("exact", schema=SCHEMA)
    with pytest.raises(ConfigError, match="invalid options for scorer 'json_schema'"):
        build_scorer("json_schema")
    with pytest.raises(ConfigError, match="abs_tol must be a finite number"):
        build_scorer("numeric", abs_tol=-1)


class Length(SyncScorer):
    name = "length"

    def __call__(self, output, expected=None, row=None):  # noqa: ANN001, ANN204
        return Score(1.0 if len(output) == len(expected) else 0.0)


def test_register_scorer(monkeypatch) -> None:
    monkeypatch.setattr(registry, "_FACTORIES", dict(registry._FACTORIES))
    register_scorer("length", Length)
    assert "length" in scorer_names()
    assert build_scorer("length")("ab", "cd").value == 1.0
    with pytest.raises(ConfigError, match="a scorer named 'length' is already registered"):
        register_scorer("length", Length)
    register_scorer("length", ExactMatch, replace=True)
    assert isinstance(build_scorer("length"), ExactMatch)
    with pytest.raises(ConfigError, match="must not be empty"):
        register_scorer(" ", Length)
