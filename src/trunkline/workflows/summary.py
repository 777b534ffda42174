"""The summary of a batch run, computed from its per-row results."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import BaseModel, Field


class CascadeSummary(BaseModel):
    """How a cascade step's rows were answered, and what it saved against its last stage alone.

    The `*_if_last_only` figures estimate the cost of sending every row to
    the last stage: the mean cost of the rows that reached it, times all
    rows. They are None when no row reached it or a price was unknown.
    """

    threshold: float
    rows: int
    last_stage: str
    #: Rows each stage answered, in stage order.
    answered: dict[str, int]
    share: dict[str, float]
    #: Rows on which the last stage ran, whether it answered or failed.
    last_stage_rows: int
    tokens: int
    tokens_if_last_only: float | None
    cost_usd: float | None
    cost_if_last_only_usd: float | None
    saved_usd: float | None


class BatchJobSummary(BaseModel):
    """One Batch API job of a run: its step, the provider's final status, and its rows."""

    batch_id: str
    step: str
    status: str
    rows: int
    #: Requests the provider reported as completed and as failed.
    completed: int | None = None
    failed: int | None = None
    #: Why the whole job failed, expired or was cancelled.
    error: str | None = None


class RunSummary(BaseModel):
    """Totals of a batch run; `cost_usd` is None when any row's cost is unknown."""

    run_id: str
    rows: int
    ok: int
    errors: int
    #: Share of rows with an expected value whose output matched it; None without expected values.
    accuracy: float | None
    scored: int
    input_tokens: int
    output_tokens: int
    cost_usd: float | None
    #: Cost of the rows whose price was known; equals `cost_usd` when nothing is unpriced.
    cost_usd_priced: float
    unpriced_rows: int
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    retries: int
    fallbacks: int
    #: Rows taken from an earlier attempt of the same run instead of being run again.
    resumed: int = 0
    #: Per cascade step: the share of rows each stage answered and the cost saved.
    cascades: dict[str, CascadeSummary] = Field(default_factory=dict)
    #: The run's Batch API jobs, oldest first, for steps with ``mode = "batch"``.
    batches: list[BatchJobSummary] = Field(default_factory=list)

    def public(self) -> dict[str, Any]:
        return self.model_dump()


def percentile(values: Sequence[float], share: float) -> float | None:
    """Return the `share` percentile (0 to 1) by linear interpolation, or None if empty."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * share
    low = math.floor(position)
    high = math.ceil(position)
    if low == high:
        return ordered[low]
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summarise(
    run_id: str,
    rows: Iterable[dict[str, Any]],
    resumed: int = 0,
    spend: dict[str, Any] | None = None,
    batches: Iterable[dict[str, Any]] = (),
) -> RunSummary:
    """Summarise stored run rows (dicts with the `run_rows` columns).

    `batches` are the run's stored Batch API jobs (`provider_batches` rows).

    `spend` (from `trunkline.store.runs.run_spend`) gives the tokens and cost
    of every call of the run, earlier tries of resumed rows included. Without
    it, they are summed over the rows.
    """
    rows = list(rows)
    scored = [row for row in rows if row.get("expected") not in (None, "")]
    correct = sum(1 for row in scored if row["score"] == 1.0)
    unpriced = sum(1 for row in rows if row["price_missing"])
    priced = sum(row["cost_usd"] or 0.0 for row in rows if not row["price_missing"])
    input_tokens = sum(row["input_tokens"] for row in rows)
    output_tokens = sum(row["output_tokens"] for row in rows)
    if spend is not None:
        input_tokens, output_tokens = spend["input_tokens"], spend["output_tokens"]
        priced = spend["cost_usd_priced"]
        unpriced = max(unpriced, 1) if spend["unpriced_calls"] else unpriced
    latencies = [row["latency_ms"] for row in rows]
    return RunSummary(
        run_id=run_id,
        rows=len(rows),
        ok=sum(1 for row in rows if row["status"] == "ok"),
        errors=sum(1 for row in rows if row["status"] != "ok"),
        accuracy=correct / len(scored) if scored else None,
        scored=len(scored),
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cost_usd=None if unpriced else priced,
        cost_usd_priced=priced,
        unpriced_rows=unpriced,
        latency_p50_ms=percentile(latencies, 0.50),
        latency_p95_ms=percentile(latencies, 0.95),
        retries=sum(row["retries"] for row in rows),
        fallbacks=sum(row["fallbacks"] for row in rows),
        resumed=resumed,
        cascades=summarise_cascades(rows),
        batches=[_batch_summary(job) for job in batches],
    )


def _batch_summary(job: dict[str, Any]) -> BatchJobSummary:
    counts = job.get("request_counts") or {}
    return BatchJobSummary(
        batch_id=job["batch_id"],
        step=job["step"],
        status=job["status"],
        rows=job["row_count"],
        completed=counts.get("completed"),
        failed=counts.get("failed"),
        error=job.get("error"),
    )


def summarise_cascades(rows: Iterable[dict[str, Any]]) -> dict[str, CascadeSummary]:
    """Summarise the cascade details stored with run rows, per cascade step."""
    found: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        for step, details in (row.get("details") or {}).items():
            if isinstance(details, dict) and details.get("kind") == "cascade":
                found.setdefault(step, []).append(details)
    return {step: _cascade_summary(entries) for step, entries in found.items()}


def _cascade_summary(entries: list[dict[str, Any]]) -> CascadeSummary:
    """Count the answering stage of each row, and price sending every row to the last stage."""
    last = entries[0]["last_stage"]
    order: dict[str, int] = dict.fromkeys(entries[0]["stage_names"], 0)
    for entry in entries:
        if entry["answered_by"] is not None:
            order[entry["answered_by"]] += 1

    stages = [stage for entry in entries for stage in entry["stages"]]
    last_runs = [stage for stage in stages if stage["stage"] == last]
    tokens = sum(stage.get("tokens", 0) for stage in stages)
    priced = all(stage.get("cost_usd") is not None for stage in stages)
    cost = sum(stage.get("cost_usd") or 0.0 for stage in stages) if priced else None
    tokens_if_last = cost_if_last = None
    if last_runs:
        tokens_if_last = sum(stage.get("tokens", 0) for stage in last_runs) / len(last_runs) * len(entries)
        if priced:
            cost_if_last = sum(stage["cost_usd"] for stage in last_runs) / len(last_runs) * len(entries)

    return CascadeSummary(
        threshold=entries[0]["threshold"],
        rows=len(entries),
        last_stage=last,
        answered=order,
        share={stage: count / len(entries) for stage, count in order.items()},
        last_stage_rows=len(last_runs),
        tokens=tokens,
        tokens_if_last_only=tokens_if_last,
        cost_usd=cost,
        cost_if_last_only_usd=cost_if_last,
        saved_usd=None if cost is None or cost_if_last is None else cost_if_last - cost,
    )
