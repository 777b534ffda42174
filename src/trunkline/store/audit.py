"""The audit log: who changed keys, labels and settings, what and when."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, func, select

from trunkline.store.database import Store, as_utc
from trunkline.store.tables import audit_log


def record_action(
    connection: Connection, actor: str, action: str, target: str | None, details: dict[str, Any]
) -> None:
    """Write one entry inside the caller's transaction, so the change and its entry land together."""
    connection.execute(
        audit_log.insert().values(
            at=datetime.now(UTC), actor=actor, action=action, target=target, details=details
        )
    )


def log_action(store: Store, actor: str, action: str, target: str | None, details: dict[str, Any]) -> None:
    """Write one entry in a transaction of its own."""
    with store.engine.begin() as connection:
        record_action(connection, actor, action, target, details)


def list_actions(
    store: Store,
    *,
    limit: int = 50,
    offset: int = 0,
    actor: str | None = None,
    action: str | None = None,
) -> tuple[list[dict[str, Any]], int]:
    """Return one page of entries, newest first, and how many match in all."""
    query = select(audit_log)
    count = select(func.count()).select_from(audit_log)
    if actor:
        query = query.where(audit_log.c.actor == actor)
        count = count.where(audit_log.c.actor == actor)
    if action:
        query = query.where(audit_log.c.action == action)
        count = count.where(audit_log.c.action == action)
    query = query.order_by(audit_log.c.audit_id.desc()).limit(limit).offset(offset)
    with store.engine.connect() as connection:
        rows = [dict(row) for row in connection.execute(query).mappings()]
        total = connection.execute(count).scalar_one()
    for row in rows:
        row["at"] = as_utc(row["at"])
    return rows, total


def describe_details(details: dict[str, Any]) -> str:
    """Render an entry's details on one line; a change lists each field that moved.

    The CLI's audit table and the dashboard's audit page both show entries this way.
    """
    if set(details) == {"before", "after"}:
        before, after = details["before"], details["after"]
        moved = [name for name in after if before.get(name) != after.get(name)]
        changes = [f"{name}: {_show(before.get(name))} -> {_show(after.get(name))}" for name in moved]
        return ", ".join(changes) or "no change"
    return ", ".join(f"{name}={_show(value)}" for name, value in details.items() if value is not None)


def _show(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, list):
        return ",".join(str(item) for item in value)
    return str(value)
