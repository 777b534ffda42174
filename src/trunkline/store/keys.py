"""Gateway keys: created, listed, revoked and rotated, with only their hashes stored.

A key reads ``tk-<key id>-<secret>``. The id is public and names the key in
records, lists and the audit log. The secret is 32 random bytes that only
the key's creator receives. The store keeps the SHA-256 of the whole key.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import select, update

from trunkline.errors import ConfigError
from trunkline.store.audit import record_action
from trunkline.store.database import Store, as_utc
from trunkline.store.tables import api_keys

KEY_PREFIX = "tk-"


class KeyNotFound(ConfigError):
    """No key has the id asked for."""


class Role(StrEnum):
    """The permission level of a key; each role includes every permission of the roles below it."""

    VIEWER = "viewer"
    DEVELOPER = "developer"
    ADMIN = "admin"
    #: Reads `/metrics` only, for a Prometheus scraper.
    METRICS = "metrics"


_RANK = {Role.METRICS: 0, Role.VIEWER: 1, Role.DEVELOPER: 2, Role.ADMIN: 3}


def allows(granted: Role, needed: Role) -> bool:
    """Return whether a key of role `granted` may use an endpoint that needs `needed`.

    A metrics key reaches the metrics endpoint alone, and admin reaches it too.
    """
    if needed is Role.METRICS:
        return granted in (Role.METRICS, Role.ADMIN)
    if granted is Role.METRICS:
        return False
    return _RANK[granted] >= _RANK[needed]


@dataclass(frozen=True)
class ApiKey:
    """One key as stored: every field but the secret."""

    key_id: str
    role: Role
    name: str | None
    created_at: datetime
    created_by: str | None = None
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    rotated_from: str | None = None
    budget_usd_per_day: float | None = None
    rpm: int | None = None
    tpm: int | None = None
    #: Route names it may call; None for every route.
    routes: tuple[str, ...] | None = None

    def state(self, now: datetime | None = None) -> str:
        """``active``, ``revoked`` or ``expired``."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= (now or datetime.now(UTC)):
            return "expired"
        return "active"

    def may_call(self, route: str) -> bool:
        return self.routes is None or route in self.routes

    def as_dict(self) -> dict[str, Any]:
        return {
            "key_id": self.key_id,
            "name": self.name,
            "role": self.role.value,
            "state": self.state(),
            "created_at": self.created_at.isoformat(),
            "created_by": self.created_by,
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
            "rotated_from": self.rotated_from,
            "budget_usd_per_day": self.budget_usd_per_day,
            "rpm": self.rpm,
            "tpm": self.tpm,
            "routes": list(self.routes) if self.routes is not None else None,
        }


@dataclass(frozen=True)
class NewKey:
    """A key just made: `secret` is the usable key, shown once and never stored."""

    key: ApiKey
    secret: str = field(repr=False)


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_role(value: str) -> Role:
    try:
        return Role(value)
    except ValueError:
        names = ", ".join(role.value for role in Role)
        raise ConfigError(f"unknown role {value!r}; use one of {names}") from None


#: Upper bounds of a key's limits, checked by `KeyLimits` for the CLI and the admin API alike.
#: They keep every value inside the store's integer columns and `datetime`'s range.
MAX_BUDGET_USD_PER_DAY = 1e9
MAX_RPM = 10**9
MAX_TPM = 10**12
MAX_EXPIRES_IN_DAYS = 36_500


@dataclass(frozen=True)
class KeyLimits:
    """The limits a key is created with; None leaves a limit off.

    Raises:
        ConfigError: a value is out of range, or the route list is empty or
            has a blank name.
    """

    budget_usd_per_day: float | None = None
    rpm: int | None = None
    tpm: int | None = None
    routes: tuple[str, ...] | None = None
    expires_at: datetime | None = None

    def __post_init__(self) -> None:
        for name, maximum in (("rpm", MAX_RPM), ("tpm", MAX_TPM)):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
                raise ConfigError(
                    f"a key's {name} must be a whole number from 1 to {maximum}, got {value!r}"
                )
        budget = self.budget_usd_per_day
        if budget is not None and (
            isinstance(budget, bool) or not 0 < budget <= MAX_BUDGET_USD_PER_DAY
        ):
            raise ConfigError(
                f"a key's budget must be more than 0 and at most {MAX_BUDGET_USD_PER_DAY:g} "
                f"USD per day, got {budget!r}"
            )
        if self.routes is not None:
            if not self.routes:
                raise ConfigError("a key's route list is empty; leave it out to allow every route")
            if any(not name.strip() for name in self.routes):
                raise ConfigError(
                    f"a key's route list has an empty name: {list(self.routes)}; "
                    "give each route or deployment by its name"
                )

    def as_dict(self) -> dict[str, Any]:
        """Return the limits as JSON values, as the audit log stores them."""
        return {
            "budget_usd_per_day": self.budget_usd_per_day,
            "rpm": self.rpm,
            "tpm": self.tpm,
            "routes": list(self.routes) if self.routes is not None else None,
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
        }


def expiry_after(days: float, now: datetime | None = None) -> datetime:
    """Return the time `days` from `now`, for a key's expiry.

    Raises:
        ConfigError: `days` is not more than 0 and at most `MAX_EXPIRES_IN_DAYS`.
    """
    if isinstance(days, bool) or not 0 < days <= MAX_EXPIRES_IN_DAYS:
        raise ConfigError(
            f"a key's expiry must be more than 0 and at most {MAX_EXPIRES_IN_DAYS} days "
            f"from now, got {days!r}"
        )
    return (now or datetime.now(UTC)) + timedelta(days=days)


def check_routes(routes: tuple[str, ...] | None, served: list[str]) -> None:
    """Reject route names that are not in `served`, because a key could never call them.

    Raises:
        ConfigError: a name is neither a configured route nor a deployment.
    """
    unknown = [name for name in routes or () if name not in served]
    if unknown:
        raise ConfigError(
            f"the configuration has no route or deployment named {', '.join(map(repr, unknown))}; "
            f"choose from {', '.join(served) or 'none'}"
        )


def create_key(
    store: Store,
    role: Role,
    *,
    name: str | None = None,
    limits: KeyLimits = KeyLimits(),
    actor: str,
    rotated_from: str | None = None,
) -> NewKey:
    """Make a key, store its hash, and write the creation to the audit log."""
    key_id = secrets.token_hex(6)
    secret = f"{KEY_PREFIX}{key_id}-{secrets.token_urlsafe(32)}"
    key = ApiKey(
        key_id=key_id,
        role=role,
        name=name,
        created_at=datetime.now(UTC),
        created_by=actor,
        expires_at=limits.expires_at,
        rotated_from=rotated_from,
        budget_usd_per_day=limits.budget_usd_per_day,
        rpm=limits.rpm,
        tpm=limits.tpm,
        routes=limits.routes,
    )
    row = {**_row(key), "key_hash": hash_key(secret)}
    with store.engine.begin() as connection:
        connection.execute(api_keys.insert().values(**row))
        record_action(
            connection,
            actor,
            "key.rotated" if rotated_from else "key.created",
            key_id,
            {
                "role": role.value,
                "name": name,
                **limits.as_dict(),
                **({"from": rotated_from} if rotated_from else {}),
            },
        )
    return NewKey(key=key, secret=secret)


def find_key(store: Store, secret: str) -> ApiKey | None:
    """Return the key whose hash matches `secret`, in any state, or None."""
    with store.engine.connect() as connection:
        row = connection.execute(
            select(api_keys).where(api_keys.c.key_hash == hash_key(secret))
        ).mappings().first()
    return _key(row) if row else None


def get_key(store: Store, key_id: str) -> ApiKey:
    with store.engine.connect() as connection:
        row = connection.execute(select(api_keys).where(api_keys.c.key_id == key_id)).mappings().first()
    if row is None:
        raise KeyNotFound(f"no key with id {key_id!r}; `trunkline keys list` shows the ids")
    return _key(row)


def list_keys(store: Store, *, include_revoked: bool = True) -> list[ApiKey]:
    query = select(api_keys).order_by(api_keys.c.created_at)
    if not include_revoked:
        query = query.where(api_keys.c.revoked_at.is_(None))
    with store.engine.connect() as connection:
        return [_key(row) for row in connection.execute(query).mappings()]


def revoke_key(store: Store, key_id: str, *, actor: str) -> ApiKey:
    """Revoke a key at once; revoking it again changes nothing and is not logged twice."""
    key = get_key(store, key_id)
    if key.revoked_at is not None:
        return key
    now = datetime.now(UTC)
    with store.engine.begin() as connection:
        connection.execute(update(api_keys).where(api_keys.c.key_id == key_id).values(revoked_at=now))
        record_action(connection, actor, "key.revoked", key_id, {"role": key.role.value})
    return get_key(store, key_id)


def rotate_key(store: Store, key_id: str, *, actor: str) -> NewKey:
    """Revoke a key and make a new one with the same role, name and limits."""
    old = get_key(store, key_id)
    if old.state() != "active":
        raise ConfigError(f"key {key_id!r} is {old.state()}; only an active key can be rotated")
    limits = KeyLimits(
        budget_usd_per_day=old.budget_usd_per_day,
        rpm=old.rpm,
        tpm=old.tpm,
        routes=old.routes,
        expires_at=old.expires_at,
    )
    new = create_key(store, old.role, name=old.name, limits=limits, actor=actor, rotated_from=key_id)
    revoke_key(store, key_id, actor=actor)
    return new


def set_limits(store: Store, key_id: str, limits: KeyLimits, *, actor: str) -> ApiKey:
    """Replace a key's limits, routes and expiry, and log the change with the old values.

    A change that leaves every value as it was writes nothing, to the key or
    to the audit log.
    """
    old = get_key(store, key_id)
    if old.revoked_at is not None:
        raise ConfigError(f"key {key_id!r} is revoked, so its limits cannot change; create a new key")
    values = {
        "budget_usd_per_day": limits.budget_usd_per_day,
        "rpm": limits.rpm,
        "tpm": limits.tpm,
        "routes": list(limits.routes) if limits.routes is not None else None,
        "expires_at": limits.expires_at,
    }
    before = {name: _plain(getattr(old, name)) for name in values}
    after = {name: _plain(value) for name, value in values.items()}
    if before == after:
        return old
    with store.engine.begin() as connection:
        connection.execute(update(api_keys).where(api_keys.c.key_id == key_id).values(**values))
        record_action(connection, actor, "key.limits_changed", key_id, {"before": before, "after": after})
    return get_key(store, key_id)


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, tuple):
        return list(value)
    return value


def _row(key: ApiKey) -> dict[str, Any]:
    return {
        "key_id": key.key_id,
        "name": key.name,
        "role": key.role.value,
        "created_at": key.created_at,
        "created_by": key.created_by,
        "expires_at": key.expires_at,
        "revoked_at": key.revoked_at,
        "rotated_from": key.rotated_from,
        "budget_usd_per_day": key.budget_usd_per_day,
        "rpm": key.rpm,
        "tpm": key.tpm,
        "routes": list(key.routes) if key.routes is not None else None,
    }


def _key(row: Any) -> ApiKey:
    return ApiKey(
        key_id=row["key_id"],
        role=Role(row["role"]),
        name=row["name"],
        created_at=as_utc(row["created_at"]),
        created_by=row["created_by"],
        expires_at=as_utc(row["expires_at"]) if row["expires_at"] else None,
        revoked_at=as_utc(row["revoked_at"]) if row["revoked_at"] else None,
        rotated_from=row["rotated_from"],
        budget_usd_per_day=row["budget_usd_per_day"],
        rpm=row["rpm"],
        tpm=row["tpm"],
        routes=tuple(row["routes"]) if row["routes"] is not None else None,
    )
