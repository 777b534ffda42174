"""Records per second the store writer commits, beside SQLAlchemy's own executemany of the same rows.

Each call is what the gateway records for one chat completion: a `calls`
row with the whole record as JSON, its span, and its share of the hourly
and daily rollups. Two variants commit the same calls into a fresh SQLite
store, in transactions of `--batch` calls (100 calls, 200 rows, as the
gateway's writer does at its default batch size):

- ``writer``: `StoreWriter`, the calls exported one by one from the main
  thread and committed by its thread, with statements compiled once;
- ``sqlalchemy``: the same rows, rollups included, passed to
  `Connection.execute` as lists of dicts in the main thread, as the writer
  did before it compiled its statements. Each batch builds its upserts
  again and reads the new calls back through RETURNING.

With ``--postgres``, both variants also run against PostgreSQL: a
throwaway cluster on 127.0.0.1 (Debian's ``initdb`` and ``pg_ctl``, started
as `tests/pgserver.py` starts it for the tests), a fresh database for each
run. Its server processes' CPU time is not counted, only this process's.

Rounds alternate the order. The table gives medians over rounds: calls
committed per second, rows per second, and the process's CPU time per
call, which is what a gateway pays beside its requests.

    python benchmarks/store_ingest.py --calls 20000 --rounds 3 [--postgres]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.dialects import postgresql, sqlite

from trunkline.routing.state import span_attributes
from trunkline.store.database import open_store
from trunkline.store.rollups import DAILY_KEY, HOURLY_KEY, SUMMED_COLUMNS, RollupSums
from trunkline.store.tables import call_rollups_daily, call_rollups_hourly, calls, spans
from trunkline.store.writer import API_KEY_TAG, StoreWriter, call_row, span_row
from trunkline.types import CallRecord, Cost, Message, Usage
from trunkline.types.calls import Attempt
from trunkline.types.spans import SpanRecord

ANSWER = "Hello! How can I help you today? Ask me anything about your account."


def sample_calls(count: int) -> list[tuple[CallRecord, SpanRecord]]:
    """Return `count` gateway-like calls, one a millisecond, with their spans."""
    start = datetime(2026, 12, 1, 12, tzinfo=UTC)
    pairs = []
    for index in range(count):
        started = start + timedelta(milliseconds=index)
        ended = started + timedelta(microseconds=450)
        span_id = f"{index:016x}"
        record = CallRecord(
            call_id=f"{index:032x}",
            trace_id=f"{index + 1:032x}",
            span_id=span_id,
            route="chat",
            provider="openai",
            deployment="mock",
            model_requested="gpt-4o-mini",
            model_served="gpt-4o-mini-2024-07-18",
            messages=[Message.user("Say hello")],
            output_text=ANSWER,
            finish_reason="stop",
            usage=Usage(input_tokens=9, output_tokens=12),
            cost=Cost(input_usd=1.35e-6, output_usd=7.2e-6, total_usd=8.55e-6),
            started_at=started,
            ended_at=ended,
            latency_ms=0.45,
            outcome="ok",
            attempts=[
                Attempt(
                    attempt_number=1,
                    deployment="mock",
                    provider="openai",
                    model="gpt-4o-mini",
                    outcome="ok",
                    started_at=started,
                    latency_ms=0.3,
                    span_id=f"{index + 2**40:016x}",
                )
            ],
            tags={API_KEY_TAG: "k1"},
        )
        span = SpanRecord(
            span_id=span_id,
            trace_id=record.trace_id,
            name="chat gpt-4o-mini",
            kind="call",
            started_at=started,
            ended_at=ended,
            attributes=span_attributes(record),
        )
        pairs.append((record, span))
    return pairs


def through_writer(store_url: str, pairs: list[tuple[CallRecord, SpanRecord]], batch: int) -> None:
    store = open_store(store_url)
    writer = StoreWriter(store, batch_size=2 * batch, flush_interval_s=0.5)
    for number, (record, span) in enumerate(pairs, 1):
        writer.export_call(record)
        writer.export_span(span)
        if number % batch == 0:
            writer.flush()
    writer.close()
    store.dispose()


def through_sqlalchemy(store_url: str, pairs: list[tuple[CallRecord, SpanRecord]], batch: int) -> None:
    store = open_store(store_url)
    dialect = sqlite if store.engine.dialect.name == "sqlite" else postgresql
    for start in range(0, len(pairs), batch):
        chunk = pairs[start : start + batch]
        call_rows = [call_row(record) for record, _ in chunk]
        span_rows = [span_row(span) for _, span in chunk]
        with store.engine.begin() as connection:
            # RETURNING lists the calls that are new, so only they count in the rollups.
            statement = dialect.insert(calls).on_conflict_do_nothing().returning(calls.c.call_id)
            inserted = {row.call_id for row in connection.execute(statement, call_rows)}
            connection.execute(dialect.insert(spans).on_conflict_do_nothing(), span_rows)
            sums = RollupSums()
            for row in call_rows:
                if row["call_id"] in inserted:
                    sums.add(row, "")
            for table, key, rows in (
                (call_rollups_daily, DAILY_KEY, sums.daily),
                (call_rollups_hourly, HOURLY_KEY, sums.hourly),
            ):
                statement = dialect.insert(table)
                statement = statement.on_conflict_do_update(
                    index_elements=list(key),
                    set_={name: table.c[name] + statement.excluded[name] for name in SUMMED_COLUMNS},
                )
                values = [
                    {**dict(zip(key, row_key, strict=True)), **dict(zip(SUMMED_COLUMNS, totals, strict=True))}
                    for row_key, totals in sorted(rows.items())
                ]
                connection.execute(statement, values)
    store.dispose()


def count_calls(engine: Engine) -> int:
    with engine.connect() as connection:
        return connection.exec_driver_sql("SELECT count(*) FROM calls").scalar_one()


def measure(variant: Callable[[str, list, int], None], url: str, pairs: list, batch: int) -> tuple[float, float]:
    """Return the wall seconds and process CPU seconds of one variant's run into the fresh store at `url`."""
    open_store(url).dispose()
    wall, cpu = time.perf_counter(), time.process_time()
    variant(url, pairs, batch)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    store = open_store(url)
    stored = count_calls(store.engine)
    store.dispose()
    if stored != len(pairs):
        raise RuntimeError(f"{variant.__name__} stored {stored} of {len(pairs)} calls")
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000, help="calls per run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=100, help="calls per transaction")
    parser.add_argument("--postgres", action="store_true", help="also run on a throwaway PostgreSQL cluster")
    arguments = parser.parse_args()

    pairs = sample_calls(arguments.calls)
    variants = {"writer": through_writer, "sqlalchemy": through_sqlalchemy}
    backends = ["sqlite", "postgresql"] if arguments.postgres else ["sqlite"]
    results: dict[tuple[str, str], list[tuple[float, float]]] = {
        (backend, name): [] for backend in backends for name in variants
    }
    server = start_postgres() if arguments.postgres else None
    try:
        with tempfile.TemporaryDirectory(prefix="trunkline-ingest-") as folder:
            for number in range(arguments.rounds):
                keys = list(results)
                keys = keys[number % len(keys) :] + keys[: number % len(keys)]
                for backend, name in keys:
                    if backend == "sqlite":
                        url = f"sqlite:///{Path(folder) / f'{time.monotonic_ns()}.db'}"
                    else:
                        url = server.new_database()
                    wall, cpu = measure(variants[name], url, pairs, arguments.batch)
                    if server is not None and backend != "sqlite":
                        server.drop_database(url)
                    results[(backend, name)].append((wall, cpu))
                    print(f"round {number + 1} {backend:<10} {name:<11} {arguments.calls / wall:9,.0f} calls/s  "
                          f"{cpu / arguments.calls * 1e6:6.1f} us CPU/call", flush=True)
    finally:
        if server is not None:
            server.stop()

    print(f"\n{arguments.calls:,} calls a run, {arguments.batch} calls (and as many spans) a transaction, "
          f"medians of {arguments.rounds} rounds")
    print(f"{'store':<11} {'variant':<12} {'calls/s':>9} {'rows/s':>9} {'CPU us/call':>12} {'CPU vs sqlalchemy':>18}")
    medians = {
        key: (
            statistics.median(arguments.calls / wall for wall, _ in runs),
            statistics.median(cpu / arguments.calls * 1e6 for _, cpu in runs),
        )
        for key, runs in results.items()
    }
    for (backend, name), (rate, cpu_us) in medians.items():
        ratio = cpu_us / medians[(backend, "sqlalchemy")][1]
        print(f"{backend:<11} {name:<12} {rate:9,.0f} {2 * rate:9,.0f} {cpu_us:12.1f} {ratio:17.2f}x")


def start_postgres():  # noqa: ANN201
    """Start the throwaway cluster the tests use; exit with a message where PostgreSQL is missing."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from pgserver import PostgresServer, find_binaries

    binaries = find_binaries()
    if binaries is None:
        sys.exit("--postgres needs PostgreSQL's initdb and pg_ctl; install it (apt-get install postgresql)")
    server = PostgresServer(binaries)
    server.start()
    return server


if __name__ == "__main__":
    main()
