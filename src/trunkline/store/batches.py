"""The Batch API jobs of runs: one per step and submission, kept so a resumed run finds them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select, update

from trunkline.store.database import Store
from trunkline.store.tables import provider_batches


def save_batch(
    store: Store,
    *,
    batch_id: str,
    run_id: str,
    step: str,
    deployment: str,
    provider: str,
    input_file_id: str,
    status: str,
    rows: dict[str, dict[str, Any]],
    created_at: datetime,
) -> None:
    """Store a job the provider accepted, before anything waits on it."""
    with store.engine.begin() as connection:
        connection.execute(
            provider_batches.insert().values(
                batch_id=batch_id,
                run_id=run_id,
                step=step,
                deployment=deployment,
                provider=provider,
                input_file_id=input_file_id,
                status=status,
                collected=False,
                row_count=len(rows),
                rows=rows,
                created_at=created_at,
            )
        )


def update_batch(store: Store, batch_id: str, **values: Any) -> None:
    """Set columns of a stored job, such as its status, files and counts."""
    with store.engine.begin() as connection:
        connection.execute(
            update(provider_batches).where(provider_batches.c.batch_id == batch_id).values(**values)
        )


def uncollected_batches(store: Store, run_id: str, step: str) -> list[dict[str, Any]]:
    """Return the jobs of a run's step whose results no row has taken yet, oldest first."""
    query = (
        select(provider_batches)
        .where(
            provider_batches.c.run_id == run_id,
            provider_batches.c.step == step,
            provider_batches.c.collected.is_(False),
        )
        .order_by(provider_batches.c.created_at)
    )
    with store.engine.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(query)]


def run_batches(store: Store, run_id: str) -> list[dict[str, Any]]:
    """Return every job of a run, oldest first."""
    query = (
        select(provider_batches)
        .where(provider_batches.c.run_id == run_id)
        .order_by(provider_batches.c.created_at)
    )
    with store.engine.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(query)]
