"""Deleting old records in small transactions, so that writers are never locked out for long."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from sqlalchemy import Column, Connection, Table, delete, func, or_, select
from sqlalchemy.sql.elements import ColumnElement

from trunkline.errors import ConfigError
from trunkline.store.database import Store
from trunkline.store.tables import calls, run_rows, runs, spans

_UNITS = {
    "m": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
    "w": timedelta(weeks=1),
}
_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([mhdw])\s*$")

#: The largest age accepted, 100 years. Ages past about 2,000 years put the
#: cutoff before year 1, which `datetime` cannot represent.
MAX_AGE_DAYS = 36500


def parse_age(text: str) -> timedelta:
    """Parse an age such as ``30d``, ``12h``, ``90m`` or ``2w``.

    Raises:
        ConfigError: the text is not a number followed by m, h, d or w, or the
            age is not above zero and at most `MAX_AGE_DAYS` days.
    """
    match = _AGE.match(text)
    if match is None:
        raise ConfigError(
            f"age {text!r} is not a number followed by m, h, d or w (minutes, hours, days, "
            "weeks); write, for example, 30d"
        )
    amount, unit = float(match.group(1)), match.group(2)
    if amount <= 0:
        raise ConfigError(f"age {text!r} must be above zero; write, for example, 30d")
    # The age is compared as a float, because building a timedelta this large overflows.
    if amount * (_UNITS[unit] / timedelta(days=1)) > MAX_AGE_DAYS:
        raise ConfigError(
            f"age {text!r} is above the maximum of {MAX_AGE_DAYS}d (100 years); "
            "write a smaller age, such as 30d"
        )
    return amount * _UNITS[unit]


def retention_age(days: float) -> timedelta:
    """Convert the ``retention_days`` setting to an age.

    Raises:
        ConfigError: `days` is above `MAX_AGE_DAYS`.
    """
    if days > MAX_AGE_DAYS:
        raise ConfigError(
            f"retention_days = {days:g} under [store] is above the maximum of "
            f"{MAX_AGE_DAYS} (100 years); set a smaller value in trunkline.toml"
        )
    return timedelta(days=days)


def prune(
    store: Store, before: datetime, *, batch_size: int = 500, dry_run: bool = False
) -> dict[str, int]:
    """Delete calls, spans and finished runs that started before `before`; return counts by table.

    Each transaction deletes at most `batch_size` calls or spans, or one
    run with its rows, so the background writer and other readers wait at
    most one small transaction. Runs still marked running are kept with their
    rows, calls and spans, so they can still be resumed and traced. Calls and
    spans with no run are deleted by age alone. Experiments are kept, because
    score-based downgrades read them. With `dry_run`, nothing is deleted and
    the counts are what would be.
    """
    running = select(runs.c.run_id).where(runs.c.status == "running")
    old_calls = (calls.c.started_at < before) & or_(
        calls.c.run_id.is_(None), calls.c.run_id.not_in(running)
    )
    old_spans = (spans.c.started_at < before) & or_(
        spans.c.run_id.is_(None), spans.c.run_id.not_in(running)
    )
    old_runs = (runs.c.started_at < before) & (runs.c.status != "running")
    with store.engine.connect() as connection:
        run_ids = [row.run_id for row in connection.execute(select(runs.c.run_id).where(old_runs))]
        if dry_run:
            return {
                "calls": _count(connection, calls, old_calls),
                "spans": _count(connection, spans, old_spans),
                "runs": len(run_ids),
                "run_rows": _count(connection, run_rows, run_rows.c.run_id.in_(run_ids)),
            }
    counts = {
        "calls": _delete_in_batches(store, calls.c.call_id, old_calls, batch_size),
        "spans": _delete_in_batches(store, spans.c.span_id, old_spans, batch_size),
        "runs": 0,
        "run_rows": 0,
    }
    for run_id in run_ids:
        with store.engine.begin() as connection:
            result = connection.execute(delete(run_rows).where(run_rows.c.run_id == run_id))
            counts["run_rows"] += result.rowcount or 0
            connection.execute(delete(runs).where(runs.c.run_id == run_id))
            counts["runs"] += 1
    return counts


def _count(connection: Connection, table: Table, condition: ColumnElement[bool]) -> int:
    return connection.execute(select(func.count()).select_from(table).where(condition)).scalar_one()


def _delete_in_batches(
    store: Store, key: Column, condition: ColumnElement[bool], batch_size: int
) -> int:
    deleted = 0
    while True:
        with store.engine.begin() as connection:
            keys = [row[0] for row in connection.execute(select(key).where(condition).limit(batch_size))]
            if not keys:
                return deleted
            connection.execute(delete(key.table).where(key.in_(keys)))
        deleted += len(keys)
