"""The `Score` every scorer returns, the `Scorer` protocol, and the errors scoring raises.

A scorer is called as ``scorer(output, expected, row)`` from synchronous code
and as ``await scorer.ascore(output, expected, row)`` from asynchronous code.
Both return a `Score`. Scorers whose work is synchronous subclass
`SyncScorer`, which supplies `ascore`. Scorers that call a model (the judge)
implement `ascore` and run it to the end in `__call__`.
"""

from __future__ import annotations

import asyncio
import json
import math
import numbers
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, runtime_checkable

from pydantic import BaseModel

from trunkline.errors import TrunklineError

#: Characters of a value that explanations show before cutting it short.
PREVIEW_CHARS = 80

T = TypeVar("T")


class ScoringError(TrunklineError):
    """A scorer cannot score a row: the expected value is missing or invalid, or a scoring
    function returned something that is not a score."""


class JudgeError(ScoringError):
    """The judge model's reply contained no usable verdict, even after the route's repairs."""


@dataclass(frozen=True)
class Score:
    """The degree to which one output matches the expected value.

    Attributes:
        value: from 0.0 (no match) to 1.0 (full match).
        explanation: why the value is what it is, such as a validation error
            or a judge's reasoning; None where the value needs none.
    """

    value: float
    explanation: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.value, bool) or not isinstance(self.value, numbers.Real):
            raise TypeError(f"a score's value must be a number, got {self.value!r}")
        value = float(self.value)
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"a score's value must be between 0 and 1, got {self.value!r}")
        # Stored as a plain float, so that Fractions and NumPy scalars serialise like floats.
        object.__setattr__(self, "value", value)


@runtime_checkable
class Scorer(Protocol):
    """Scores one output against the expected value of its dataset row.

    `row` is the whole dataset row, for scorers that need more than the
    expected value; None means an empty row.
    """

    #: A label for reports, such as ``exact`` or ``python:checks:is_polite``.
    name: str

    def __call__(
        self, output: Any, expected: Any = None, row: Mapping[str, Any] | None = None
    ) -> Score:
        """Score `output` from synchronous code; not from inside an event loop for async scorers."""
        ...

    async def ascore(
        self, output: Any, expected: Any = None, row: Mapping[str, Any] | None = None
    ) -> Score:
        """Score `output` from asynchronous code."""
        ...


class SyncScorer(ABC):
    """Base class of scorers whose work is synchronous; `ascore` calls `__call__`."""

    name: str

    @abstractmethod
    def __call__(
        self, output: Any, expected: Any = None, row: Mapping[str, Any] | None = None
    ) -> Score:
        """Score `output` against `expected`."""

    async def ascore(
        self, output: Any, expected: Any = None, row: Mapping[str, Any] | None = None
    ) -> Score:
        """Score `output` against `expected`; the same as calling the scorer."""
        return self(output, expected, row)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


class ComparisonScorer(SyncScorer):
    """Base class of scorers that compare the output with an expected value.

    Calling one raises `ScoringError` when `expected` is None, because the row
    has nothing to compare with, and scores an output of None, which is what
    a failed row produces, 0.0 as no output. Otherwise `compare` scores.
    """

    def __call__(
        self, output: Any, expected: Any = None, row: Mapping[str, Any] | None = None
    ) -> Score:
        """Check both values, then score with `compare`."""
        if expected is None:
            raise ScoringError(
                f"the {self.name} scorer compares with an expected value, and the row has none; "
                "give the dataset an expected column or score only rows that have one"
            )
        if output is None:
            return NO_OUTPUT
        return self.compare(output, expected)

    @abstractmethod
    def compare(self, output: Any, expected: Any) -> Score:
        """Score `output` against `expected`, neither of them None."""


def run_to_end(start: Callable[[], Awaitable[T]], scorer_name: str) -> T:
    """Run the coroutine that `start` creates on a new event loop and return its result.

    Raises:
        RuntimeError: called from inside a running event loop, where the
            caller must await the scorer's `ascore` instead.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(_awaited(start))
    raise RuntimeError(
        f"the {scorer_name} scorer cannot be called synchronously inside a running event "
        "loop; use `await scorer.ascore(output, expected, row)` instead"
    )


async def _awaited(start: Callable[[], Awaitable[T]]) -> T:
    return await start()




def as_text(value: Any) -> str:
    """Return the text form in which scorers compare `value`.

    Strings stay as they are. A Pydantic model becomes its JSON data, and that
    and every other value becomes JSON text with sorted keys, so ``3`` reads
    ``3``, ``True`` reads ``true`` and ``{"b": 1, "a": 2}`` reads
    ``{"a": 2, "b": 1}``. Values JSON cannot encode fall back to `str`.
    """
    if isinstance(value, str):
        return value
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


def preview(value: Any) -> str:
    """Return `value`'s repr, cut to `PREVIEW_CHARS` characters, for explanations."""
    text = repr(value)
    if len(text) <= PREVIEW_CHARS:
        return text
    return text[: PREVIEW_CHARS - 3] + "..."


def is_finite_number(value: Any) -> bool:
    """Return whether `value` is a real number other than a bool, and neither NaN nor infinite."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    return math.isfinite(value)


NO_OUTPUT = Score(0.0, "no output")
