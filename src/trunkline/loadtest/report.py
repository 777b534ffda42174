"""The figures of a load test: throughput, latency, failure rates, limits, cost and time series."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

from trunkline.loadtest.engine import LoadResult
from trunkline.loadtest.limits import LimitPressure
from trunkline.loadtest.runner import AttemptSample, CallSample

#: Maximum points per time series, so longer tests get wider buckets.
MAX_POINTS = 120
#: Days in the month of the monthly cost projection.
DAYS_PER_MONTH = 30


def percentile(values: list[float], share: float) -> float | None:
    """Return the nearest-rank percentile of `values` at `share` (0 to 1), or None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(math.ceil(share * len(ordered)), 1)
    return ordered[rank - 1]


def attempt_class(attempt: AttemptSample) -> str:
    """Classify an attempt as the simulated upstream counts it: ok, rate_limited, server_error or timeout."""
    if attempt.outcome == "ok":
        return "ok"
    if attempt.error_kind == "timeout" or attempt.status_code == 504:
        return "timeout"
    if attempt.status_code == 429:
        return "rate_limited"
    if attempt.status_code is not None and attempt.status_code >= 500:
        return "server_error"
    return attempt.error_kind or "error"


@dataclass
class LoadReport:
    """A load test summarised; `public()` is the JSON form that the table and the HTML read."""

    figures: dict[str, Any]

    def public(self) -> dict[str, Any]:
        return self.figures


def build_report(result: LoadResult) -> LoadReport:
    """Summarise `result` into the report's figures and time series."""
    samples = sorted(result.outcome.samples, key=lambda sample: sample.started_s)
    duration = result.options.duration_s
    figures: dict[str, Any] = {
        "run_id": result.run_id,
        "mode": result.mode,
        "target": result.options.target,
        "profile": result.profile.source,
        "scale": result.options.scale,
        "duration_s": duration,
        "elapsed_s": result.outcome.elapsed_s,
        "requests": _requests(result, samples),
        "throughput": _throughput(result, samples),
        "latency_ms": _latency(samples),
        "rates": _rates(samples),
        "errors_by_kind": dict(Counter(s.error_kind for s in samples if s.error_kind).most_common()),
        "by_route": _by_route(samples),
        "attempts": _attempts(samples),
        "limiter_wait_ms": _limiter_waits(result),
        "limits": _limits(result, samples),
        "cost": _cost(samples, duration),
        "generator_lag_ms": {
            "p50": _ms(percentile(result.outcome.lags_s, 0.5)),
            "p99": _ms(percentile(result.outcome.lags_s, 0.99)),
            "max": _ms(max(result.outcome.lags_s, default=None)),
        },
        "upstreams": (
            {name: counts.public() for name, counts in sorted(result.upstreams.items())}
            if result.upstreams is not None
            else None
        ),
        "series": _series(samples, result.limiter_waits, result.outcome.elapsed_s),
    }
    return LoadReport(figures)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000.0


def _requests(result: LoadResult, samples: list[CallSample]) -> dict[str, int]:
    ok = sum(1 for sample in samples if sample.outcome == "ok")
    return {
        "planned": result.planned,
        "sent": result.planned - result.outcome.skipped,
        "skipped": result.outcome.skipped,
        "finished": len(samples),
        "unfinished": result.outcome.unfinished,
        "ok": ok,
        "errors": len(samples) - ok,
    }


def _throughput(result: LoadResult, samples: list[CallSample]) -> dict[str, float | None]:
    duration = result.options.duration_s
    ok_ends = [sample.ended_s for sample in samples if sample.outcome == "ok"]
    achieved = None
    if ok_ends:
        span = max(max(ok_ends) - samples[0].started_s, 1e-9)
        achieved = len(ok_ends) / span
    return {
        "profile_rps": result.profile.rate_rps,
        "offered_rps": result.planned / duration,
        "sent_rps": (result.planned - result.outcome.skipped) / duration,
        "achieved_rps": achieved,
    }


def _latency(samples: list[CallSample]) -> dict[str, float | None]:
    ok = [sample.latency_ms for sample in samples if sample.outcome == "ok"]
    every = [sample.latency_ms for sample in samples]
    return {
        "p50": percentile(ok, 0.5),
        "p90": percentile(ok, 0.9),
        "p99": percentile(ok, 0.99),
        "max": max(ok, default=None),
        "all_p50": percentile(every, 0.5),
        "all_p99": percentile(every, 0.99),
    }


def _share(count: int, total: int) -> float | None:
    return count / total if total else None


def _rates(samples: list[CallSample]) -> dict[str, Any]:
    finished = len(samples)
    routed = [sample for sample in samples if sample.attempts is not None]
    errors = sum(1 for sample in samples if sample.outcome == "error")
    retried = sum(1 for sample in routed if sample.retries)
    fell_back = sum(1 for sample in routed if sample.fallbacks)
    downgraded = sum(1 for sample in routed if sample.downgrades)
    return {
        "failure": _share(errors, finished),
        "retry": _share(retried, len(routed)) if routed else None,
        "fallback": _share(fell_back, len(routed)) if routed else None,
        "downgrade": _share(downgraded, len(routed)) if routed else None,
        "retries": sum(sample.retries or 0 for sample in routed) if routed else None,
        "fallbacks": sum(sample.fallbacks or 0 for sample in routed) if routed else None,
        "downgrades": dict(
            Counter(reason for sample in routed for reason in sample.downgrades or []).most_common()
        ),
    }


def _by_route(samples: list[CallSample]) -> dict[str, dict[str, Any]]:
    """Return each task's calls, failures, latency and cost, by route."""
    routes: dict[str, list[CallSample]] = {}
    for sample in samples:
        routes.setdefault(sample.route, []).append(sample)
    summary: dict[str, dict[str, Any]] = {}
    for route, routed in sorted(routes.items()):
        ok = [sample.latency_ms for sample in routed if sample.outcome == "ok"]
        summary[route] = {
            "calls": len(routed),
            "ok": len(ok),
            "errors": len(routed) - len(ok),
            "latency_p50_ms": percentile(ok, 0.5),
            "latency_p99_ms": percentile(ok, 0.99),
            "cost_usd": sum(sample.cost_usd or 0.0 for sample in routed),
        }
    return summary


def _attempts(samples: list[CallSample]) -> dict[str, Any] | None:
    routed = [sample for sample in samples if sample.attempts is not None]
    if not routed:
        return None
    by_deployment: dict[str, Counter[str]] = {}
    for sample in routed:
        for attempt in sample.attempts or []:
            counts = by_deployment.setdefault(attempt.deployment, Counter())
            counts["requests"] += 1
            counts[attempt_class(attempt)] += 1
    total: Counter[str] = Counter()
    for counts in by_deployment.values():
        total.update(counts)
    keys = ("requests", "ok", "rate_limited", "server_error", "timeout")
    return {
        "total": {key: total[key] for key in keys} | _others(total, keys),
        "by_deployment": {
            name: {key: counts[key] for key in keys} | _others(counts, keys)
            for name, counts in sorted(by_deployment.items())
        },
    }


def _others(counts: Counter[str], keys: tuple[str, ...]) -> dict[str, int]:
    return {key: value for key, value in counts.items() if key not in keys}


def _limiter_waits(result: LoadResult) -> dict[str, Any] | None:
    if result.mode == "gateway":
        return None
    waits = [wait_ms for _, wait_ms in result.limiter_waits]
    return {
        "requests": result.limiter_requests,
        "waited": len(waits),
        "share": _share(len(waits), result.limiter_requests),
        "p50": percentile(waits, 0.5),
        "p99": percentile(waits, 0.99),
        "max": max(waits, default=None),
        "total_s": sum(waits) / 1000.0,
    }


def _limits(result: LoadResult, samples: list[CallSample]) -> dict[str, Any]:
    pressure = dict(result.pressure)
    for sample in samples:
        if sample.budget_bound:
            budget = pressure.setdefault("budget", LimitPressure("budget"))
            budget.note(sample.started_s, "", refused=True)
    ordered = sorted(pressure.values(), key=lambda item: (item.first_s, item.limit))
    listed = [item.public() for item in ordered]
    for item in listed:
        item["deployments"] = [name for name in item["deployments"] if name]
    return {"binds_first": ordered[0].limit if ordered else None, "by_limit": listed}


def _cost(samples: list[CallSample], duration_s: float) -> dict[str, Any]:
    priced = [sample.cost_usd for sample in samples if sample.cost_usd is not None]
    unpriced = sum(1 for sample in samples if sample.cost_usd is None and sample.outcome == "ok")
    total = sum(priced)
    per_hour = total * 3600.0 / duration_s
    return {
        "total_usd": total,
        "unpriced_calls": unpriced,
        "input_tokens": sum(sample.input_tokens for sample in samples),
        "output_tokens": sum(sample.output_tokens for sample in samples),
        "per_hour_usd": per_hour,
        "per_day_usd": per_hour * 24,
        "per_month_usd": per_hour * 24 * DAYS_PER_MONTH,
    }


def _series(
    samples: list[CallSample], limiter_waits: list[tuple[float, float]], elapsed_s: float
) -> dict[str, list[float | None]]:
    """Bucket the samples over time: arrivals by send time, results by response time."""
    width = max(1, math.ceil(elapsed_s / MAX_POINTS))
    count = max(math.ceil(elapsed_s / width), 1)
    sent = [0] * count
    ok = [0] * count
    errors = [0] * count
    outcomes: dict[str, list[int]] = {
        key: [0] * count for key in ("rate_limited", "server_error", "timeout")
    }
    latencies: list[list[float]] = [[] for _ in range(count)]
    waits: list[list[float]] = [[] for _ in range(count)]

    def bucket(seconds: float) -> int:
        return min(max(int(seconds // width), 0), count - 1)

    for sample in samples:
        sent[bucket(sample.started_s)] += 1
        ended = bucket(sample.ended_s)
        if sample.outcome == "ok":
            ok[ended] += 1
            latencies[ended].append(sample.latency_ms)
        else:
            errors[ended] += 1
        for attempt in sample.attempts or []:
            kind = attempt_class(attempt)
            if kind in outcomes:
                outcomes[kind][ended] += 1
    for started_s, wait_ms in limiter_waits:
        waits[bucket(started_s)].append(wait_ms)
    return {
        "t_s": [index * width for index in range(count)],
        "sent_rps": [value / width for value in sent],
        "ok_rps": [value / width for value in ok],
        "error_rps": [value / width for value in errors],
        **{f"{key}_rps": [value / width for value in values] for key, values in outcomes.items()},
        "latency_p50_ms": [percentile(values, 0.5) for values in latencies],
        "latency_p90_ms": [percentile(values, 0.9) for values in latencies],
        "latency_p99_ms": [percentile(values, 0.99) for values in latencies],
        "limiter_waits": [len(values) for values in waits],
        "limiter_wait_mean_ms": [sum(v) / len(v) if v else None for v in waits],
        "limiter_wait_max_ms": [max(v) if v else None for v in waits],
    }
