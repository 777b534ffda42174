"""The background writer: records leave the call path and are committed in batches.

`StoreWriter` is a tracing exporter whose `export_call` and `export_span`
only put the record on a queue. One daemon thread commits what is queued
every `flush_interval_s`, or as soon as `batch_size` rows are waiting, in
transactions of up to `batch_size` rows. A crash loses what was queued but
not yet committed, at most about `flush_interval_s` of records; `close()`,
which also runs at interpreter exit, commits everything still queued.

The transaction that inserts a batch of calls also adds them to the daily
and hourly rollups (see `trunkline.store.rollups`), so the dashboard's sums
never miss or double-count a committed call.
"""

from __future__ import annotations

import atexit
import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError

from trunkline.store.bulk import UPSERT_DIALECTS, PreparedInsert
from trunkline.store.database import Store
from trunkline.store.rollups import add_calls
from trunkline.store.tables import calls, run_rows, spans
from trunkline.types.calls import CallRecord
from trunkline.types.spans import SpanRecord

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Row:
    """A row to insert; records are converted by the writer thread, off the call path."""

    table: Table
    source: Any
    convert: Any = None

    @property
    def values(self) -> dict[str, Any]:
        return self.convert(self.source) if self.convert else self.source


@dataclass(frozen=True)
class _FlushMarker:
    done: threading.Event


_STOP = object()

#: Records converted between two hand-overs of the GIL.
_ROWS_PER_YIELD = 16


class DuplicateCalls(Exception):
    """A batch held calls stored before: roll it back and insert it again with ``exact=True``."""


# A record exported twice (a re-sent run, a retried batch) is kept once; a
# later result for a run's row replaces the earlier one.
_UPSERTS = {
    calls: PreparedInsert(calls, on_conflict="skip"),
    spans: PreparedInsert(spans, on_conflict="skip"),
    run_rows: PreparedInsert(run_rows, on_conflict="replace"),
}
_PLAIN_INSERTS = {table: PreparedInsert(table) for table in _UPSERTS}


#: The tag under which the gateway names the key that made a call.
API_KEY_TAG = "api_key"


def call_row(record: CallRecord) -> dict[str, Any]:
    """Return the `calls` table row for a record."""
    usage = record.usage
    return {
        "call_id": record.call_id,
        "schema_version": record.schema_version,
        "trace_id": record.trace_id,
        "span_id": record.span_id,
        "parent_span_id": record.parent_span_id,
        "run_id": record.run_id,
        "session_id": record.session_id,
        "route": record.route,
        "provider": record.provider,
        "deployment": record.deployment,
        "model_requested": record.model_requested,
        "model_served": record.model_served,
        "prompt_name": record.prompt_name,
        "prompt_version": record.prompt_version,
        "outcome": record.outcome,
        "error_kind": record.error_kind.value if record.error_kind else None,
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cache_read_tokens": usage.cache_read_tokens,
        "cache_write_tokens": usage.cache_write_tokens,
        "reasoning_tokens": usage.reasoning_tokens,
        "usage_estimated": usage.estimated,
        "cost_usd": record.cost.total_usd,
        "price_missing": record.cost.price_missing,
        "started_at": record.started_at,
        "ended_at": record.ended_at,
        "latency_ms": record.latency_ms,
        "attempt_count": len(record.attempts),
        "retry_count": record.retries,
        "fallback_count": record.fallbacks_taken,
        "record": record.model_dump_json(),
        "api_key_id": record.tags.get(API_KEY_TAG),
        "batch_id": record.batch_id,
    }


def span_row(record: SpanRecord) -> dict[str, Any]:
    return record.model_dump(mode="python")


class StoreWriter:
    """Commits call records, spans and run rows to a `Store` from a background thread."""

    def __init__(self, store: Store, *, batch_size: int = 200, flush_interval_s: float = 0.5) -> None:
        self.store = store
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        # SimpleQueue's put is a C call with no Python-level lock, so the
        # call path pays well under a microsecond per record.
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        # Set when a batch is full, or on flush and close, to end the sleep early.
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="trunkline-store-writer", daemon=True)
        self._closed = False
        #: Rows that could not be committed, counted for reports and tests.
        self.failed_rows = 0
        self._thread.start()
        atexit.register(self.close)

    def export_call(self, record: CallRecord) -> None:
        self._put(_Row(calls, record, call_row))

    def export_span(self, record: SpanRecord) -> None:
        self._put(_Row(spans, record, span_row))

    def put_run_row(self, values: dict[str, Any]) -> None:
        """Queue a row result of a batch run; a later result for the same row replaces it."""
        self._put(_Row(run_rows, values))

    def _put(self, item: _Row) -> None:
        if self._closed:
            logger.warning("store writer is closed; dropping a %s row", item.table.name)
            self.failed_rows += 1
            return
        self._queue.put(item)
        if self._queue.qsize() >= self.batch_size:
            self._wake.set()

    def flush(self, timeout_s: float | None = None) -> bool:
        """Block until everything queued so far is committed; False on timeout."""
        if not self._thread.is_alive():
            return self._queue.empty()
        marker = _FlushMarker(threading.Event())
        self._queue.put(marker)
        self._wake.set()
        return marker.done.wait(timeout_s)

    def close(self) -> None:
        """Commit what is queued and stop the thread; calling it twice is harmless."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._wake.set()
        self._thread.join()
        atexit.unregister(self.close)

    def _loop(self) -> None:
        stop = False
        while not stop:
            # The thread sleeps between batches instead of waking for every
            # record: a wake-up per record would hand the GIL back and forth
            # with the event loop hundreds of times a second under load.
            self._wake.wait(self.flush_interval_s)
            self._wake.clear()
            batch, markers, stop = self._collect()
            for start in range(0, len(batch), self.batch_size):
                self._commit(batch[start : start + self.batch_size])
            for marker in markers:
                marker.done.set()
        self._drain()

    def _collect(self) -> tuple[list[_Row], list[_FlushMarker], bool]:
        """Take everything queued so far, the flush markers and whether to stop."""
        batch: list[_Row] = []
        markers: list[_FlushMarker] = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return batch, markers, False
            if item is _STOP:
                return batch, markers, True
            if isinstance(item, _FlushMarker):
                markers.append(item)
            else:
                batch.append(item)

    def _drain(self) -> None:
        rest: list[_Row] = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, _Row):
                rest.append(item)
            elif isinstance(item, _FlushMarker):
                item.done.set()
        self._commit(rest)

    def _commit(self, batch: list[_Row]) -> None:
        if not batch:
            return
        grouped = self._group(batch)
        try:
            try:
                self._commit_grouped(grouped, exact=False)
            except DuplicateCalls:
                self._commit_grouped(grouped, exact=True)
        except SQLAlchemyError as error:
            logger.warning(
                "committing %d records failed (%s); retrying them one by one", len(batch), error
            )
            self._commit_one_by_one(batch)

    def _commit_grouped(self, grouped: dict[Table, list[dict[str, Any]]], *, exact: bool) -> None:
        with self.store.engine.begin() as connection:
            for table, rows in grouped.items():
                insert_rows(connection, table, rows, exact=exact)

    def _commit_one_by_one(self, batch: list[_Row]) -> None:
        dropped = 0
        last_error: SQLAlchemyError | None = None
        for row in batch:
            rows = self._group([row]).get(row.table)
            if not rows:
                continue
            try:
                with self.store.engine.begin() as connection:
                    insert_rows(connection, row.table, rows, exact=True)
            except SQLAlchemyError as error:
                dropped += 1
                last_error = error
        if dropped:
            # One line per batch, not per row, so a store that has become
            # unwritable does not flood the log.
            self.failed_rows += dropped
            logger.error(
                "dropped %d of %d records that cannot be stored in %s (%d dropped so far): %s",
                dropped,
                len(batch),
                self.store.safe_url(),
                self.failed_rows,
                last_error,
            )

    def _group(self, batch: list[_Row]) -> dict[Table, list[dict[str, Any]]]:
        grouped: dict[Table, list[dict[str, Any]]] = {}
        for number, row in enumerate(batch, 1):
            if number % _ROWS_PER_YIELD == 0:
                # Converting a record holds the GIL for roughly 10 us (estimated
                # from profiles). A pause every few rows lets a waiting event loop
                # run before the interpreter's 5 ms switch interval would force it.
                time.sleep(0)
            try:
                values = row.values
            except Exception:  # a record that cannot be converted must not stop the writer
                self.failed_rows += 1
                logger.exception("dropping a %s record that cannot be converted", row.table.name)
                continue
            grouped.setdefault(row.table, []).append(values)
        return grouped


def insert_rows(connection: Connection, table: Table, rows: list[dict[str, Any]], *, exact: bool) -> None:
    """Insert rows of `calls`, `spans` or `run_rows`, keeping calls and spans stored before.

    New calls are added to the rollups. Without `exact`, duplicate calls
    raise `DuplicateCalls`, after which the caller rolls back and inserts
    again with `exact`, which reads the new calls back through RETURNING.
    """
    if connection.dialect.name not in UPSERT_DIALECTS:
        # A plain insert fails on a row stored before, so every row it keeps is new.
        _PLAIN_INSERTS[table].execute(connection, rows)
        if table is calls:
            add_calls(connection, rows)
        return
    if table is calls and exact:
        insert_calls_exactly(connection, rows)
        return
    written = _UPSERTS[table].execute(connection, rows)
    if table is not calls:
        return
    if written != len(rows):
        # Some calls were stored before, or the driver cannot count the
        # rows written: roll back, and insert again the exact way.
        raise DuplicateCalls
    add_calls(connection, rows)


def insert_calls_exactly(connection: Connection, rows: list[dict[str, Any]]) -> int:
    """Insert calls, add to the rollups only those RETURNING reports as new, and return their count."""
    module = sqlite if connection.dialect.name == "sqlite" else postgresql
    statement = module.insert(calls).on_conflict_do_nothing(index_elements=[calls.c.call_id.name])
    # A call queued twice in this batch is new only the first time.
    inserted = {row.call_id for row in connection.execute(statement.returning(calls.c.call_id), rows)}
    new_rows = []
    for row in rows:
        if row["call_id"] in inserted:
            inserted.discard(row["call_id"])
            new_rows.append(row)
    add_calls(connection, new_rows)
    return len(new_rows)



