"""How often a judge agrees with human pass/fail labels: agreement rate, Cohen's kappa, confusion
counts."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from trunkline.errors import ConfigError
from trunkline.evals.scores import Scorer, preview

_PASS_LABELS = frozenset({"pass", "true", "yes", "1"})
_FAIL_LABELS = frozenset({"fail", "false", "no", "0"})


@dataclass(frozen=True)
class Agreement:
    """A judge's pass/fail decisions set against human labels on the same rows.

    "Pass" on the judge's side means a score at or above the threshold that
    was used.
    """

    rows: int
    #: Rows the judge passed and the human passed.
    both_pass: int
    #: Rows the judge failed and the human failed.
    both_fail: int
    #: Rows the judge passed and the human failed: the judge is too lenient.
    judge_pass_human_fail: int
    #: Rows the judge failed and the human passed: the judge is too strict.
    judge_fail_human_pass: int

    @property
    def rate(self) -> float:
        """The share of rows where judge and human agree, from 0 to 1."""
        return (self.both_pass + self.both_fail) / self.rows

    @property
    def kappa(self) -> float | None:
        """Cohen's kappa: agreement corrected for the agreement expected by chance.

        ``(p_o - p_e) / (1 - p_e)``, where ``p_o`` is `rate` and ``p_e`` sums,
        over pass and fail, the product of the judge's and the human's share
        of that label. It is 1 for full agreement and 0 for chance level.
        None when ``p_e`` is 1, which happens when judge and human give every
        row the same single label, so kappa is 0/0.
        """
        judge_pass = (self.both_pass + self.judge_pass_human_fail) / self.rows
        human_pass = (self.both_pass + self.judge_fail_human_pass) / self.rows
        chance = judge_pass * human_pass + (1 - judge_pass) * (1 - human_pass)
        if chance >= 1.0:
            return None
        return (self.rate - chance) / (1 - chance)


def agreement_from_pairs(pairs: Iterable[tuple[bool, bool]]) -> Agreement:
    """Count (judge passed, human passed) pairs into an `Agreement`.

    Raises:
        ConfigError: `pairs` is empty.
    """
    counts = {(True, True): 0, (False, False): 0, (True, False): 0, (False, True): 0}
    for judge_passed, human_passed in pairs:
        counts[(bool(judge_passed), bool(human_passed))] += 1
    rows = sum(counts.values())
    if rows == 0:
        raise ConfigError("judge agreement needs at least one labelled row, got none")
    return Agreement(
        rows=rows,
        both_pass=counts[(True, True)],
        both_fail=counts[(False, False)],
        judge_pass_human_fail=counts[(True, False)],
        judge_fail_human_pass=counts[(False, True)],
    )


def parse_label(value: Any, *, row_index: int) -> bool:
    """Read a human pass/fail label: True for a pass.

    Accepts bools, the integers 1 and 0, and the strings pass/fail, true/false,
    yes/no and 1/0 in any case and with surrounding whitespace.

    Raises:
        ConfigError: the value is not one of those; the message names the row.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return value == 1
    if isinstance(value, str):
        text = value.strip().casefold()
        if text in _PASS_LABELS:
            return True
        if text in _FAIL_LABELS:
            return False
    raise ConfigError(
        f"row {row_index} has label {preview(value)}; use pass or fail (or true/false, yes/no, 1/0)"
    )


async def measure_agreement(
    judge: Scorer,
    rows: Sequence[Mapping[str, Any]],
    *,
    output_key: str = "output",
    expected_key: str = "expected",
    label_key: str = "label",
    threshold: float = 0.5,
    concurrency: int = 4,
) -> Agreement:
    """Score every labelled row with `judge` and compare its pass/fail with the human label.

    Each row contains the output to grade under `output_key`, optionally the
    expected value under `expected_key`, and the human's pass/fail under
    `label_key` (see `parse_label`). The judge passes a row when its score is
    at least `threshold`. At most `concurrency` rows are scored at once.
    Every label is checked before the first judge call, so a bad label costs
    no calls. A judge error stops the measurement and is raised, because a
    row the judge could not score cannot count as agreement or disagreement.

    Raises:
        ConfigError: no rows, a row without a label or with an unreadable
            one, a threshold outside 0..1, or a concurrency below 1.
        JudgeError: the judge returned no usable verdict for a row.
    """
    if not 0.0 <= threshold <= 1.0:
        raise ConfigError(f"threshold must be between 0 and 1, got {threshold!r}")
    if concurrency < 1:
        raise ConfigError(f"concurrency must be at least 1, got {concurrency!r}")
    labels = []
    for index, row in enumerate(rows):
        if label_key not in row:
            raise ConfigError(f"row {index} has no {label_key!r} column with a human label")
        labels.append(parse_label(row[label_key], row_index=index))
    if not labels:
        raise ConfigError("judge agreement needs at least one labelled row, got none")

    gate = asyncio.Semaphore(concurrency)

    async def judge_row(row: Mapping[str, Any]) -> bool:
        async with gate:
            score = await judge.ascore(row.get(output_key), row.get(expected_key), row)
        return score.value >= threshold

    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(judge_row(row)) for row in rows]
    except BaseExceptionGroup as failures:
        # The task group wraps the failure and cancels the other rows. Raise the
        # failure itself, so that callers catch JudgeError as from a single call.
        raise failures.exceptions[0] from None
    return agreement_from_pairs(
        (task.result(), label) for task, label in zip(tasks, labels, strict=True)
    )
