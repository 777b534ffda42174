"""Copy one store's records into another, such as a laptop's SQLite file into a shared PostgreSQL.

Rows are read in batches and each batch is committed on its own, so an
interrupted copy keeps what it committed. A row whose key the target has
already is kept as the target has it, so a second run goes on from there. The
audit log and the label moves have generated ids, so their rows count as
present when the target has one with the same content. The rollups are not
copied. Each call the target did not have is added to them, as the writer
adds a new call, so a copy into a store that already has calls counts each
call once.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, Table, select

from trunkline.errors import StoreError
from trunkline.store.bulk import UPSERT_DIALECTS, PreparedInsert
from trunkline.store.database import Store, as_utc
from trunkline.store.tables import (
    api_keys,
    audit_log,
    call_rollups_daily,
    call_rollups_hourly,
    calls,
    conversation_messages,
    conversation_summaries,
    experiment_rows,
    experiments,
    metadata,
    prompt_label_moves,
    prompt_labels,
    prompt_versions,
    provider_batches,
    run_rows,
    runs,
    spans,
    vector_items,
)
from trunkline.store.writer import insert_calls_exactly

#: Tables whose rows are copied, in this order; every table but the rollups.
COPIED_TABLES = (
    runs,
    run_rows,
    provider_batches,
    calls,
    spans,
    experiments,
    experiment_rows,
    prompt_versions,
    prompt_labels,
    prompt_label_moves,
    api_keys,
    audit_log,
    conversation_messages,
    conversation_summaries,
    vector_items,
)

#: Tables with a generated id, compared on every other column.
_GENERATED_IDS = {prompt_label_moves: "move_id", audit_log: "audit_id"}


@dataclass
class TableCopy:
    """The counts of one table's rows: read from the source, and copied into the target."""

    table: str
    read: int = 0
    copied: int = 0

    @property
    def present(self) -> int:
        """Rows the target had already, and kept as they were."""
        return self.read - self.copied


def copy_store(
    source: Store,
    target: Store,
    *,
    batch_size: int = 1000,
    progress: Callable[[TableCopy], None] | None = None,
) -> list[TableCopy]:
    """Copy every record of `source` that `target` does not have; return the counts per table.

    Both stores must be at the latest schema revision: open the target with
    `open_store` (which migrates it), and migrate the source first.
    `progress` is called after each committed batch.

    Raises:
        StoreError: a store is not at the latest revision, or the target is
            the source, or its database cannot resolve key conflicts.
    """
    head = Store.head_revision()
    for role, store in (("source", source), ("target", target)):
        revision = store.current_revision()
        if revision != head:
            raise StoreError(
                f"the {role} store {store.safe_url()} is at revision {revision}, not the latest "
                f"({head}); run `trunkline db migrate {store.safe_url()}` first"
            )
    if source.engine.url == target.engine.url:
        raise StoreError(f"the source and the target are the same store ({source.safe_url()}); name two stores")
    if target.engine.dialect.name not in UPSERT_DIALECTS:
        raise StoreError(
            f"cannot copy into {target.engine.dialect.name}; the target must be SQLite or PostgreSQL"
        )
    if batch_size < 1:
        raise StoreError(f"batch_size must be 1 or more, got {batch_size}")
    missing = set(metadata.tables.values()) - set(COPIED_TABLES) - {call_rollups_daily, call_rollups_hourly}
    if missing:
        raise StoreError(f"copy does not know the tables {sorted(t.name for t in missing)}")

    results = []
    for table in COPIED_TABLES:
        counts = TableCopy(table.name)
        write = _writer_for(table, target)
        for batch in _batches(source, table, batch_size):
            counts.read += len(batch)
            with target.engine.begin() as connection:
                counts.copied += write(connection, batch)
            if progress is not None:
                progress(counts)
        results.append(counts)
    return results


def _batches(store: Store, table: Table, size: int) -> Iterator[list[dict[str, Any]]]:
    """Read `table` in primary-key order, `size` rows at a time, with times in UTC."""
    times = [column.name for column in table.columns if isinstance(column.type, DateTime)]
    query = select(table).order_by(*table.primary_key.columns).execution_options(yield_per=size)
    with store.engine.connect() as connection:
        for part in connection.execute(query).mappings().partitions(size):
            rows = [dict(row) for row in part]
            for row in rows:
                # SQLite returns times without a zone; PostgreSQL would read them in its own.
                for name in times:
                    if row[name] is not None:
                        row[name] = as_utc(row[name])
            yield rows


def _writer_for(table: Table, target: Store) -> Callable[[Any, list[dict[str, Any]]], int]:
    if table is calls:
        return insert_calls_exactly
    if table in _GENERATED_IDS:
        return _ContentInsert(table, target)
    insert = PreparedInsert(table, on_conflict="skip")
    return insert.execute


class _ContentInsert:
    """Insert rows of a table with generated ids, skipping those whose other columns the target has."""

    def __init__(self, table: Table, target: Store) -> None:
        self.table = table
        self.id_column = _GENERATED_IDS[table]
        self.columns = [column.name for column in table.columns if column.name != self.id_column]
        with target.engine.connect() as connection:
            query = select(*(table.c[name] for name in self.columns))
            self.present = {self._key(dict(row)) for row in connection.execute(query).mappings()}

    def __call__(self, connection: Any, rows: list[dict[str, Any]]) -> int:
        new = []
        for row in rows:
            key = self._key(row)
            if key in self.present:
                continue
            self.present.add(key)
            new.append({name: row[name] for name in self.columns})
        if new:
            connection.execute(self.table.insert(), new)
        return len(new)

    def _key(self, row: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(_comparable(row[name]) for name in self.columns)


def _comparable(value: Any) -> Any:
    if isinstance(value, datetime):
        return as_utc(value)
    if isinstance(value, dict | list):
        # PostgreSQL's JSON may order keys differently from SQLite's.
        return json.dumps(value, sort_keys=True)
    return value
