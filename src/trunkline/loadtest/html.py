"""The load test report as one self-contained HTML file with Plotly charts.

Plotly's script is copied from the installed `plotly` package into the
page, so the file opens offline and loads nothing from the network. The
report's figures are embedded as JSON in a ``<script type="application/json"
id="loadtest-data">`` element, which the charts read and other tools can too.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import plotly

PLOTLY_FILE = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #1f2933; }
h1 { font-size: 20px; } h2 { font-size: 16px; margin-top: 28px; }
table { border-collapse: collapse; font-size: 13px; }
td, th { padding: 4px 10px; border-bottom: 1px solid #e5e8eb; text-align: right; }
td:first-child, th:first-child { text-align: left; }
.charts { display: grid; grid-template-columns: repeat(auto-fit, minmax(520px, 1fr)); gap: 16px; }
.chart { height: 320px; }
"""

# Reads the embedded figures and draws one chart per element with a data-chart name.
_SCRIPT = """
const report = JSON.parse(document.getElementById("loadtest-data").textContent);
const s = report.series;
const layout = (title, ytitle) => ({
  title: {text: title, font: {size: 14}}, margin: {l: 56, r: 16, t: 36, b: 40},
  xaxis: {title: {text: "seconds"}}, yaxis: {title: {text: ytitle}, rangemode: "tozero"},
  legend: {orientation: "h", y: -0.25}, hovermode: "x unified",
});
const line = (name, y, extra) => Object.assign({type: "scatter", mode: "lines", name, x: s.t_s, y}, extra || {});
const charts = {
  throughput: [[line("sent", s.sent_rps), line("ok", s.ok_rps), line("errors", s.error_rps)],
               layout("Throughput", "requests/s")],
  latency: [[line("p50", s.latency_p50_ms), line("p90", s.latency_p90_ms), line("p99", s.latency_p99_ms)],
            layout("Latency of successful calls", "ms")],
  outcomes: [[line("429", s.rate_limited_rps, {stackgroup: "a"}), line("5xx", s.server_error_rps, {stackgroup: "a"}),
              line("timeouts", s.timeout_rps, {stackgroup: "a"}), line("failed calls", s.error_rps)],
             layout("Failed attempts and calls", "per second")],
  waits: [[line("mean", s.limiter_wait_mean_ms), line("max", s.limiter_wait_max_ms)],
          layout("Rate limiter waits of requests that waited", "ms")],
};
for (const element of document.querySelectorAll("[data-chart]")) {
  const [data, chartLayout] = charts[element.dataset.chart];
  Plotly.newPlot(element, data, chartLayout, {displaylogo: false, responsive: true});
}
"""


def _embed_json(value: Any) -> str:
    # A "</" inside the JSON would close the script element early.
    return json.dumps(value).replace("</", "<\\/")


def format_value(value: Any) -> str:
    """Format a figure for display: four significant digits, or "-" when there is none."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def _cell(value: Any) -> str:
    return html.escape(format_value(value))


def _table(rows: list[tuple[str, Any]]) -> str:
    body = "".join(f"<tr><td>{html.escape(name)}</td><td>{_cell(value)}</td></tr>" for name, value in rows)
    return f"<table>{body}</table>"


def _counts_table(counts: dict[str, dict[str, Any]], *, first: str = "deployment") -> str:
    columns = sorted({key for row in counts.values() for key in row}, key=_column_order)
    head = "".join(f"<th>{html.escape(column)}</th>" for column in [first, *columns])
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td>"
        + "".join(f"<td>{_cell(row.get(column, 0))}</td>" for column in columns)
        + "</tr>"
        for name, row in counts.items()
    )
    return f"<table><tr>{head}</tr>{rows}</table>"


def _column_order(column: str) -> tuple[int, str]:
    order = ["calls", "requests", "ok", "errors", "rate_limited", "server_error", "timeout"]
    return (order.index(column) if column in order else len(order), column)


def summary_rows(figures: dict[str, Any]) -> list[tuple[str, Any]]:
    """Return the headline figures as (label, value) rows, shared by the HTML and the terminal table."""
    requests, throughput = figures["requests"], figures["throughput"]
    latency, rates, cost = figures["latency_ms"], figures["rates"], figures["cost"]
    waits, limits = figures["limiter_wait_ms"] or {}, figures["limits"]
    binding = ", ".join(
        f"{item['limit']} at {item['first_s']:.1f}s ({item['waited']} waited, {item['refused']} refused)"
        for item in limits["by_limit"]
    )
    return [
        ("requests sent / planned", f"{requests['sent']} / {requests['planned']}"),
        ("finished ok / errors", f"{requests['ok']} / {requests['errors']}"),
        ("unfinished / skipped", f"{requests['unfinished']} / {requests['skipped']}"),
        ("offered rate (req/s)", throughput["offered_rps"]),
        ("achieved rate (ok/s)", throughput["achieved_rps"]),
        ("latency p50 (ms)", latency["p50"]),
        ("latency p90 (ms)", latency["p90"]),
        ("latency p99 (ms)", latency["p99"]),
        ("failure rate", rates["failure"]),
        ("retry rate", rates["retry"]),
        ("fallback rate", rates["fallback"]),
        ("downgrade rate", rates["downgrade"]),
        ("attempts that waited for a rate limit", waits.get("waited")),
        ("limiter wait p50 / p99 (ms)", _pair(waits.get("p50"), waits.get("p99"))),
        ("binds first", limits["binds_first"] or "no limit held requests back"),
        ("limits that held requests back", binding or "-"),
        ("cost of the test (USD)", cost["total_usd"]),
        ("projected cost per hour (USD)", cost["per_hour_usd"]),
        ("projected cost per day (USD)", cost["per_day_usd"]),
        ("projected cost per 30-day month (USD)", cost["per_month_usd"]),
        ("calls with no known price", cost["unpriced_calls"]),
    ]


def _pair(first: float | None, second: float | None) -> str:
    return f"{_cell(first)} / {_cell(second)}"


def render_html(figures: dict[str, Any]) -> str:
    """Return the report as one HTML page that needs no network to display."""
    title = f"Load test {figures['run_id']}: {figures['mode']}, scale {figures['scale']:g}"
    sections = [
        f"<h1>{html.escape(title)}</h1>",
        f"<p>Profile: {html.escape(str(figures['profile']))}. "
        f"Arrivals for {figures['duration_s']:g}s; the test took {figures['elapsed_s']:.1f}s.</p>",
        _table(summary_rows(figures)),
        '<h2>Over time</h2><div class="charts">'
        + "".join(
            f'<div class="chart" data-chart="{name}"></div>'
            for name in ("throughput", "latency", "outcomes", "waits")
        )
        + "</div>",
    ]
    sections.append("<h2>Calls by route</h2>")
    sections.append(_counts_table(figures["by_route"], first="route"))
    if figures["attempts"] is not None:
        sections.append("<h2>Attempts as the router recorded them</h2>")
        sections.append(_counts_table(figures["attempts"]["by_deployment"]))
    if figures["upstreams"] is not None:
        sections.append("<h2>Requests as the simulated providers received them</h2>")
        sections.append(_counts_table(figures["upstreams"]))
    if figures["errors_by_kind"]:
        sections.append("<h2>Failed calls by error kind</h2>")
        sections.append(_table(list(figures["errors_by_kind"].items())))
    # An end tag inside the bundle would end the inline script early. The
    # installed bundle has none, so this only guards other Plotly versions.
    plotly_js = PLOTLY_FILE.read_text(encoding="utf-8").replace("</script", "<\\/script")
    return (
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style>"
        f"<script>{plotly_js}</script></head><body>"
        + "".join(sections)
        + f'<script type="application/json" id="loadtest-data">{_embed_json(figures)}</script>'
        + f"<script>{_SCRIPT}</script></body></html>"
    )
