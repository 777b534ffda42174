"""Scorers that need no model: exact, normalised and fuzzy text match, JSON Schema validity,
numeric closeness.

Every scorer here scores an output of None, which is what a failed row
produces, 0.0 as no output. Those that compare with an expected value raise
`ScoringError` when it is None (see `ComparisonScorer`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

import jsonschema
from jsonschema.exceptions import best_match
from pydantic import BaseModel
from rapidfuzz import fuzz

from trunkline.errors import ConfigError
from trunkline.evals.scores import (
    NO_OUTPUT,
    ComparisonScorer,
    Score,
    ScoringError,
    SyncScorer,
    as_text,
    is_finite_number,
    preview,
)

_WHITESPACE_RUN = re.compile(r"\s+")
#: Sentence-ending marks that `normalise_text` drops from the end. Closing
#: brackets and quotes are kept because they belong to the text, as in ``f(x)``.
TRAILING_PUNCTUATION = ".,;:!?…"


def normalise_text(text: str) -> str:
    """Return `text` case-folded, with whitespace runs collapsed and trailing punctuation dropped.

    The text is case-folded with `str.casefold`, and every run of Unicode
    whitespace becomes one space. Surrounding whitespace is stripped, then
    any mix of spaces and `TRAILING_PUNCTUATION` characters at the end is
    dropped, so ``"Yes. !"`` becomes ``"yes"``. Nothing else changes: accents,
    inner punctuation and Unicode forms stay as they are.
    """
    collapsed = _WHITESPACE_RUN.sub(" ", text.casefold()).strip()
    return collapsed.rstrip(TRAILING_PUNCTUATION + " ")


class ExactMatch(ComparisonScorer):
    """1.0 when the output's text equals the expected value's text, character for character.

    Both sides are compared through `as_text`, so the number ``3`` matches the
    string ``"3"`` but ``3.0`` does not.
    """

    name = "exact"

    def compare(self, output: Any, expected: Any) -> Score:
        """Compare the text forms character for character."""
        got = as_text(output)
        want = as_text(expected)
        if got == want:
            return Score(1.0)
        return Score(0.0, f"output {preview(got)} != expected {preview(want)}")


class NormalisedMatch(ComparisonScorer):
    """1.0 when the output equals the expected value after `normalise_text` on both sides.

    That ignores case, surrounding whitespace, the length of inner whitespace
    runs and sentence-ending punctuation (``.,;:!?…``) at the end, so
    ``"  Paris. "`` matches ``"paris"``.
    """

    name = "normalised"

    def compare(self, output: Any, expected: Any) -> Score:
        """Compare the normalised text forms."""
        got = normalise_text(as_text(output))
        want = normalise_text(as_text(expected))
        if got == want:
            return Score(1.0)
        return Score(
            0.0, f"normalised output {preview(got)} != normalised expected {preview(want)}"
        )


class FuzzyMatch(ComparisonScorer):
    """Edit-distance similarity of the normalised texts: rapidfuzz's ``fuzz.ratio`` / 100.

    ``fuzz.ratio`` is the Indel similarity (insertions and deletions) of the
    two strings. It keeps word order, unlike ``token_sort_ratio``, because in
    free-text outputs the order carries meaning: "dog bites man" against
    "man bites dog" scores 0.54 here, where a token sort would give 1.0. Both
    sides go through `normalise_text` first, so anything `NormalisedMatch`
    accepts scores 1.0 here too. Two empty texts score 1.0, and an empty text
    against a non-empty one scores 0.0.
    """

    name = "fuzzy"

    def compare(self, output: Any, expected: Any) -> Score:
        """Return the Indel similarity of the normalised text forms."""
        got = normalise_text(as_text(output))
        want = normalise_text(as_text(expected))
        return Score(fuzz.ratio(got, want) / 100.0)


class JsonSchemaValid(SyncScorer):
    """1.0 when the output is JSON that validates against `schema`, else 0.0 with the reason.

    A string output is parsed as JSON first. A Pydantic model is checked as
    its JSON data, and any other value (a dict from structured output, a
    list, a number) is checked as it is. The expected value is not used.

    Args:
        schema: a JSON Schema, or a Pydantic model class whose JSON Schema is used.
            Its ``$schema`` keyword picks the draft; the default is 2020-12.

    Raises:
        ConfigError: `schema` is not a valid JSON Schema.
    """

    name = "json_schema"

    def __init__(self, schema: Mapping[str, Any] | type[BaseModel]) -> None:
        if isinstance(schema, type) and issubclass(schema, BaseModel):
            schema = schema.model_json_schema()
        if not isinstance(schema, Mapping):
            raise ConfigError(
                "the json_schema scorer needs a JSON Schema dict or a Pydantic model class, "
                f"got {type(schema).__name__}"
            )
        self.schema = dict(schema)
        validator_class = jsonschema.validators.validator_for(
            self.schema, default=jsonschema.Draft202012Validator
        )
        try:
            validator_class.check_schema(self.schema)
        except jsonschema.SchemaError as error:
            raise ConfigError(
                f"the json_schema scorer's schema is invalid at {_where(error.path)}: "
                f"{error.message}"
            ) from None
        self._validator = validator_class(self.schema)

    def __call__(
        self, output: Any, expected: Any = None, row: Mapping[str, Any] | None = None
    ) -> Score:
        if output is None:
            return NO_OUTPUT
        if isinstance(output, BaseModel):
            instance = output.model_dump(mode="json")
        elif isinstance(output, str):
            try:
                instance = json.loads(output)
            except json.JSONDecodeError as error:
                return Score(0.0, f"output is not valid JSON: {error}")
        else:
            instance = output
        problem = best_match(self._validator.iter_errors(instance))
        if problem is None:
            return Score(1.0)
        return Score(0.0, f"output is invalid at {_where(problem.path)}: {problem.message}")


def _where(path: Any) -> str:
    parts = [str(part) for part in path]
    return "/" + "/".join(parts) if parts else "(root)"


class NumericCloseness(ComparisonScorer):
    """1.0 within a tolerance of the expected number, falling linearly to 0.0 at a second bound.

    With ``d = |output - expected|``, the tolerance
    ``t = max(abs_tol, rel_tol * |expected|)`` and the zero bound
    ``z = max(abs_zero, rel_zero * |expected|)``::

        score = 1                    if d <= t
                0                    if d >= z
                (z - d) / (z - t)    otherwise

    With neither zero bound given, ``z = t`` and the score is 1 or 0. The
    defaults (all 0) ask for an exact numeric match, so ``"2.50"`` matches
    ``2.5``.

    An output scores 0.0 with an explanation when it is not a finite number:
    ints, floats, Decimals and Fractions count, and so do strings that
    Python's `float` parses after stripping whitespace (``"1e3"``, ``" -2.5"``).
    Bools, ``"1,234"`` and numbers inside sentences do not.

    Raises:
        ConfigError: a bound is negative or not finite, or a zero bound is
            below its tolerance.
    """

    name = "numeric"

    def __init__(
        self,
        *,
        abs_tol: float = 0.0,
        rel_tol: float = 0.0,
        abs_zero: float | None = None,
        rel_zero: float | None = None,
    ) -> None:
        bounds = {
            "abs_tol": abs_tol,
            "rel_tol": rel_tol,
            "abs_zero": abs_zero,
            "rel_zero": rel_zero,
        }
        for option, value in bounds.items():
            if value is not None and not (is_finite_number(value) and value >= 0):
                raise ConfigError(
                    f"the numeric scorer's {option} must be a finite number >= 0, got {value!r}"
                )
        if abs_zero is not None and abs_zero < abs_tol:
            raise ConfigError(
                f"the numeric scorer's abs_zero ({abs_zero}) must not be below abs_tol ({abs_tol})"
            )
        if rel_zero is not None and rel_zero < rel_tol:
            raise ConfigError(
                f"the numeric scorer's rel_zero ({rel_zero}) must not be below rel_tol ({rel_tol})"
            )
        self.abs_tol = float(abs_tol)
        self.rel_tol = float(rel_tol)
        self.abs_zero = abs_zero
        self.rel_zero = rel_zero

    def compare(self, output: Any, expected: Any) -> Score:
        """Score `output` by its distance from `expected`, neither of them None."""
        want = parse_number(expected)
        if want is None:
            raise ScoringError(
                f"the numeric scorer needs a finite number as the expected value, "
                f"got {preview(expected)}"
            )
        got = parse_number(output)
        if got is None:
            return Score(0.0, f"output {preview(output)} is not a finite number")

        distance = abs(got - want)
        tolerance = max(self.abs_tol, self.rel_tol * abs(want))
        if distance <= tolerance:
            return Score(1.0)
        zero_at = self._zero_bound(want, tolerance)
        explanation = f"output {got:g} is {distance:g} from expected {want:g}, beyond {tolerance:g}"
        if distance >= zero_at:
            return Score(0.0, explanation)
        return Score((zero_at - distance) / (zero_at - tolerance), explanation)

    def _zero_bound(self, want: float, tolerance: float) -> float:
        if self.abs_zero is None and self.rel_zero is None:
            return tolerance
        by_abs = self.abs_zero if self.abs_zero is not None else 0.0
        by_rel = self.rel_zero * abs(want) if self.rel_zero is not None else 0.0
        return max(by_abs, by_rel)


def parse_number(value: Any) -> float | None:
    """Return `value` as a finite float, or None when it is not a finite number.

    Accepts real numbers other than bools, and strings that `float` parses
    once surrounding whitespace is stripped.
    """
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    elif isinstance(value, Decimal):
        try:
            value = float(value)
        except (InvalidOperation, ValueError):
            return None
    if not is_finite_number(value):
        return None
    return float(value)
