"""The admin API: keys, prompt labels and the audit log. Every change is written to the audit log."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from trunkline.prompts.registry import PromptRegistry
from trunkline.server.auth import require
from trunkline.server.errors import ApiError
from trunkline.store.audit import list_actions
from trunkline.store.keys import (
    ApiKey,
    KeyLimits,
    NewKey,
    Role,
    create_key,
    get_key,
    list_keys,
    revoke_key,
    rotate_key,
    set_limits,
)

router = APIRouter(prefix="/admin", tags=["admin"])
admin = require(Role.ADMIN)


class KeyLimitsBody(BaseModel):
    budget_usd_per_day: float | None = Field(default=None, gt=0, le=1e9)
    rpm: int | None = Field(default=None, ge=1, le=10**9)
    tpm: int | None = Field(default=None, ge=1, le=10**12)
    routes: list[str] | None = Field(default=None, min_length=1)
    #: Days from now until the key stops working; None for never.
    expires_in_days: float | None = Field(default=None, gt=0, le=36500)

    def limits(self) -> KeyLimits:
        expires = None
        if self.expires_in_days is not None:
            expires = datetime.now(UTC) + timedelta(days=self.expires_in_days)
        return KeyLimits(
            budget_usd_per_day=self.budget_usd_per_day,
            rpm=self.rpm,
            tpm=self.tpm,
            routes=tuple(self.routes) if self.routes is not None else None,
            expires_at=expires,
        )


class NewKeyBody(KeyLimitsBody):
    role: Role
    name: str | None = Field(default=None, max_length=200)


class LabelBody(BaseModel):
    # Bounded by the 32-bit integer column that PostgreSQL gives versions.
    version: int = Field(ge=1, le=2**31 - 1)


def actor(key: ApiKey) -> str:
    return f"key:{key.key_id}"


def _check_routes(body: KeyLimitsBody, request: Request) -> None:
    """Reject route names that the gateway does not serve, since the key could never call them."""
    served = request.app.state.gateway.models
    unknown = [name for name in body.routes or () if name not in served]
    if unknown:
        raise ApiError(
            400,
            "invalid_request",
            f"routes {unknown} are not served by this gateway; choose from {', '.join(served)}",
            param="routes",
        )


def _created(new: NewKey) -> JSONResponse:
    # The only answer that ever holds the key itself.
    return JSONResponse({**new.key.as_dict(), "key": new.secret}, status_code=201)


@router.post("/keys", status_code=201)
def create(body: NewKeyBody, request: Request, key: ApiKey = Depends(admin)) -> JSONResponse:
    """Create a key; the answer holds the key, which is never shown again."""
    _check_routes(body, request)
    new = create_key(
        request.app.state.store, body.role, name=body.name, limits=body.limits(), actor=actor(key)
    )
    return _created(new)


@router.get("/keys")
def keys(request: Request, key: ApiKey = Depends(admin)) -> dict[str, Any]:
    """Every key, revoked ones included, without secrets."""
    return {"data": [item.as_dict() for item in list_keys(request.app.state.store)]}


@router.get("/keys/{key_id}")
def one_key(key_id: str, request: Request, key: ApiKey = Depends(admin)) -> dict[str, Any]:
    return get_key(request.app.state.store, key_id).as_dict()


@router.post("/keys/{key_id}/revoke")
def revoke(key_id: str, request: Request, key: ApiKey = Depends(admin)) -> dict[str, Any]:
    """Revoke a key; this process stops accepting it at once."""
    revoked = revoke_key(request.app.state.store, key_id, actor=actor(key))
    request.app.state.keys.forget(key_id)
    return revoked.as_dict()


@router.post("/keys/{key_id}/rotate", status_code=201)
def rotate(key_id: str, request: Request, key: ApiKey = Depends(admin)) -> JSONResponse:
    """Revoke a key and make a new one with its role and limits."""
    new = rotate_key(request.app.state.store, key_id, actor=actor(key))
    request.app.state.keys.forget(key_id)
    return _created(new)


@router.put("/keys/{key_id}/limits")
def change_limits(
    key_id: str, body: KeyLimitsBody, request: Request, key: ApiKey = Depends(admin)
) -> dict[str, Any]:
    """Replace a key's budget, rates, routes and expiry."""
    _check_routes(body, request)
    changed = set_limits(request.app.state.store, key_id, body.limits(), actor=actor(key))
    request.app.state.keys.forget(key_id)
    return changed.as_dict()


@router.put("/prompts/{name:path}/labels/{label}")
def move_label(
    name: str, label: str, body: LabelBody, request: Request, key: ApiKey = Depends(admin)
) -> dict[str, Any]:
    """Point a prompt's label at a version."""
    move = PromptRegistry(request.app.state.store).set_label(name, body.version, label, moved_by=actor(key))
    return {
        "name": move.name,
        "label": move.label,
        "from_version": move.from_version,
        "to_version": move.to_version,
        "moved_by": move.moved_by,
        "moved_at": move.moved_at.isoformat(),
    }


@router.get("/audit")
def audit(
    request: Request,
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0, le=10**9),
    actor_name: str | None = Query(None, alias="actor", max_length=200),
    action: str | None = Query(None, max_length=64),
    key: ApiKey = Depends(admin),
) -> dict[str, Any]:
    """The audit log, newest first, one page at a time."""
    rows, total = list_actions(
        request.app.state.store, limit=limit, offset=offset, actor=actor_name, action=action
    )
    for row in rows:
        row["at"] = row["at"].isoformat()
    return {"data": rows, "total": total, "limit": limit, "offset": offset}
