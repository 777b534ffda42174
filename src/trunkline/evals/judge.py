"""LLM-as-a-judge: a model grades an output against a rubric and returns a structured verdict."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field, create_model

from trunkline.errors import CallError, ConfigError
from trunkline.evals.scores import NO_OUTPUT, JudgeError, Score, as_text, run_to_end
from trunkline.types.messages import Message

if TYPE_CHECKING:
    from trunkline.routing import Router


class PassFailVerdict(BaseModel):
    """A judge's pass or fail, after its reasoning.

    The reasoning comes first so that the model writes it before it commits
    to a verdict.
    """

    reasoning: str = Field(description="why the output does or does not meet the rubric")
    verdict: Literal["pass", "fail"]


class ScaleVerdict(BaseModel):
    """A judge's score from 1 to the scale's top, after its reasoning."""

    reasoning: str = Field(description="why the output earns this score under the rubric")
    score: int


@lru_cache(maxsize=16)
def scale_verdict(scale: int) -> type[ScaleVerdict]:
    """Return a `ScaleVerdict` subclass whose JSON Schema bounds the score to 1..`scale`.

    With the bounds in the schema, the router rejects an out-of-range score
    like any other invalid output, and repairs it within the route's bound.
    """
    return create_model(
        f"ScaleVerdict{scale}",
        __base__=ScaleVerdict,
        score=(
            int,
            Field(ge=1, le=scale, description=f"1 (fails the rubric) to {scale} (meets it fully)"),
        ),
    )


class Judge:
    """Scores an output by asking a model, through a `Router`, for a verdict under a rubric.

    With `scale` None the model returns pass (1.0) or fail (0.0). With a
    scale of N it gives a whole number s from 1 to N, mapped to
    ``(s - 1) / (N - 1)``. The score's explanation is the model's reasoning.
    An output of None scores 0.0 without a call.

    Args:
        router: sends the judge's calls.
        rubric: what a good output is, in the words the model is shown.
        route: the route to call; by default the router's default route.
        scale: None for pass or fail, else the top of the score scale, at least 2.
        context_columns: row columns shown to the judge under "Context",
            such as the question the output responds to. Columns that a row
            lacks are left out.

    Raises:
        ConfigError: on construction, for an empty rubric or a scale below 2.
        JudgeError: on scoring, when the reply contains no usable verdict after
            the route's repairs: not JSON, a verdict outside the allowed
            values, or a missing field. A judge never passes by default.
        CallError: on scoring, when the call fails for another reason, such
            as every deployment of the route being unreachable.
    """

    name = "judge"

    def __init__(
        self,
        router: Router,
        rubric: str,
        *,
        route: str | None = None,
        scale: int | None = None,
        context_columns: Sequence[str] = (),
    ) -> None:
        if not rubric.strip():
            raise ConfigError("the judge needs a rubric: describe what a good output is")
        whole = isinstance(scale, int) and not isinstance(scale, bool)
        if scale is not None and not (whole and scale >= 2):
            raise ConfigError(
                f"the judge's scale must be a whole number of at least 2, got {scale!r}"
            )
        self.router = router
        self.rubric = rubric.strip()
        self.route = route
        self.scale = scale
        self.context_columns = tuple(context_columns)
        self.verdict_model: type[BaseModel] = (
            PassFailVerdict if scale is None else scale_verdict(scale)
        )

    def __repr__(self) -> str:
        return f"<Judge route={self.route!r} scale={self.scale!r}>"

    def __call__(
        self, output: Any, expected: Any = None, row: Mapping[str, Any] | None = None
    ) -> Score:
        """Score `output` on a new event loop; inside a running loop, await `ascore` instead."""
        return run_to_end(lambda: self.ascore(output, expected, row), self.name)

    async def ascore(
        self, output: Any, expected: Any = None, row: Mapping[str, Any] | None = None
    ) -> Score:
        """Ask the judge model for a verdict on `output` and map it to a score from 0 to 1."""
        if output is None:
            return NO_OUTPUT
        messages = self.messages(output, expected, row or {})
        try:
            result = await self.router.complete(
                messages, route=self.route, output=self.verdict_model, temperature=0.0
            )
        except CallError as error:
            if not error.kind.repairable:
                raise
            route = self.route or self.router.settings.default_route
            record = getattr(error, "record", None)
            call = f" (call {record.call_id})" if record is not None else ""
            raise JudgeError(
                f"the judge on route {route!r} returned no usable verdict after the route's "
                f"repairs{call}: {error}"
            ) from error
        return self._to_score(result.output)

    def messages(self, output: Any, expected: Any, row: Mapping[str, Any]) -> list[Message]:
        """Build the judge's prompt: instructions, rubric, context, expected value and output."""
        if self.scale is None:
            decide = (
                'Then set "verdict" to "pass" if the output meets the rubric, and to "fail" '
                "if it does not."
            )
        else:
            decide = (
                f'Then set "score" to a whole number from 1 (fails the rubric) to {self.scale} '
                "(meets it fully)."
            )
        instructions = (
            "You grade one output of an AI system against a rubric. First explain your "
            f'judgement in "reasoning". {decide} Reply with one JSON object and nothing else.'
        )
        sections = [f"## Rubric\n{self.rubric}"]
        context = [
            f"{column}: {as_text(row[column])}" for column in self.context_columns if column in row
        ]
        if context:
            sections.append("## Context\n" + "\n".join(context))
        if expected is not None:
            sections.append(f"## Expected output\n{as_text(expected)}")
        sections.append(f"## Output to grade\n{as_text(output)}")
        return [Message.system(instructions), Message.user("\n\n".join(sections))]

    def _to_score(self, verdict: Any) -> Score:
        if isinstance(verdict, PassFailVerdict):
            return Score(1.0 if verdict.verdict == "pass" else 0.0, verdict.reasoning)
        if isinstance(verdict, ScaleVerdict) and self.scale is not None:
            return Score((verdict.score - 1) / (self.scale - 1), verdict.reasoning)
        raise JudgeError(
            f"the judge expected a {self.verdict_model.__name__} from the router, "
            f"got {type(verdict).__name__}"
        )
