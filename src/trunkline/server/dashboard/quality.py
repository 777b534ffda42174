"""Quality: evaluation scores over time per task and prompt version, and experiments compared."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import select

from trunkline.errors import ConfigError
from trunkline.evals.comparison import Comparison, compare_experiments, load_experiment
from trunkline.server.auth import require
from trunkline.server.dashboard import params
from trunkline.server.dashboard.charts import figure
from trunkline.server.dashboard.params import NotFound, QueryError
from trunkline.server.dashboard.rendering import page_errors, render
from trunkline.store.database import Store, as_utc
from trunkline.store.keys import ApiKey, Role
from trunkline.store.tables import experiments

router = APIRouter(include_in_schema=False)

#: Experiments read for one page, newest first.
MAX_EXPERIMENTS = 500
#: Rows of a comparison shown, those whose score moved most first.
COMPARED_ROWS = 50

_COLUMNS = [column for column in experiments.columns if column.name != "details"]


def list_experiments(
    store: Store, *, task: str | None = None, limit: int = MAX_EXPERIMENTS
) -> list[dict[str, Any]]:
    """Return experiments newest first, without their details, optionally of one task."""
    query = select(*_COLUMNS).order_by(experiments.c.started_at.desc()).limit(limit)
    if task is not None:
        query = query.where(experiments.c.task == task)
    with store.engine.connect() as connection:
        rows = [dict(row) for row in connection.execute(query).mappings()]
    for row in rows:
        row["started_at"] = as_utc(row["started_at"])
        row["ended_at"] = as_utc(row["ended_at"]) if row["ended_at"] else None
    return rows


def list_tasks(store: Store) -> list[str]:
    query = select(experiments.c.task).distinct().order_by(experiments.c.task)
    with store.engine.connect() as connection:
        return list(connection.execute(query).scalars())


def series_label(experiment: Mapping[str, Any]) -> str:
    """Name the line an experiment belongs to: its prompt version and deployment."""
    prompt = experiment["prompt_name"]
    version = f"{prompt}@{experiment['prompt_version']}" if prompt else "no registered prompt"
    return f"{version} on {experiment['deployment']}"


def score_charts(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Return one figure per task: mean score over time per prompt version, with intervals."""
    by_task: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for row in sorted(rows, key=lambda item: item["started_at"]):
        if row["mean_score"] is None:
            continue
        by_task.setdefault(row["task"], {}).setdefault(series_label(row), []).append(row)
    charts = {}
    for task, lines in sorted(by_task.items()):
        data = [_score_trace(label, points) for label, points in sorted(lines.items())]
        charts[task] = figure(
            data,
            title={"text": f"Task {task}: mean score and interval", "font": {"size": 14}},
            hovermode="closest",
            yaxis={"gridcolor": "#e5e8eb", "title": {"text": "mean score"}},
        )
    return charts


def _score_trace(label: str, points: list[dict[str, Any]]) -> dict[str, Any]:
    def time(point: dict[str, Any]) -> datetime:
        return point["ended_at"] or point["started_at"]

    means = [point["mean_score"] for point in points]
    above = [(p["ci_high"] - p["mean_score"]) if p["ci_high"] is not None else 0 for p in points]
    below = [(p["mean_score"] - p["ci_low"]) if p["ci_low"] is not None else 0 for p in points]
    return {
        "type": "scatter",
        "mode": "lines+markers",
        "name": label,
        "x": [time(point).isoformat() for point in points],
        "y": means,
        "error_y": {"type": "data", "symmetric": False, "array": above, "arrayminus": below},
        "text": [point["name"] or point["experiment_id"][:8] for point in points],
    }


def compare(store: Store, first: str, second: str) -> Comparison:
    """Compare experiment `second` with `first` row by row.

    Raises:
        NotFound: either experiment is not stored.
        QueryError: the two share no row, so there is nothing to compare.
    """
    for name, reference in (("a", first), ("b", second)):
        try:
            load_experiment(store, reference)
        except ConfigError as error:
            raise NotFound(f"experiment {name}: {error}") from None
    try:
        return compare_experiments(store, first, second)
    except ConfigError as error:
        raise QueryError("b", str(error)) from None


def picked_pair(query: Mapping[str, str]) -> tuple[str, str] | None:
    """Read the two experiments `a` and `b` to compare, or None when neither is given."""
    first, second = params.text(query, "a"), params.text(query, "b")
    if first is None and second is None:
        return None
    if first is None or second is None:
        missing = "a" if first is None else "b"
        raise QueryError(missing, "is missing; pick two experiments to compare")
    return first, second


@router.get("/quality", response_class=HTMLResponse)
@page_errors
def quality_page(request: Request, key: ApiKey = Depends(require(Role.VIEWER))) -> HTMLResponse:
    """Render scores over time per task and prompt version, and two experiments side by side."""
    store = request.app.state.store
    task = params.text(request.query_params, "task")
    pair = picked_pair(request.query_params)
    comparison = compare(store, *pair) if pair else None
    rows = list_experiments(store, task=task)
    return render(
        request,
        "quality.html",
        title="Quality",
        task=task,
        tasks=list_tasks(store),
        experiments=rows,
        charts=score_charts(rows),
        comparison=comparison.public(top=COMPARED_ROWS) if comparison else None,
        pair=pair,
        series_label=series_label,
    )
