"""Rich tables for the command's output."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from trunkline.workflows.summary import RunSummary


def format_cost(value: float | None, unpriced: int = 0) -> str:
    """Show a cost in dollars; an unknown price shows as such, never as $0."""
    if value is None:
        return "unknown (no price)" if not unpriced else f"unknown ({unpriced} unpriced)"
    return f"${value:.6f}"


def format_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f} ms"


def summary_table(name: str, summary: RunSummary) -> Table:
    table = Table(title=f"{name}  {summary.run_id}", show_header=False, title_justify="left")
    table.add_column("metric", style="bold")
    table.add_column("value", justify="right")
    accuracy = "-" if summary.accuracy is None else f"{summary.accuracy:.3f} ({summary.scored} scored)"
    cost = format_cost(summary.cost_usd, summary.unpriced_rows)
    if summary.cost_usd is None and summary.cost_usd_priced:
        cost += f", ${summary.cost_usd_priced:.6f} priced"
    rows: list[tuple[str, Any]] = [
        ("rows", f"{summary.rows}" + (f" ({summary.resumed} resumed)" if summary.resumed else "")),
        ("ok", summary.ok),
        ("errors", summary.errors),
        ("accuracy", accuracy),
        ("input tokens", f"{summary.input_tokens:,}"),
        ("output tokens", f"{summary.output_tokens:,}"),
        ("cost", cost),
        ("latency p50", format_ms(summary.latency_p50_ms)),
        ("latency p95", format_ms(summary.latency_p95_ms)),
        ("retries", summary.retries),
        ("fallbacks", summary.fallbacks),
    ]
    for step, cascade in summary.cascades.items():
        answered = ", ".join(
            f"{stage} {cascade.share[stage]:.0%} ({count})" for stage, count in cascade.answered.items()
        )
        rows.append((f"{step}: answered by", f"{answered}; threshold {cascade.threshold:g}"))
        rows.append((f"{step}: {cascade.last_stage} ran on", f"{cascade.last_stage_rows} of {cascade.rows} rows"))
        if cascade.tokens_if_last_only is not None:
            rows.append(
                (f"{step}: tokens", f"{cascade.tokens:,} against ~{cascade.tokens_if_last_only:,.0f} with {cascade.last_stage} alone")
            )
        if cascade.saved_usd is not None:
            rows.append((f"{step}: saved", f"${cascade.saved_usd:.6f} against {cascade.last_stage} alone"))
    for job in summary.batches:
        counts = "" if job.completed is None else f", {job.completed} completed, {job.failed} failed"
        reason = f": {job.error}" if job.error else ""
        rows.append((f"{job.step}: batch {job.batch_id}", f"{job.status}, {job.rows} rows{counts}{reason}"))
    for metric, value in rows:
        table.add_row(metric, str(value))
    return table
