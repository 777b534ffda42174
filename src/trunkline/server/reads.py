"""The read API under /api/: the dashboard's figures and records as JSON, for viewer keys and above.

Every route reads through the same functions as the dashboard's pages, so
the API and the pages always show the same figures. An invalid query
parameter gets a 422 response and a missing record a 404, in the OpenAI
error shape that the rest of the server uses.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, ParamSpec, TypeVar

from fastapi import APIRouter, Depends, Request
from sqlalchemy import select

from trunkline.prompts import PromptRegistry
from trunkline.server.auth import require
from trunkline.server.dashboard import params
from trunkline.server.dashboard.calls import call_json, list_calls_page, page_request
from trunkline.server.dashboard.cost import build_cost_report, cost_json, date_range
from trunkline.server.dashboard.overview import build_overview, overview_json
from trunkline.server.dashboard.params import NotFound, QueryError
from trunkline.server.dashboard.prompts import diff_lines, load_history, load_pair, version_pair
from trunkline.server.dashboard.quality import (
    MAX_EXPERIMENTS,
    compare,
    list_experiments,
    picked_pair,
)
from trunkline.server.dashboard.traces import MAX_SPANS, load_trace_view, trace_json
from trunkline.server.errors import ApiError
from trunkline.store.keys import ApiKey, Role
from trunkline.store.tables import calls
from trunkline.types.calls import CallRecord

router = APIRouter(prefix="/api", tags=["read"])
viewer = require(Role.VIEWER)

P = ParamSpec("P")
T = TypeVar("T")


def api_errors(handler: Callable[P, T]) -> Callable[P, T]:
    """Turn an invalid query parameter into a 422 response and a missing record into a 404."""

    @functools.wraps(handler)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return handler(*args, **kwargs)
        except QueryError as error:
            raise ApiError(422, "invalid_request", str(error), param=error.param) from None
        except NotFound as error:
            raise ApiError(404, "not_found", str(error)) from None

    return wrapper


@router.get("/overview")
@api_errors
def overview(request: Request, key: ApiKey = Depends(viewer)) -> dict[str, Any]:
    """Return today, the last 7 and the last 30 days, each with the period before, and days."""
    return overview_json(build_overview(request.app.state.store))


@router.get("/cost")
@api_errors
def cost(request: Request, key: ApiKey = Depends(viewer)) -> dict[str, Any]:
    """Return cost, calls and tokens by model, task, key and day, from `from` to `to` (UTC)."""
    first, last = date_range(request.query_params)
    return cost_json(build_cost_report(request.app.state.store, first, last))


@router.get("/calls")
@api_errors
def list_calls(request: Request, key: ApiKey = Depends(viewer)) -> dict[str, Any]:
    """Return calls newest first, filtered like the traces page, one page at a time.

    Query parameters: run, session, model, route, outcome (ok or error), key,
    from and to (ISO dates or times, UTC unless given), trace (``agent``
    keeps calls whose trace contains an agent run), limit (1 to 200), and
    before or after, the cursors that a previous response returned.
    """
    filters, limit, before, after = page_request(request.query_params)
    store = request.app.state.store
    page = list_calls_page(store, filters, limit=limit, before=before, after=after)
    return {
        "data": [call_json(row) for row in page.rows],
        "newer": page.newer,
        "older": page.older,
        "limit": page.limit,
    }


@router.get("/calls/{call_id}")
@api_errors
def one_call(call_id: str, request: Request, key: ApiKey = Depends(viewer)) -> dict[str, Any]:
    """Return one call's full record, messages included, as redacted before it was stored."""
    query = select(calls.c.record).where(calls.c.call_id == call_id)
    with request.app.state.store.engine.connect() as connection:
        record = connection.execute(query).scalar()
    if record is None:
        raise NotFound(f"no call with id {call_id!r}; GET /api/calls lists them")
    return CallRecord.model_validate_json(record).model_dump(mode="json")


@router.get("/traces/{trace_id}")
@api_errors
def trace(trace_id: str, request: Request, key: ApiKey = Depends(viewer)) -> dict[str, Any]:
    """Return a trace's spans in depth-first order, each model call's record in full."""
    limit = params.integer(request.query_params, "max_spans", MAX_SPANS, minimum=1, maximum=5000)
    return trace_json(load_trace_view(request.app.state.store, trace_id, max_spans=limit))


@router.get("/experiments")
@api_errors
def experiments(request: Request, key: ApiKey = Depends(viewer)) -> dict[str, Any]:
    """Return experiments newest first, optionally of one `task`, without per-row details."""
    query = request.query_params
    limit = params.integer(query, "limit", 100, minimum=1, maximum=MAX_EXPERIMENTS)
    rows = list_experiments(request.app.state.store, task=params.text(query, "task"), limit=limit)
    return {"data": [_plain_times(row) for row in rows]}


@router.get("/experiments/compare")
@api_errors
def compare_pair(request: Request, key: ApiKey = Depends(viewer)) -> dict[str, Any]:
    """Compare experiment `b` with experiment `a` by row: the score difference and its interval."""
    pair = picked_pair(request.query_params)
    if pair is None:
        raise QueryError("a", "is missing; give the ids of two experiments as a and b")
    top = params.integer(request.query_params, "rows", 20, minimum=0, maximum=500)
    return compare(request.app.state.store, *pair).public(top=top)


@router.get("/prompts")
@api_errors
def prompts(request: Request, key: ApiKey = Depends(viewer)) -> dict[str, Any]:
    """Return every prompt with its latest version, count of versions and labels."""
    summaries = PromptRegistry(request.app.state.store).list()
    return {
        "data": [
            {
                "name": item.name,
                "latest_version": item.latest_version,
                "versions": item.versions,
                "labels": item.labels,
                "updated_at": item.updated_at.isoformat(),
            }
            for item in summaries
        ]
    }


# Declared before the prompt route, whose path parameter would also match ".../diff".
@router.get("/prompts/{name:path}/diff")
@api_errors
def prompt_diff(name: str, request: Request, key: ApiKey = Depends(viewer)) -> dict[str, Any]:
    """Return the unified diff of versions `a` and `b` of a prompt, one line per item."""
    first, second = version_pair(request.query_params)
    old, new = load_pair(request.app.state.store, name, first, second)
    return {"name": name, "a": first, "b": second, "lines": diff_lines(old, new)}


@router.get("/prompts/{name:path}")
@api_errors
def prompt(name: str, request: Request, key: ApiKey = Depends(viewer)) -> dict[str, Any]:
    """Return a prompt's versions with their content, its labels, and every label move."""
    history = load_history(request.app.state.store, name)
    return {
        "name": history.name,
        "labels": history.labels,
        "versions": [version.model_dump(mode="json") for version in history.versions],
        "label_moves": [
            {
                "label": move.label,
                "from_version": move.from_version,
                "to_version": move.to_version,
                "moved_by": move.moved_by,
                "moved_at": move.moved_at.isoformat(),
            }
            for move in history.moves
        ],
    }


def _plain_times(row: dict[str, Any]) -> dict[str, Any]:
    return {
        name: value.astimezone(UTC).isoformat() if isinstance(value, datetime) else value
        for name, value in row.items()
    }
