"""The call list: filters over indexed columns and keyset pagination, newest first.

A page ends at a cursor, the start time and id of its last call. The next
page reads calls strictly before it in (started_at, call_id) order, so pages
neither skip nor repeat calls while new ones arrive, and a page deep in a
million calls costs as little as the first.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, exists, func, or_, select
from sqlalchemy.sql.elements import ColumnElement

from trunkline.server.dashboard import params
from trunkline.server.dashboard.params import QueryError
from trunkline.store.database import Store, as_utc
from trunkline.store.tables import calls, spans

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200

_MODEL = func.coalesce(calls.c.model_served, calls.c.model_requested)

_COLUMNS = (
    calls.c.call_id,
    calls.c.trace_id,
    calls.c.started_at,
    calls.c.run_id,
    calls.c.session_id,
    calls.c.route,
    calls.c.deployment,
    _MODEL.label("model"),
    calls.c.prompt_name,
    calls.c.prompt_version,
    calls.c.outcome,
    calls.c.error_kind,
    calls.c.input_tokens,
    calls.c.output_tokens,
    calls.c.cost_usd,
    calls.c.price_missing,
    calls.c.latency_ms,
    calls.c.attempt_count,
    calls.c.retry_count,
    calls.c.fallback_count,
    calls.c.api_key_id,
)


@dataclass(frozen=True)
class Cursor:
    """The position after which a page starts: a call's start time and id."""

    started_at: datetime
    call_id: str

    def encode(self) -> str:
        return f"{self.started_at.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%S.%fZ')},{self.call_id}"

    @classmethod
    def decode(cls, name: str, value: str) -> Cursor:
        moment, _, call_id = value.partition(",")
        try:
            started = datetime.strptime(moment, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
        except ValueError:
            started = None
        if started is None or not call_id:
            raise QueryError(
                name, "is not a cursor from a page link; start again from the first page"
            )
        return cls(started, call_id)


#: Query parameters named unlike the `CallFilters` fields they set.
_PARAMETERS = {
    "run_id": "run",
    "session_id": "session",
    "api_key_id": "key",
    "since": "from",
    "until": "to",
    "trace_kind": "trace",
}


@dataclass(frozen=True)
class CallFilters:
    """Filters on the call list; None leaves a filter off."""

    run_id: str | None = None
    session_id: str | None = None
    #: The served model, or the requested one for a call no model served.
    model: str | None = None
    route: str | None = None
    outcome: str | None = None
    api_key_id: str | None = None
    #: Calls started at or after this time.
    since: datetime | None = None
    #: Calls started before this time.
    until: datetime | None = None
    #: ``agent`` keeps only calls whose trace contains an agent span.
    trace_kind: str | None = None

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> CallFilters:
        since, until = params.moment(query, "from"), params.moment(query, "to")
        if since is not None and until is not None and since >= until:
            raise QueryError("from", f"{since.isoformat()} is not before 'to' {until.isoformat()}")
        return cls(
            run_id=params.text(query, "run"),
            session_id=params.text(query, "session"),
            model=params.text(query, "model"),
            route=params.text(query, "route"),
            outcome=params.choice(query, "outcome", ("ok", "error")),
            api_key_id=params.text(query, "key"),
            since=since,
            until=until,
            trace_kind=params.choice(query, "trace", ("agent",)),
        )

    def query(self) -> dict[str, str]:
        """Return the filters as the query parameters `from_query` reads."""
        result = {}
        for field in fields(self):
            value = getattr(self, field.name)
            if value is not None:
                text = value.isoformat() if isinstance(value, datetime) else value
                result[_PARAMETERS.get(field.name, field.name)] = text
        return result

    def conditions(self) -> list[ColumnElement[bool]]:
        conditions = []
        for column, value in (
            (calls.c.run_id, self.run_id),
            (calls.c.session_id, self.session_id),
            (_MODEL, self.model),
            (calls.c.route, self.route),
            (calls.c.outcome, self.outcome),
            (calls.c.api_key_id, self.api_key_id),
        ):
            if value is not None:
                conditions.append(column == value)
        if self.since is not None:
            conditions.append(calls.c.started_at >= self.since)
        if self.until is not None:
            conditions.append(calls.c.started_at < self.until)
        if self.trace_kind == "agent":
            conditions.append(_in_agent_trace())
        return conditions


@dataclass(frozen=True)
class CallPage:
    """One page of calls, newest first, with the cursors of the pages around it."""

    rows: list[dict[str, Any]]
    #: Cursor of the page of newer calls, or None on the first page.
    newer: str | None
    #: Cursor of the page of older calls, or None on the last page.
    older: str | None
    limit: int


def page_request(query: Mapping[str, str]) -> tuple[CallFilters, int, Cursor | None, Cursor | None]:
    """Read filters, page size and the `before` or `after` cursor from query parameters."""
    filters = CallFilters.from_query(query)
    limit = params.integer(query, "limit", DEFAULT_PAGE_SIZE, minimum=1, maximum=MAX_PAGE_SIZE)
    before, after = params.text(query, "before"), params.text(query, "after")
    if before and after:
        raise QueryError("after", "cannot be given with 'before'; follow one page link at a time")
    return (
        filters,
        limit,
        Cursor.decode("before", before) if before else None,
        Cursor.decode("after", after) if after else None,
    )


def list_calls_page(
    store: Store,
    filters: CallFilters,
    *,
    limit: int = DEFAULT_PAGE_SIZE,
    before: Cursor | None = None,
    after: Cursor | None = None,
) -> CallPage:
    """Return one page of the calls matching `filters`, newest first.

    Without a cursor, this is the first page. With `before`, it is the page
    of older calls that follows that cursor. With `after`, it is the page of
    newer calls that precedes it.
    """
    limit = max(1, min(limit, MAX_PAGE_SIZE))
    conditions = filters.conditions()
    if after is not None:
        conditions.append(_beyond(after, newer=True))
        order = (calls.c.started_at.asc(), calls.c.call_id.asc())
    else:
        if before is not None:
            conditions.append(_beyond(before, newer=False))
        order = (calls.c.started_at.desc(), calls.c.call_id.desc())
    query = select(*_COLUMNS).where(*conditions).order_by(*order).limit(limit + 1)
    with store.engine.connect() as connection:
        rows = [dict(row) for row in connection.execute(query).mappings()]
    more = len(rows) > limit
    rows = rows[:limit]
    for row in rows:
        row["started_at"] = as_utc(row["started_at"])
    if after is not None:
        rows.reverse()
        newer, older = more, True
    else:
        newer, older = before is not None, more
    return CallPage(
        rows=rows,
        newer=_cursor(rows[0]) if newer and rows else None,
        older=_cursor(rows[-1]) if older and rows else None,
        limit=limit,
    )


def _beyond(cursor: Cursor, *, newer: bool) -> ColumnElement[bool]:
    # The bound on started_at alone lets the database walk the started_at
    # index; the id only breaks ties between calls started at the same time.
    started, call_id = cursor.started_at, cursor.call_id
    column = calls.c.started_at
    if newer:
        return and_(column >= started, or_(column > started, calls.c.call_id > call_id))
    return and_(column <= started, or_(column < started, calls.c.call_id < call_id))


def _in_agent_trace() -> ColumnElement[bool]:
    # Each call is checked through the spans' trace_id index, so the cost
    # grows with the calls read before a page fills, as for other filters
    # that the started_at index does not cover.
    return exists().where(spans.c.trace_id == calls.c.trace_id, spans.c.kind == "agent")


def agent_trace_ids(store: Store, trace_ids: Collection[str]) -> set[str]:
    """Return which of `trace_ids` contain an agent span."""
    if not trace_ids:
        return set()
    query = (
        select(spans.c.trace_id)
        .where(spans.c.trace_id.in_(set(trace_ids)), spans.c.kind == "agent")
        .distinct()
    )
    with store.engine.connect() as connection:
        return set(connection.execute(query).scalars())


def _cursor(row: dict[str, Any]) -> str:
    return Cursor(row["started_at"], row["call_id"]).encode()


def call_json(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "started_at": row["started_at"].isoformat()}
