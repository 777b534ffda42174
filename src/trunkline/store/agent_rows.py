"""Per-row usage of a workflow's agent step in earlier runs: model calls, tokens and cost.

A row's calls are linked to it through spans, because a call record names
its span, not its row. Each call's parent chain leads to the workflow step's
span (kind ``step``, attribute ``step_kind``), whose parent is the row's
span (kind ``row``, attribute ``row_index``). The stored row's details show
that the step ran on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from trunkline.store.database import Store
from trunkline.store.tables import calls, run_rows, runs, spans

#: Only the most recent runs count, because older ones may have used another prompt or tools.
RECENT_RUNS = 20


@dataclass
class AgentRowUsage:
    """The model calls that one agent step made on one stored row, summed."""

    run_id: str
    row_index: int
    #: The agent's steps from the row's details: its model calls, the last one included.
    steps: int
    tool_calls: int
    model_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    #: USD at the prices recorded with the calls; None when any call was unpriced.
    cost_usd: float | None = 0.0


def agent_row_usage(
    store: Store, workflow: str, step: str, *, recent_runs: int = RECENT_RUNS
) -> list[AgentRowUsage]:
    """Return the rows of the last `recent_runs` runs of `workflow` on which agent step `step` ran.

    A row counts whether or not its agent answered, since a row that a bound
    stopped spent its calls too. Rows whose calls cannot be linked, because
    their spans were not stored, are left out.
    """
    with store.engine.connect() as connection:
        run_ids = list(
            connection.execute(
                select(runs.c.run_id)
                .where(runs.c.workflow == workflow)
                .order_by(runs.c.started_at.desc())
                .limit(recent_runs)
            ).scalars()
        )
        if not run_ids:
            return []
        stored = connection.execute(
            select(run_rows.c.run_id, run_rows.c.row_index, run_rows.c.details).where(
                run_rows.c.run_id.in_(run_ids), run_rows.c.details.is_not(None)
            )
        ).all()
        span_columns = (
            spans.c.span_id, spans.c.parent_span_id, spans.c.name, spans.c.kind, spans.c.attributes
        )
        span_rows = connection.execute(
            select(*span_columns).where(
                spans.c.run_id.in_(run_ids), spans.c.kind.in_(("row", "step", "agent"))
            )
        ).all()
        call_rows = connection.execute(
            select(
                calls.c.run_id,
                calls.c.parent_span_id,
                calls.c.input_tokens,
                calls.c.output_tokens,
                calls.c.cost_usd,
                calls.c.price_missing,
            ).where(calls.c.run_id.in_(run_ids))
        ).all()

    usage: dict[tuple[str, int], AgentRowUsage] = {}
    for row in stored:
        details = (row.details or {}).get(step)
        if isinstance(details, dict) and "steps" in details:
            usage[(row.run_id, row.row_index)] = AgentRowUsage(
                run_id=row.run_id,
                row_index=row.row_index,
                steps=int(details["steps"]),
                tool_calls=int(details.get("tool_calls", 0)),
            )
    rows_of_spans = _step_span_rows({row.span_id: row for row in span_rows}, step)
    for call in call_rows:
        row_index = rows_of_spans.get(call.parent_span_id or "")
        found = usage.get((call.run_id, row_index)) if row_index is not None else None
        if found is None:
            continue
        found.model_calls += 1
        found.input_tokens += call.input_tokens
        found.output_tokens += call.output_tokens
        if call.price_missing or call.cost_usd is None or found.cost_usd is None:
            found.cost_usd = None
        else:
            found.cost_usd += call.cost_usd
    return [found for found in usage.values() if found.model_calls]


def _step_span_rows(by_id: dict[str, Any], step: str) -> dict[str, int]:
    """Map each span inside an agent step `step` span to the row index of the row span above it."""
    found: dict[str, int] = {}
    for span_id in by_id:
        chain: list[str] = []
        current = by_id.get(span_id)
        row_index = None
        # The chain ends at the row span, so it is at most a few spans long.
        while current is not None and current.span_id not in found:
            chain.append(current.span_id)
            kind = (current.attributes or {}).get("step_kind")
            if current.kind == "step" and current.name == step and kind == "agent":
                parent = by_id.get(current.parent_span_id or "")
                if parent is not None and parent.kind == "row":
                    row_index = (parent.attributes or {}).get("row_index")
                break
            current = by_id.get(current.parent_span_id or "")
        else:
            if current is not None:
                row_index = found[current.span_id]
        if row_index is None:
            continue
        for member in chain:
            found[member] = int(row_index)
    return found
