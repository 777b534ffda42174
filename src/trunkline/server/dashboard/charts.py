"""Plotly figures as plain dictionaries, which dashboard.js passes to ``Plotly.newPlot``.

Building the dictionaries directly, instead of through `plotly.graph_objects`,
skips its validation, which costs milliseconds per figure on every page view.
"""

from __future__ import annotations

from typing import Any

#: Colours of the dashboard's series, also used by dashboard.css.
PALETTE = (
    "#3366cc",
    "#dc7633",
    "#2e9e6b",
    "#8e44ad",
    "#c0392b",
    "#16a085",
    "#d4ac0d",
    "#5d6d7e",
    "#e84393",
    "#7f8c8d",
)
ERROR_COLOUR = "#c0392b"


def figure(data: list[dict[str, Any]], **layout: Any) -> dict[str, Any]:
    """Return a figure with the dashboard's layout defaults, overridden by `layout`."""
    base: dict[str, Any] = {
        "margin": {"l": 56, "r": 16, "t": 36, "b": 40},
        "height": 300,
        "font": {"family": "system-ui, sans-serif", "size": 12},
        "paper_bgcolor": "rgba(0,0,0,0)",
        "plot_bgcolor": "rgba(0,0,0,0)",
        "hovermode": "x unified",
        "legend": {"orientation": "h", "y": -0.2},
        "colorway": list(PALETTE),
        "xaxis": {"gridcolor": "#e5e8eb"},
        "yaxis": {"gridcolor": "#e5e8eb", "rangemode": "tozero"},
    }
    base.update(layout)
    return {"data": data, "layout": base}


def bars(
    labels: list[str], values: list[float], *, name: str, colour: str | None = None
) -> dict[str, Any]:
    """Return a horizontal bar trace, largest value on top."""
    trace: dict[str, Any] = {
        "type": "bar",
        "orientation": "h",
        "name": name,
        "y": list(reversed(labels)),
        "x": list(reversed(values)),
    }
    if colour:
        trace["marker"] = {"color": colour}
    return trace


def horizontal_bars(
    title: str, labels: list[str], values: list[float], *, unit: str
) -> dict[str, Any]:
    """Return a figure of one horizontal bar per label, sized to the number of labels."""
    height = max(160, 40 + 26 * len(labels))
    return figure(
        [bars(labels, values, name=unit)],
        title={"text": title, "font": {"size": 14}},
        height=height,
        hovermode="closest",
        margin={"l": 160, "r": 16, "t": 36, "b": 32},
        xaxis={"gridcolor": "#e5e8eb", "title": {"text": unit}, "rangemode": "tozero"},
        yaxis={"automargin": True},
        showlegend=False,
    )
