"""Cascade steps: a cheap answer first, a dearer stage only where the cheap one is unsure.

A cascade holds stages, cheapest first. Each stage runs like an ordinary
step and sets a confidence value from 0 to 1; the first stage whose
confidence reaches the threshold answers, and the stages after it never run.
The last stage answers whatever its confidence. A stage before the last that
fails hands the row on to the next stage instead of failing it.

The row keeps, per stage that ran, its confidence, its outcome and what its
model calls cost, so that a run's summary can say what share of rows each
stage answered and what the cascade saved against calling the last stage
for every row.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from trunkline.errors import CallError, ConfigError, WorkflowError
from trunkline.routing.router import Router
from trunkline.tracing import span
from trunkline.types.calls import CallRecord
from trunkline.workflows.spec import StepSpec
from trunkline.workflows.steps import Step, StepResult

logger = logging.getLogger(__name__)


class CascadeStep(Step):
    """Runs its stages in order until one is confident enough; see the module docstring."""

    def __init__(self, spec: StepSpec, stages: list[Step]) -> None:
        super().__init__(spec)
        self.stages = stages

    def threshold(self, values: dict[str, Any]) -> float:
        """Return the threshold, reading it from the row's parameters when the spec names one."""
        configured = self.spec.threshold
        if not isinstance(configured, str):
            assert configured is not None
            return float(configured)
        raw = values.get(configured)
        try:
            value = float(raw)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            value = math.nan
        if not 0.0 <= value <= 1.0:
            raise WorkflowError(
                f"cascade step {self.name!r} reads its threshold from parameter {configured!r}, "
                f"which holds {raw!r}; set it to a number from 0 to 1, for example "
                f"--param {configured}=0.5"
            )
        return value

    def confidence(self, stage: Step, produced: dict[str, Any]) -> float | None:
        """Return the confidence a stage set, looking inside its output when that is a dict.

        Raises:
            ValueError: the stage set no confidence at all, or one outside [0, 1];
                the row fails with this message.
        """
        key = self.spec.confidence
        holders = [produced, produced.get(stage.output_name)]
        for holder in holders:
            if isinstance(holder, dict) and key in holder:
                raw = holder[key]
                if raw is None:
                    return None
                if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not 0.0 <= raw <= 1.0:
                    raise ValueError(
                        f"cascade {self.name!r}: stage {stage.name!r} set {key} = {raw!r}; "
                        "a confidence must be a number from 0 to 1, or null when the stage cannot tell"
                    )
                return float(raw)
        raise ValueError(
            f"cascade {self.name!r}: stage {stage.name!r} set no {key!r} value; it returned "
            f"{', '.join(sorted(produced)) or 'nothing'}. A stage before the last must return "
            f"{key!r} (or an output holding it) for the cascade to decide"
        )

    async def run(self, values: dict[str, Any], router: Router) -> StepResult:
        threshold = self.threshold(values)
        scope = dict(values)
        produced: dict[str, Any] = {}
        calls: list[CallRecord] = []
        trail: list[dict[str, Any]] = []
        answered: dict[str, Any] | None = None
        for position, stage in enumerate(self.stages):
            last = position == len(self.stages) - 1
            entry: dict[str, Any] = {"stage": stage.name}
            trail.append(entry)
            try:
                with span(stage.name, "step", step_kind=stage.spec.kind, cascade=self.name):
                    result = await stage.run(scope, router)
            except (WorkflowError, ConfigError):
                raise
            except Exception as failure:
                _count_calls(entry, _failed_calls(failure))
                entry["outcome"] = "failed"
                entry["reason"] = f"{_failure_kind(failure)}: {failure}"
                if last:
                    # The row fails, but keeps what the earlier stages did and paid for.
                    details = self._details(threshold, None, "every stage failed or was unsure", trail)
                    failure.partial_result = StepResult(values={}, calls=calls, details=details)  # type: ignore[attr-defined]
                    raise
                calls.extend(_failed_calls(failure))
                logger.warning(
                    "cascade %s: stage %s failed, so the next stage takes the row: %s",
                    self.name, stage.name, entry["reason"],
                )
                continue
            calls.extend(result.calls)
            _count_calls(entry, result.calls)
            scope.update(result.values)
            produced.update(result.values)
            confidence = self.confidence(stage, result.values) if not last else _optional_confidence(
                self, stage, result.values
            )
            entry["confidence"] = confidence
            if last:
                entry["outcome"] = "answered"
                entry["reason"] = "last stage"
                answered = entry
                break
            if confidence is not None and confidence >= threshold:
                entry["outcome"] = "answered"
                entry["reason"] = f"confidence {confidence:.3f} >= threshold {threshold:g}"
                answered = entry
                break
            entry["outcome"] = "escalated"
            entry["reason"] = (
                "the stage could not tell" if confidence is None
                else f"confidence {confidence:.3f} < threshold {threshold:g}"
            )
        assert answered is not None
        details = self._details(threshold, answered["stage"], answered["reason"], trail)
        return StepResult(values=produced, calls=calls, details=details)

    def _details(self, threshold: float, answered_by: str | None, reason: str, trail: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "kind": "cascade",
            "threshold": threshold,
            "answered_by": answered_by,
            "reason": reason,
            "stage_names": [stage.name for stage in self.stages],
            "last_stage": self.stages[-1].name,
            "stages": trail,
        }


def _optional_confidence(cascade: CascadeStep, stage: Step, produced: dict[str, Any]) -> float | None:
    """Return the last stage's confidence when it set one, since the last stage need not."""
    try:
        return cascade.confidence(stage, produced)
    except ValueError:
        return None


def _failed_calls(failure: BaseException) -> list[CallRecord]:
    record = getattr(failure, "record", None) if isinstance(failure, CallError) else None
    return [record] if record is not None else []


def _failure_kind(failure: BaseException) -> str:
    return failure.kind.value if isinstance(failure, CallError) else type(failure).__name__


def _count_calls(entry: dict[str, Any], calls: list[CallRecord]) -> None:
    unpriced = any(call.cost.price_missing for call in calls)
    entry["calls"] = len(calls)
    entry["tokens"] = sum(call.usage.input_tokens + call.usage.output_tokens for call in calls)
    entry["cost_usd"] = None if unpriced else sum(call.cost.total_usd or 0.0 for call in calls)
