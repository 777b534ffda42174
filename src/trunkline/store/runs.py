"""Batch runs and their per-row results, which make a run resumable."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, case, func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from trunkline.errors import StoreError
from trunkline.store.database import Store
from trunkline.store.sums import summed
from trunkline.store.tables import calls, run_rows, runs, spans
from trunkline.store.writer import DuplicateCalls, insert_rows


def create_run(
    store: Store,
    *,
    run_id: str,
    workflow: str,
    workflow_path: str | None,
    data_path: str | None,
    data_hash: str | None,
    workflow_hash: str | None = None,
    params: dict[str, Any],
    row_count: int,
) -> None:
    with store.engine.begin() as connection:
        connection.execute(
            runs.insert().values(
                run_id=run_id,
                workflow=workflow,
                workflow_path=workflow_path,
                data_path=data_path,
                data_hash=data_hash,
                workflow_hash=workflow_hash,
                params=params,
                status="running",
                started_at=datetime.now(UTC),
                row_count=row_count,
            )
        )


def get_run(store: Store, run_id: str) -> dict[str, Any]:
    """Return one run's row.

    Raises:
        StoreError: no run has that id.
    """
    with store.engine.connect() as connection:
        row = connection.execute(select(runs).where(runs.c.run_id == run_id)).first()
    if row is None:
        raise StoreError(
            f"no run with id {run_id!r} in {store.safe_url()}; list runs with `trunkline runs`"
        )
    return dict(row._mapping)


def list_runs(store: Store, *, limit: int) -> list[dict[str, Any]]:
    """Return the newest runs first."""
    query = select(runs).order_by(runs.c.started_at.desc()).limit(limit)
    with store.engine.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(query)]


def mark_run(store: Store, run_id: str, *, status: str, summary: dict[str, Any] | None = None) -> None:
    values: dict[str, Any] = {"status": status, "ended_at": datetime.now(UTC)}
    if summary is not None:
        values["summary"] = summary
    with store.engine.begin() as connection:
        connection.execute(update(runs).where(runs.c.run_id == run_id).values(**values))


def finished_rows(store: Store, run_id: str) -> dict[int, dict[str, Any]]:
    """Return the stored results of a run's rows that ended ok, by row index."""
    query = select(run_rows).where(run_rows.c.run_id == run_id, run_rows.c.status == "ok")
    with store.engine.connect() as connection:
        return {row.row_index: dict(row._mapping) for row in connection.execute(query)}


def failed_rows(store: Store, run_id: str, *, limit: int) -> list[dict[str, Any]]:
    """Return up to `limit` rows of a run that ended in an error, first rows first."""
    query = (
        select(run_rows)
        .where(run_rows.c.run_id == run_id, run_rows.c.status != "ok")
        .order_by(run_rows.c.row_index)
        .limit(limit)
    )
    with store.engine.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(query)]


def all_rows(store: Store, run_id: str) -> list[dict[str, Any]]:
    query = select(run_rows).where(run_rows.c.run_id == run_id).order_by(run_rows.c.row_index)
    with store.engine.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(query)]


def run_spend(store: Store, run_id: str) -> dict[str, Any]:
    """Return the tokens and cost of every call recorded under `run_id`.

    A resumed run re-runs its failed rows, and a row keeps the figures of its
    last try only. The calls of earlier tries were paid for too, so a run's
    spend is summed over its calls rather than its rows.
    """
    return _spend(store, calls.c.run_id == run_id)


def trace_spend(store: Store, trace_id: str) -> dict[str, Any]:
    """Return the tokens and cost of every call recorded under `trace_id`, in the same form as `run_spend`."""
    return _spend(store, calls.c.trace_id == trace_id)


def _spend(store: Store, condition: Any) -> dict[str, Any]:
    query = select(
        func.count().label("calls"),
        func.coalesce(summed(calls.c.input_tokens), 0).label("input_tokens"),
        func.coalesce(summed(calls.c.output_tokens), 0).label("output_tokens"),
        func.coalesce(summed(case((calls.c.price_missing.is_(False), calls.c.cost_usd), else_=0.0)), 0.0).label(
            "cost_usd_priced"
        ),
        func.coalesce(summed(case((calls.c.price_missing.is_(True), 1), else_=0)), 0).label("unpriced_calls"),
    ).where(condition)
    with store.engine.connect() as connection:
        row = connection.execute(query).mappings().one()
    return dict(row)


@dataclass(frozen=True)
class RowWithRecords:
    """A row's result with the `calls` and `spans` rows of the calls it made."""

    row: dict[str, Any]
    call_rows: list[dict[str, Any]]
    span_rows: list[dict[str, Any]]


def store_rows_once(store: Store, items: list[RowWithRecords]) -> list[bool]:
    """Store rows' results with their calls and spans in one transaction, skipping rows already ok.

    A row that ended in an error before is replaced, as a resumed run replaces
    it. A row the run already has as ok is not written, nor are its calls
    and spans, and its entry in the returned list is False: a row that two
    workers both ran is stored, and its calls counted, once. Rollups grow
    with the new calls in the same transaction, as the background writer
    grows them.
    """
    try:
        with store.engine.begin() as connection:
            return _store_rows(connection, items, exact=False)
    except DuplicateCalls:
        with store.engine.begin() as connection:
            return _store_rows(connection, items, exact=True)


def _store_rows(connection: Connection, items: list[RowWithRecords], *, exact: bool) -> list[bool]:
    module = sqlite if connection.dialect.name == "sqlite" else postgresql
    insert = module.insert(run_rows)
    statement = insert.on_conflict_do_update(
        index_elements=[run_rows.c.run_id, run_rows.c.row_index],
        set_={column.name: insert.excluded[column.name] for column in run_rows.c if not column.primary_key},
        where=run_rows.c.status != "ok",
    ).returning(run_rows.c.run_id, run_rows.c.row_index)
    values = [{column.name: item.row.get(column.name) for column in run_rows.c} for item in items]
    written = {(row.run_id, row.row_index) for row in connection.execute(statement, values)}
    stored = [(item.row["run_id"], item.row["row_index"]) in written for item in items]
    new_spans: list[dict[str, Any]] = []
    new_calls: list[dict[str, Any]] = []
    for item, kept in zip(items, stored, strict=True):
        if kept:
            new_spans.extend(item.span_rows)
            new_calls.extend(item.call_rows)
    if new_spans:
        insert_rows(connection, spans, new_spans, exact=exact)
    if new_calls:
        insert_rows(connection, calls, new_calls, exact=exact)
    return stored
