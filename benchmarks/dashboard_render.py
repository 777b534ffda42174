"""Render time of the dashboard's pages over a SQLite store of 1,000,000 call records.

Builds the store once and keeps it under benchmarks/results/, reusing it
while its call count matches. Then requests each page through the real app
in process, over ASGI with a viewer key, and prints the median and p95 time
per page against the 500 ms target.

The calls are spread over the last 90 days in time order. 7 in 10 come
through 12 gateway keys and 3 in 10 from 40 batch runs of 4 workflows; they
use 6 routes with a primary and a fallback model each (5 % fall back), 1 in
50 goes to a model without a price, 3 % fail, and 1 in 5 belongs to a
session. Rows are bulk-inserted with executemany from rows that `call_row`
made for sample records, so they have the writer's columns. The rollups are
then built by `rebuild_rollups`, which counts calls with the writer's own
code.

    python benchmarks/dashboard_render.py --calls 1000000 --repeats 20
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from trunkline.config import Settings
from trunkline.server.app import create_app
from trunkline.server.dashboard.calls import Cursor
from trunkline.store.database import Store, as_utc, open_store
from trunkline.store.keys import Role, create_key
from trunkline.store.rollups import rebuild_rollups
from trunkline.store.runs import create_run
from trunkline.store.tables import call_rollups_hourly, calls
from trunkline.store.writer import API_KEY_TAG, call_row
from trunkline.types import CallRecord, Cost, FallbackHop, Message, Usage
from trunkline.types.calls import Attempt

TARGET_MS = 500.0
DAYS = 90
CHUNK = 20_000

ROUTES = {
    "chat": ("gpt-4o-mini", "claude-3-5-haiku"),
    "summarise": ("gpt-4o", "gpt-4o-mini"),
    "classify": ("smollm2-135m", "gpt-4o-mini"),
    "extract": ("claude-sonnet-4", "gpt-4o"),
    "translate": ("gpt-4o-mini", "claude-3-5-haiku"),
    "draft": ("claude-3-5-haiku", "gpt-4o-mini"),
}
UNPRICED_MODEL = "house-llm"
WORKFLOWS = ("triage", "support-summary", "invoice-extract", "translate-docs")
#: USD per token, input and output alike; a made-up but plausible spread.
PRICE_PER_TOKEN = {
    "gpt-4o-mini": 0.4e-6,
    "gpt-4o": 5e-6,
    "claude-3-5-haiku": 2e-6,
    "claude-sonnet-4": 8e-6,
    "smollm2-135m": 0.0,
}


@dataclass(frozen=True)
class Seed:
    """Values found in the seeded store, for the filtered page requests."""

    rare_model: str
    session_id: str
    deep_cursor: str


def sample_record(
    index: int, started: datetime, rng: random.Random, keys: list[str], runs: list[str]
) -> CallRecord:
    route = rng.choice(list(ROUTES))
    primary, fallback = ROUTES[route]
    fell_back = rng.random() < 0.05
    model = fallback if fell_back else primary
    if rng.random() < 0.02:
        model = UNPRICED_MODEL
    failed = rng.random() < 0.03
    latency = min(rng.lognormvariate(6.6, 0.7), 90_000.0)
    in_run = rng.random() < 0.3
    tokens_in, tokens_out = rng.randint(50, 4000), rng.randint(5, 800)

    cost = Cost.missing()
    if model in PRICE_PER_TOKEN:
        cost = Cost(total_usd=(tokens_in + tokens_out) * PRICE_PER_TOKEN[model])
    attempt = Attempt(
        attempt_number=1,
        deployment=f"{route}-primary",
        provider="openai",
        model=model,
        outcome="error" if failed else "ok",
        started_at=started,
        latency_ms=latency,
    )
    hops = [FallbackHop(deployment=f"{route}-primary", reason="server_error")] if fell_back else []

    return CallRecord(
        call_id=f"{index:032x}",
        trace_id=f"{index:032x}",
        span_id=f"{index:016x}",
        run_id=rng.choice(runs) if in_run else None,
        session_id=f"session-{index // 10:07d}" if index % 50 < 10 else None,
        tags={} if in_run else {API_KEY_TAG: rng.choice(keys)},
        route=route,
        provider="openai",
        deployment=f"{route}-primary",
        model_requested=primary,
        model_served=None if failed else model,
        messages=[Message.user(f"request {index}: summarise the attached ticket")],
        output_text=None if failed else f"reply {index}",
        usage=Usage(input_tokens=tokens_in, output_tokens=0 if failed else tokens_out),
        cost=cost,
        started_at=started,
        ended_at=started + timedelta(milliseconds=latency),
        latency_ms=latency,
        attempts=[attempt],
        fallbacks=hops,
        outcome="error" if failed else "ok",
        error_kind="server_error" if failed else None,
    )


def seed(store: Store, count: int, *, max_seconds: float) -> Seed:
    """Insert `count` calls spread over the last 90 days, then build the rollups from them."""
    rng = random.Random(7)
    keys = [
        create_key(store, Role.DEVELOPER, name=f"team {number}", actor="benchmark").key.key_id
        for number in range(12)
    ]
    runs = []
    for number in range(40):
        run_id = f"run-{number:03d}"
        create_run(
            store,
            run_id=run_id,
            workflow=WORKFLOWS[number % len(WORKFLOWS)],
            workflow_path=None,
            data_path=None,
            data_hash=None,
            params={},
            row_count=0,
        )
        runs.append(run_id)

    now = datetime.now(UTC)
    offsets = sorted(rng.uniform(0, DAYS * 86400) for _ in range(count))
    began = time.perf_counter()
    for start in range(0, count, CHUNK):
        rows = []
        for index in range(start, min(start + CHUNK, count)):
            started = now - timedelta(seconds=DAYS * 86400 - offsets[index])
            rows.append(call_row(sample_record(index, started, rng, keys, runs)))
        with store.engine.begin() as connection:
            connection.execute(calls.insert(), rows)
        elapsed = time.perf_counter() - began
        print(f"  {start + len(rows):,} calls inserted in {elapsed:.0f} s", file=sys.stderr)
        if elapsed > max_seconds:
            raise SystemExit(f"seeding took over {max_seconds:.0f} s; rerun with fewer --calls")

    began = time.perf_counter()
    with store.engine.begin() as connection:
        rebuild_rollups(connection)
    print(f"  rollups built in {time.perf_counter() - began:.1f} s", file=sys.stderr)
    return describe(store)


def describe(store: Store) -> Seed:
    """Find a rare model, a session and a cursor 100 pages deep, for the filtered requests.

    A store of fewer than 10,000 calls gets a cursor halfway down instead.
    """
    stored, _ = counts(store)
    deep = (
        select(calls.c.started_at, calls.c.call_id)
        .order_by(calls.c.started_at.desc())
        .offset(min(5000, stored // 2))
        .limit(1)
    )
    in_session = select(calls.c.session_id).where(calls.c.session_id.is_not(None)).limit(1)
    with store.engine.connect() as connection:
        position = connection.execute(deep).one()
        session = connection.execute(in_session).scalar()
    cursor = Cursor(as_utc(position.started_at), position.call_id).encode()
    return Seed(UNPRICED_MODEL, session, cursor)


def counts(store: Store) -> tuple[int, int]:
    with store.engine.connect() as connection:
        stored = connection.execute(select(func.count()).select_from(calls)).scalar_one()
        total = func.coalesce(func.sum(call_rollups_hourly.c.calls), 0)
        rolled = connection.execute(select(total)).scalar_one()
    return stored, rolled


def time_pages(store_url: str, paths: list[str], repeats: int) -> None:
    settings = Settings.model_validate({"store": {"flush_interval_s": 0.05}})
    app = create_app(settings, store_url=store_url)
    with TestClient(app) as client:
        key = create_key(app.state.store, Role.VIEWER, actor="benchmark")
        client.headers["authorization"] = f"Bearer {key.secret}"
        print(f"{'page':<58} {'median':>9} {'p95':>9}  target {TARGET_MS:.0f} ms")
        for path in paths:
            for _ in range(2):
                client.get(path).raise_for_status()
            times = []
            for _ in range(repeats):
                began = time.perf_counter()
                response = client.get(path)
                times.append((time.perf_counter() - began) * 1000.0)
                response.raise_for_status()
            times.sort()
            median = statistics.median(times)
            p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
            verdict = "ok" if p95 < TARGET_MS else "OVER"
            print(f"{path[:58]:<58} {median:>7.1f}ms {p95:>7.1f}ms  {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1_000_000, help="Call records in the store.")
    parser.add_argument("--repeats", type=int, default=20, help="Timed requests per page.")
    parser.add_argument(
        "--fresh", action="store_true", help="Build the store again even if one exists."
    )
    parser.add_argument(
        "--max-seed-s", type=float, default=1800.0, help="Seconds after which seeding stops."
    )
    arguments = parser.parse_args()

    path = Path(__file__).parent / "results" / f"dashboard-{arguments.calls}.db"
    if arguments.fresh and path.exists():
        for leftover in path.parent.glob(path.name + "*"):
            leftover.unlink()
    url = f"sqlite:///{path}"
    store = open_store(url)
    stored, rolled = counts(store)
    if stored != arguments.calls or rolled != stored:
        if stored:
            raise SystemExit(
                f"{path} contains {stored:,} calls, not {arguments.calls:,}; rerun with --fresh"
            )
        print(f"seeding {arguments.calls:,} calls into {path}", file=sys.stderr)
        found = seed(store, arguments.calls, max_seconds=arguments.max_seed_s)
    else:
        found = describe(store)
    store.dispose()

    paths = [
        "/",
        "/cost",
        "/cost?from=" + (datetime.now(UTC).date() - timedelta(days=DAYS - 1)).isoformat(),
        "/traces",
        "/traces?outcome=error",
        f"/traces?model={found.rare_model}",
        f"/traces?session={found.session_id}",
        "/traces?before=" + found.deep_cursor,
        "/api/overview",
        "/api/cost",
    ]
    print(
        f"{arguments.calls:,} calls over {DAYS} days in {path.name}, "
        f"{arguments.repeats} requests per page"
    )
    time_pages(url, paths, arguments.repeats)


if __name__ == "__main__":
    main()
