"""Experiment results: written by evaluations, read by score-based downgrades."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from trunkline.store.database import Store
from trunkline.store.tables import experiments
from trunkline.types.scores import TaskScore


def record_experiment(
    store: Store,
    *,
    task: str,
    deployment: str,
    dataset_hash: str,
    row_count: int,
    mean_score: float | None,
    golden: bool = False,
    status: str = "finished",
    experiment_id: str | None = None,
    **fields: Any,
) -> str:
    """Insert one experiment's summary and return its id.

    `fields` may set any other column of the experiments table, such as
    ``prompt_name``, ``ci_low`` or ``cost_usd``.
    """
    now = datetime.now(UTC)
    values = {
        "experiment_id": experiment_id or uuid.uuid4().hex,
        "task": task,
        "deployment": deployment,
        "dataset_hash": dataset_hash,
        "row_count": row_count,
        "mean_score": mean_score,
        "golden": golden,
        "status": status,
        "started_at": fields.pop("started_at", now),
        "ended_at": fields.pop("ended_at", now),
        "details": fields.pop("details", {}),
        **fields,
    }
    with store.engine.begin() as connection:
        connection.execute(experiments.insert().values(**values))
    return values["experiment_id"]


def mark_experiment(store: Store, experiment_id: str, *, status: str) -> None:
    """Set an experiment's status, such as ``stopped_by_budget``; only ``finished`` ones count for downgrades."""
    with store.engine.begin() as connection:
        connection.execute(
            experiments.update().where(experiments.c.experiment_id == experiment_id).values(status=status)
        )


def golden_scores(store: Store, task: str, prompt: str | None = None) -> dict[str, TaskScore]:
    """Return, per deployment, its latest finished golden-set experiment on `task`.

    With `prompt` (``name@version``), only experiments of that prompt
    version count.
    """
    conditions = [
        experiments.c.task == task,
        experiments.c.golden.is_(True),
        experiments.c.status == "finished",
        experiments.c.mean_score.is_not(None),
    ]
    if prompt is not None:
        name, _, version = prompt.rpartition("@")
        conditions += [experiments.c.prompt_name == name, experiments.c.prompt_version == version]
    query = select(experiments).where(*conditions).order_by(experiments.c.ended_at)
    latest: dict[str, TaskScore] = {}
    with store.engine.connect() as connection:
        for row in connection.execute(query).mappings():
            latest[row["deployment"]] = TaskScore(
                deployment=row["deployment"],
                mean_score=row["mean_score"],
                row_count=row["row_count"],
                dataset_hash=row["dataset_hash"],
                experiment_id=row["experiment_id"],
                ended_at=row["ended_at"],
                prompt=prompt,
            )
    return latest
