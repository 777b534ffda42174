"""Evaluation results as the router reads them for score-based downgrades."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class TaskScore:
    """The latest finished golden-set result of one deployment on one task."""

    deployment: str
    mean_score: float
    row_count: int
    #: SHA-256 of the rows scored; two scores compare only when these match.
    dataset_hash: str
    experiment_id: str
    ended_at: datetime
    #: The prompt version (``name@version``) scored, when the scores were read for one.
    prompt: str | None = None
