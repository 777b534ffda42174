// Draws each chart from the figure its page embeds as JSON; pages hold no inline scripts.
"use strict";

function drawCharts() {
  for (const holder of document.querySelectorAll("[data-figure]")) {
    const source = document.getElementById(holder.dataset.figure);
    if (!source) {
      continue;
    }
    const figure = JSON.parse(source.textContent);
    Plotly.newPlot(holder, figure.data, figure.layout, {
      responsive: true,
      displaylogo: false,
    });
    holder.dataset.drawn = "true";
  }
}

if (document.readyState === "loading") {
  document.addEventListener("DOMContentLoaded", drawCharts);
} else {
  drawCharts();
}
