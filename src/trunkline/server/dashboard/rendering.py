"""Rendering dashboard pages: the Jinja2 environment, number formats and error pages.

Autoescaping is on for every template, so record text (prompts, outputs,
error messages) is always shown as text. Pages load scripts only from this
server, which the Content-Security-Policy header enforces; chart data sits in
``<script type="application/json">`` blocks that the browser never runs.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path
from typing import Any, ParamSpec

import jinja2
import plotly
from fastapi import Request
from fastapi.responses import HTMLResponse

from trunkline.server.dashboard.params import NotFound, QueryError
from trunkline.store.keys import ApiKey, Role, allows

SERVER_FOLDER = Path(__file__).resolve().parent.parent
TEMPLATES = SERVER_FOLDER / "templates"
STATIC = SERVER_FOLDER / "static"

PLOTLY_URL = f"/static/plotly-{plotly.__version__}.min.js"

#: Plotly draws with inline styles, so styles may be inline; scripts may not.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
    "form-action 'self'"
)

PAGE_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    # Pages show records and costs; no shared cache may keep them.
    "cache-control": "no-store",
}

#: Navigation entries: path, label and the role a key needs to see them.
NAVIGATION = (
    ("/", "Overview", Role.VIEWER),
    ("/cost", "Cost", Role.VIEWER),
    ("/quality", "Quality", Role.VIEWER),
    ("/traces", "Traces", Role.VIEWER),
    ("/prompts", "Prompts", Role.VIEWER),
    ("/audit", "Audit", Role.ADMIN),
)

P = ParamSpec("P")


def _asset_url(name: str) -> str:
    # The content hash in the URL lets browsers keep the file until it changes.
    digest = hashlib.sha256((STATIC / name).read_bytes()).hexdigest()[:12]
    return f"/static/{name}?v={digest}"


def format_usd(value: float | None) -> str:
    if value is None:
        return "–"
    if value == 0:
        return "$0.00"
    if abs(value) >= 1:
        return f"${value:,.2f}"
    if abs(value) >= 0.01:
        return f"${value:.4f}"
    # Single calls often cost fractions of a cent; four significant digits keep
    # them apart, written out in full because "$3.6e-05" reads as a typo.
    decimals = 3 - math.floor(math.log10(abs(value)))
    return f"${value:.{decimals}f}".rstrip("0")


def format_count(value: int | float | None) -> str:
    if value is None:
        return "–"
    return f"{value:,}" if isinstance(value, int) else f"{value:,.2f}"


def format_ms(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "–"
    if value < 1000:
        return f"{value:.0f} ms"
    return f"{value / 1000:.2f} s"


def format_percent(value: float | None) -> str:
    if value is None:
        return "–"
    percent = value * 100
    return f"{percent:.2f}%" if abs(percent) < 1 else f"{percent:.1f}%"


def format_time(value: datetime | date | None) -> str:
    if value is None:
        return "–"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S UTC")
    return value.isoformat()


def format_plain(value: Any) -> str:
    """Show text as it is and anything else, such as a parsed output, as indented JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def _environment() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters.update(
        usd=format_usd,
        count=format_count,
        ms=format_ms,
        percent=format_percent,
        when=format_time,
        plain=format_plain,
    )
    environment.globals.update(
        plotly_url=PLOTLY_URL,
        css_url=_asset_url("dashboard.css"),
        script_url=_asset_url("dashboard.js"),
    )
    return environment


environment = _environment()


def navigation(key: ApiKey | None) -> list[tuple[str, str]]:
    """Return the entries a key may open; only admin keys get the audit log."""
    if key is None:
        return []
    return [(path, label) for path, label, role in NAVIGATION if allows(key.role, role)]


def render(request: Request, template: str, *, status: int = 200, **context: Any) -> HTMLResponse:
    """Render `template` with the signed-in key and the navigation, as an HTML response."""
    key = getattr(request.state, "key", None)
    html = environment.get_template(template).render(
        key=key, navigation=navigation(key), path=request.url.path, **context
    )
    return HTMLResponse(html, status_code=status, headers=PAGE_HEADERS)


def page_errors(handler: Callable[P, HTMLResponse]) -> Callable[P, HTMLResponse]:
    """Render a page's invalid query (422) or missing subject (404) as an HTML page.

    The handler must take `request` as a keyword argument, as FastAPI passes it.
    """

    @functools.wraps(handler)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> HTMLResponse:
        request = kwargs["request"]
        assert isinstance(request, Request)
        try:
            return handler(*args, **kwargs)
        except QueryError as error:
            title, status, message = "Invalid query", 422, str(error)
        except NotFound as error:
            title, status, message = "Not found", 404, str(error)
        return render(request, "error.html", status=status, title=title, message=message)

    return wrapper
