"""The admin API: keys, prompt labels and the audit log. Every change is written to the audit log."""

from __future__ import annotations

import difflib
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from trunkline.errors import ConfigError
from trunkline.prompts.registry import PromptRegistry
from trunkline.prompts.versions import PromptContent
from trunkline.server.auth import require
from trunkline.server.errors import ApiError
from trunkline.store.audit import list_actions
from trunkline.store.keys import (
    MAX_BUDGET_USD_PER_DAY,
    MAX_EXPIRES_IN_DAYS,
    MAX_RPM,
    MAX_TPM,
    ApiKey,
    KeyLimits,
    NewKey,
    Role,
    check_routes,
    create_key,
    expiry_after,
    get_key,
    list_keys,
    revoke_key,
    rotate_key,
    set_limits,
)

router = APIRouter(prefix="/admin", tags=["admin"])
admin = require(Role.ADMIN)

#: The error type of a body field the API does not have; the 422 message names the field.
UNKNOWN_FIELD = "unknown_field"


class AdminBody(BaseModel):
    """A body of the admin API: a field it does not know is rejected, with the closest one named."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _known_fields(cls, data: Any) -> Any:
        # Runs before extra="forbid", which would name the field but not the one meant.
        if not isinstance(data, dict):
            return data
        fields = list(cls.model_fields)
        unknown = [name for name in data if name not in cls.model_fields]
        if unknown:
            described = ", ".join(_describe_unknown(str(name), fields) for name in unknown)
            raise PydanticCustomError(
                UNKNOWN_FIELD,
                "unknown field {described}; the body accepts {fields}",
                {"described": described, "fields": ", ".join(fields), "field": str(unknown[0])},
            )
        return data


def _describe_unknown(name: str, fields: list[str]) -> str:
    """Return `name` quoted, with the field it most likely meant."""
    meant = [field for field in fields if field.startswith(name) or name.startswith(field)]
    meant = meant or difflib.get_close_matches(name, fields, n=1, cutoff=0.6)
    return f"{name!r} (did you mean {meant[0]}?)" if meant else repr(name)


class KeyLimitsBody(AdminBody):
    """A key's limits. In a change, a field left out keeps its value and a field sent as null lifts it."""

    budget_usd_per_day: float | None = Field(default=None, gt=0, le=MAX_BUDGET_USD_PER_DAY)
    rpm: int | None = Field(default=None, ge=1, le=MAX_RPM)
    tpm: int | None = Field(default=None, ge=1, le=MAX_TPM)
    routes: list[Annotated[str, Field(min_length=1)]] | None = Field(default=None, min_length=1)
    #: Days from now until the key stops working; None for never.
    expires_in_days: float | None = Field(default=None, gt=0, le=MAX_EXPIRES_IN_DAYS)

    def limits(self) -> KeyLimits:
        """Return the limits of a new key: a field left out is no limit."""
        expires = expiry_after(self.expires_in_days) if self.expires_in_days is not None else None
        return KeyLimits(
            budget_usd_per_day=self.budget_usd_per_day,
            rpm=self.rpm,
            tpm=self.tpm,
            routes=tuple(self.routes) if self.routes is not None else None,
            expires_at=expires,
        )

    def merged(self, old: ApiKey) -> KeyLimits:
        """Return `old`'s limits with the fields this body sent put in their place."""
        sent = self.model_fields_set
        new = self.limits()
        budget = new.budget_usd_per_day if "budget_usd_per_day" in sent else old.budget_usd_per_day
        return KeyLimits(
            budget_usd_per_day=budget,
            rpm=new.rpm if "rpm" in sent else old.rpm,
            tpm=new.tpm if "tpm" in sent else old.tpm,
            routes=new.routes if "routes" in sent else old.routes,
            expires_at=new.expires_at if "expires_in_days" in sent else old.expires_at,
        )


class KeyLimitsChange(KeyLimitsBody):
    """The body of ``PUT /admin/keys/{id}/limits``: the limits to change, at least one."""

    @model_validator(mode="after")
    def _names_a_limit(self) -> KeyLimitsChange:
        if not self.model_fields_set:
            raise PydanticCustomError(
                "no_limit",
                "the body names no limit; send at least one of {fields}, with null to lift it",
                {"fields": ", ".join(KeyLimitsBody.model_fields)},
            )
        return self


class NewKeyBody(KeyLimitsBody):
    """The body of ``POST /admin/keys``: a role, a name for people, and the key's limits."""

    role: Role
    name: str | None = Field(default=None, max_length=200)


class LabelBody(AdminBody):
    # Bounded by the 32-bit integer column that PostgreSQL gives versions.
    version: int = Field(ge=1, le=2**31 - 1)


def actor(key: ApiKey) -> str:
    return f"key:{key.key_id}"


def _check_routes(body: KeyLimitsBody, request: Request) -> None:
    """Reject route names that the gateway does not serve, since the key could never call them."""
    if body.routes is None:
        return
    try:
        check_routes(tuple(body.routes), request.app.state.gateway.models)
    except ConfigError as error:
        raise ApiError(400, "invalid_request", str(error), param="routes") from None


def _created(new: NewKey) -> JSONResponse:
    # The only response that ever contains the key itself.
    return JSONResponse({**new.key.as_dict(), "key": new.secret}, status_code=201)


@router.post("/keys", status_code=201)
def create(body: NewKeyBody, request: Request, key: ApiKey = Depends(admin)) -> JSONResponse:
    """Create a key; the response contains the key, which is never shown again."""
    _check_routes(body, request)
    new = create_key(
        request.app.state.store, body.role, name=body.name, limits=body.limits(), actor=actor(key)
    )
    return _created(new)


@router.get("/keys")
def keys(request: Request, key: ApiKey = Depends(admin)) -> dict[str, Any]:
    """List every key, revoked ones included, without secrets."""
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
    key_id: str, body: KeyLimitsChange, request: Request, key: ApiKey = Depends(admin)
) -> dict[str, Any]:
    """Change the limits a body names; the others keep their values, and null lifts one."""
    _check_routes(body, request)
    store = request.app.state.store
    # NOTE: two admins changing different limits of one key at once may each
    # write the other's field back with its old value.
    changed = set_limits(store, key_id, body.merged(get_key(store, key_id)), actor=actor(key))
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


@router.post("/prompts/{name:path}/versions", status_code=201)
def create_prompt_version(
    name: str, body: PromptContent, request: Request, key: ApiKey = Depends(admin)
) -> JSONResponse:
    """Add a prompt version, in the shape of a prompt file; the same content returns its existing version."""
    version, created = PromptRegistry(request.app.state.store).create_version(name, body, author=actor(key))
    payload = {
        "name": version.name,
        "version": version.version,
        "created": created,
        "content_hash": version.content_hash,
    }
    return JSONResponse(payload, status_code=201 if created else 200)


@router.get("/audit")
def audit(
    request: Request,
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0, le=10**9),
    actor_name: str | None = Query(None, alias="actor", max_length=200),
    action: str | None = Query(None, max_length=64),
    key: ApiKey = Depends(admin),
) -> dict[str, Any]:
    """Return the audit log, newest first, one page at a time."""
    rows, total = list_actions(
        request.app.state.store, limit=limit, offset=offset, actor=actor_name, action=action
    )
    for row in rows:
        row["at"] = row["at"].isoformat()
    return {"data": rows, "total": total, "limit": limit, "offset": offset}
