"""The audit log page, for admins: who changed keys, labels and settings, newest first."""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from trunkline.server.auth import require
from trunkline.server.dashboard import params
from trunkline.server.dashboard.rendering import page_errors, render
from trunkline.store.audit import describe_details, list_actions
from trunkline.store.keys import ApiKey, Role

router = APIRouter(include_in_schema=False)

PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
#: Deepest offset accepted; the log is read with OFFSET, which costs more the deeper it goes.
MAX_OFFSET = 10**7


@router.get("/audit", response_class=HTMLResponse)
@page_errors
def audit_page(request: Request, key: ApiKey = Depends(require(Role.ADMIN))) -> HTMLResponse:
    """Render one page of the audit log, optionally of one actor or one action."""
    query = request.query_params
    limit = params.integer(query, "limit", PAGE_SIZE, minimum=1, maximum=MAX_PAGE_SIZE)
    offset = params.integer(query, "offset", 0, minimum=0, maximum=MAX_OFFSET)
    actor, action = params.text(query, "actor"), params.text(query, "action")
    entries, total = list_actions(
        request.app.state.store, limit=limit, offset=offset, actor=actor, action=action
    )
    for entry in entries:
        entry["summary"] = describe_details(entry["details"])
    filters = {name: value for name, value in (("actor", actor), ("action", action)) if value}

    def link(at: int) -> str:
        return "/audit?" + urlencode({**filters, "limit": limit, "offset": at})

    return render(
        request,
        "audit.html",
        title="Audit log",
        entries=entries,
        total=total,
        offset=offset,
        limit=limit,
        actor=actor,
        action=action,
        newer=link(max(offset - limit, 0)) if offset > 0 else None,
        older=link(offset + limit) if offset + limit < total else None,
    )
