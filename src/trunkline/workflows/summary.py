"""The summary of a batch run, computed from its per-row results."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import BaseModel


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
    run_id: str, rows: Iterable[dict[str, Any]], resumed: int = 0, spend: dict[str, Any] | None = None
) -> RunSummary:
    """Summarise stored run rows (dicts with the `run_rows` columns).

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
    )
