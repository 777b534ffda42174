"""Reading call records back: lists, one record in full, and cost sums."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import Text, case, func, select

from trunkline.errors import StoreError
from trunkline.store.database import Store, as_utc
from trunkline.store.sums import summed
from trunkline.store.tables import calls
from trunkline.types.calls import CallRecord

CostGrouping = Literal["model", "day", "run"]

_LIST_COLUMNS = (
    calls.c.call_id,
    calls.c.started_at,
    calls.c.run_id,
    calls.c.route,
    calls.c.provider,
    calls.c.model_served,
    calls.c.model_requested,
    calls.c.prompt_name,
    calls.c.prompt_version,
    calls.c.outcome,
    calls.c.error_kind,
    calls.c.input_tokens,
    calls.c.output_tokens,
    calls.c.cost_usd,
    calls.c.price_missing,
    calls.c.latency_ms,
    calls.c.attempt_count,
)


def list_calls(store: Store, *, run_id: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    """Return the newest calls first, optionally only those of one run."""
    query = select(*_LIST_COLUMNS).order_by(calls.c.started_at.desc()).limit(limit)
    if run_id is not None:
        query = query.where(calls.c.run_id == run_id)
    with store.engine.connect() as connection:
        return [_with_utc(dict(row._mapping)) for row in connection.execute(query)]


def _with_utc(row: dict[str, Any]) -> dict[str, Any]:
    started = row.get("started_at")
    if isinstance(started, datetime):
        row["started_at"] = as_utc(started)
    return row


def get_call(store: Store, call_id: str) -> CallRecord:
    """Return one record by its id or a unique prefix of it.

    Raises:
        StoreError: no call matches, or the prefix matches several.
    """
    if not call_id:
        raise StoreError("a call id is required; list ids with `trunkline calls`")
    query = (
        select(calls.c.call_id, calls.c.record)
        .where(calls.c.call_id.startswith(call_id, autoescape=True))
        .limit(6)
    )
    with store.engine.connect() as connection:
        rows = connection.execute(query).all()
    if not rows:
        raise StoreError(
            f"no call with id {call_id!r} in {store.safe_url()}; list ids with `trunkline calls`"
        )
    if len(rows) > 1:
        matched_ids = ", ".join(row.call_id for row in rows[:5])
        more = ", ..." if len(rows) > 5 else ""
        raise StoreError(
            f"call id prefix {call_id!r} matches several calls ({matched_ids}{more}); "
            "give more characters"
        )
    return CallRecord.model_validate_json(rows[0].record)


def cost_summary(store: Store, by: CostGrouping) -> list[dict[str, Any]]:
    """Sum calls, tokens and cost per model, per day or per run.

    `cost_usd` sums only priced calls; `unpriced_calls` counts the calls
    whose model had no known price, so a report never shows them as free.
    """
    if by == "model":
        key = func.coalesce(calls.c.model_served, calls.c.model_requested)
    elif by == "day":
        key = func.substr(func.cast(calls.c.started_at, Text()), 1, 10)
    elif by == "run":
        key = func.coalesce(calls.c.run_id, "(none)")
    else:
        raise StoreError(f"cannot group costs by {by!r}; expected model, day or run")
    query = (
        select(
            key.label("key"),
            func.count().label("calls"),
            summed(case((calls.c.outcome == "error", 1), else_=0)).label("errors"),
            summed(calls.c.input_tokens).label("input_tokens"),
            summed(calls.c.output_tokens).label("output_tokens"),
            summed(calls.c.cache_read_tokens).label("cache_read_tokens"),
            summed(calls.c.reasoning_tokens).label("reasoning_tokens"),
            summed(calls.c.cost_usd).label("cost_usd"),
            summed(case((calls.c.price_missing, 1), else_=0)).label("unpriced_calls"),
        )
        .group_by(key)
        .order_by(key)
    )
    with store.engine.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(query)]


@dataclass(frozen=True)
class RunCallLabels:
    """Routes, deployments, models and prompts of one run's calls, each sorted and distinct."""

    calls: int
    routes: list[str]
    deployments: list[str]
    models: list[str]
    prompt_names: list[str]
    prompt_versions: list[str]


def run_call_labels(store: Store, run_id: str) -> RunCallLabels:
    """Return the routes, deployments, served models and prompts of a run's calls.

    A call that failed before any model responded has no served model, so
    `models` contains the requested one for it.
    """
    model = func.coalesce(calls.c.model_served, calls.c.model_requested)
    labels = (calls.c.route, calls.c.deployment, model, calls.c.prompt_name, calls.c.prompt_version)
    distinct_query = select(*labels).where(calls.c.run_id == run_id).distinct()
    count_query = select(func.count()).select_from(calls).where(calls.c.run_id == run_id)
    with store.engine.connect() as connection:
        combinations = connection.execute(distinct_query).all()
        count = connection.execute(count_query).scalar_one()

    def values(position: int) -> list[str]:
        return sorted({row[position] for row in combinations if row[position] is not None})

    return RunCallLabels(
        calls=count,
        routes=values(0),
        deployments=values(1),
        models=values(2),
        prompt_names=values(3),
        prompt_versions=values(4),
    )


def recent_attempts(store: Store, *, since: datetime, limit: int = 5000) -> list[dict[str, Any]]:
    """Return the attempts of calls started since `since`, oldest first.

    Each item has ``deployment``, ``outcome``, ``error_kind`` and ``ended_at``
    (a UTC datetime), which is what replaying a circuit breaker needs.
    """
    query = (
        select(calls.c.record)
        .where(calls.c.started_at >= since)
        .order_by(calls.c.started_at.desc())
        .limit(limit)
    )
    with store.engine.connect() as connection:
        records = [CallRecord.model_validate_json(row.record) for row in connection.execute(query)]
    attempts = []
    for record in records:
        for attempt in record.attempts:
            started = as_utc(attempt.started_at)
            attempts.append(
                {
                    "deployment": attempt.deployment,
                    "outcome": attempt.outcome,
                    "error_kind": attempt.error_kind,
                    "ended_at": started + timedelta(milliseconds=attempt.latency_ms),
                }
            )
    attempts.sort(key=lambda item: item["ended_at"])
    return attempts
