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
    for metric, value in rows:
        table.add_row(metric, str(value))
    return table
