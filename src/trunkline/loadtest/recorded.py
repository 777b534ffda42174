"""Profiles measured from recorded calls: one run's, or the recent traffic's.

The arrival rate is the number of calls over the time between the first
and the last call's start. Each route becomes a task with its share of the
calls and the token counts its calls reported. Each deployment's attempts
give its simulated provider: the median and spread of its successful
latencies, and the shares of 429s, server errors and timeouts.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, not_, or_, select

from trunkline.config import SimulatedUpstream
from trunkline.errors import ConfigError
from trunkline.loadtest.profile import Profile, Task, TokenSizes
from trunkline.store.database import Store, as_utc
from trunkline.store.tables import calls

#: Token counts kept per task, evenly spaced over the recorded calls.
MAX_SAMPLES = 1000
#: Calls read at most, the newest first, so that a profile of a busy store stays quick.
MAX_CALLS = 100_000
#: Start of the run id of every load test, which recent traffic leaves out.
LOADTEST_PREFIX = "loadtest_"


def profile_from_run(store: Store, run_id: str) -> Profile:
    """Build a profile from the calls recorded under `run_id`.

    Raises:
        ConfigError: the run has fewer than two calls, or they all started at once.
    """
    rows = _read(store, calls.c.run_id == run_id)
    return _profile(rows, f"run {run_id}", hint="list runs with `trunkline runs`")


def profile_from_recent(store: Store, window_s: float, *, now: datetime | None = None) -> Profile:
    """Build a profile from every call that started in the last `window_s` seconds.

    Calls of recorded load tests (run ids ``loadtest_...``) are left out, so
    that a rehearsal does not count as traffic.
    """
    since = (now or datetime.now(UTC)) - timedelta(seconds=window_s)
    not_loadtest = or_(calls.c.run_id.is_(None), not_(calls.c.run_id.like(f"{LOADTEST_PREFIX}%")))
    rows = _read(store, and_(calls.c.started_at >= since, not_loadtest))
    return _profile(
        rows, f"the window of the last {window_s:g}s", hint="widen the window, as in recent:24h"
    )


def _read(store: Store, condition: Any) -> list[dict[str, Any]]:
    query = (
        select(
            calls.c.route,
            calls.c.started_at,
            calls.c.input_tokens,
            calls.c.output_tokens,
            calls.c.outcome,
            calls.c.record,
        )
        .where(condition)
        .order_by(calls.c.started_at.desc())
        .limit(MAX_CALLS)
    )
    with store.engine.connect() as connection:
        rows = [dict(row._mapping) for row in connection.execute(query)]
    rows.reverse()
    return rows


def _profile(rows: list[dict[str, Any]], source: str, *, hint: str) -> Profile:
    if len(rows) < 2:
        raise ConfigError(
            f"{source} has {len(rows)} recorded call(s) in the store, and a profile needs at "
            f"least two to measure an arrival rate; {hint}, or give a profile file"
        )
    first = as_utc(rows[0]["started_at"])
    last = as_utc(rows[-1]["started_at"])
    span_s = (last - first).total_seconds()
    if span_s <= 0:
        raise ConfigError(
            f"the {len(rows)} calls of {source} all started at the same moment, so they give "
            "no arrival rate; give a profile file with rate_rps instead"
        )
    by_route: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_route[row["route"]].append(row)
    tasks = [_task(route, routed) for route, routed in sorted(by_route.items())]
    return Profile(
        rate_rps=len(rows) / span_s,
        tasks=tasks,
        upstreams=_upstreams(rows),
        source=f"{source} ({len(rows)} calls over {span_s:.0f}s)",
    )


def _task(route: str, rows: list[dict[str, Any]]) -> Task:
    measured = [row for row in rows if row["outcome"] == "ok"] or rows
    return Task(
        route=route,
        share=float(len(rows)),
        input_tokens=TokenSizes(samples=_spaced([row["input_tokens"] for row in measured])),
        output_tokens=TokenSizes(samples=_spaced([row["output_tokens"] for row in measured])),
    )


def _spaced(values: list[int]) -> list[int]:
    if len(values) <= MAX_SAMPLES:
        return values
    step = len(values) / MAX_SAMPLES
    return [values[int(index * step)] for index in range(MAX_SAMPLES)]


def _upstreams(rows: list[dict[str, Any]]) -> dict[str, SimulatedUpstream]:
    attempts: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        for attempt in json.loads(row["record"]).get("attempts", []):
            attempts[attempt["deployment"]].append(attempt)
    return {name: _upstream(found) for name, found in sorted(attempts.items())}


def _upstream(attempts: list[dict[str, Any]]) -> SimulatedUpstream:
    total = len(attempts)
    latencies = [a["latency_ms"] for a in attempts if a["outcome"] == "ok" and a["latency_ms"] > 0]
    statuses = [a.get("status_code") for a in attempts]
    timeouts = sum(1 for a in attempts if a.get("error_kind") == "timeout")
    rate_limited = sum(1 for status in statuses if status == 429)
    server_errors = [status is not None and status >= 500 and status != 504 for status in statuses]
    server_rate = min(sum(server_errors) / total, 0.95)
    # Attempts are taken in the order of their calls' starts, so the mean run
    # of server errors estimates the burst length. A high rate needs long
    # enough bursts to be reachable at all, so the estimate is raised to that.
    burst = max(_mean_run(server_errors), server_rate / (1 - server_rate), 1.0)
    settings: dict[str, Any] = {
        "rate_limit_rate": rate_limited / total,
        "server_error_rate": server_rate,
        "server_error_burst": burst,
        "timeout_rate": timeouts / total,
    }
    if latencies:
        logs = [math.log(value) for value in latencies]
        settings["latency_ms"] = statistics.median(latencies)
        settings["latency_sigma"] = min(statistics.pstdev(logs), 5.0) if len(logs) > 1 else 0.0
    codes = [status for status, failed in zip(statuses, server_errors) if failed]
    if codes:
        settings["server_error_status"] = statistics.mode(codes)
    total_rate = settings["rate_limit_rate"] + settings["server_error_rate"] + settings["timeout_rate"]
    if total_rate > 1:
        settings["server_error_rate"] -= total_rate - 1
    return SimulatedUpstream(**settings)


def _mean_run(flags: list[bool]) -> float:
    """Return the mean length of the runs of True in `flags`, or 0 when there are none."""
    runs: list[int] = []
    length = 0
    for flag in flags:
        if flag:
            length += 1
        elif length:
            runs.append(length)
            length = 0
    if length:
        runs.append(length)
    return sum(runs) / len(runs) if runs else 0.0
