"""`trunkline trace`: a run's or call's spans as a tree, with each call's figures."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.tree import Tree

from trunkline.cli.render import format_cost, format_ms
from trunkline.config import load_settings
from trunkline.store.database import open_store
from trunkline.store.traces import TraceNode, load_trace, resolve_trace_id

console = Console()


def trace_command(
    reference: Annotated[str, typer.Argument(help="A trace id, a run id, or a call id or its prefix.")],
    max_nodes: Annotated[
        int, typer.Option("--max-nodes", min=1, help="Maximum number of spans printed.")
    ] = 200,
    as_json: Annotated[bool, typer.Option("--json", help="Print the tree as JSON.")] = False,
) -> None:
    """Print the span tree of a run or a call: durations, attempts, fallbacks, tokens and cost."""
    store = open_store(load_settings().database_url(), must_exist=True)
    try:
        trace_id = resolve_trace_id(store, reference)
        roots = load_trace(store, trace_id)
    finally:
        store.dispose()
    if as_json:
        typer.echo(json.dumps([_as_dict(node) for node in roots], indent=2, default=str))
        return
    tree = Tree(f"trace {trace_id}")
    budget = [max_nodes]
    for root in roots:
        _add(tree, root, budget)
    console.print(tree)
    hidden = sum(_count(root) for root in roots) - max_nodes
    if hidden > 0:
        console.print(f"{hidden} more spans not shown; raise --max-nodes to see them")


def _label(node: TraceNode) -> str:
    status = "[green]ok[/]" if node.status == "ok" else f"[red]{escape(node.error or 'error')}[/]"
    parts = [f"[bold]{escape(node.name)}[/] ({node.kind})", format_ms(node.duration_ms), status]
    call = node.call
    if call is not None:
        usage = call.usage
        parts.append(f"{escape(call.deployment or '-')} {escape(call.model_served or call.model_requested)}")
        parts.append(f"tokens {usage.input_tokens}/{usage.output_tokens}")
        parts.append(format_cost(call.cost.total_usd, 1 if call.cost.price_missing else 0))
        parts.append(f"attempts {len(call.attempts)}")
        if call.fallbacks:
            hops = ", ".join(f"{hop.deployment}: {hop.reason}" for hop in call.fallbacks)
            parts.append(f"fallbacks [{escape(hops)}]")
        if call.downgrades:
            moves = ", ".join(f"{d.from_deployment}->{d.to_deployment} ({d.reason})" for d in call.downgrades)
            parts.append(f"downgrades [{escape(moves)}]")
    return "  ".join(parts)


def _add(parent: Tree, node: TraceNode, budget: list[int]) -> None:
    budget[0] -= 1
    if budget[0] < 0:
        return
    branch = parent.add(_label(node))
    if node.call is not None:
        for attempt in node.call.attempts:
            outcome = "ok" if attempt.outcome == "ok" else f"{attempt.error_kind}"
            status = f" HTTP {attempt.status_code}" if attempt.status_code else ""
            wait = f", then {attempt.wait_reason}" if attempt.wait_reason else ""
            branch.add(
                f"attempt {attempt.attempt_number} at {escape(attempt.deployment)}: "
                f"{escape(str(outcome))}{status} in {format_ms(attempt.latency_ms)}{escape(wait)}"
            )
    for child in node.children:
        _add(branch, child, budget)


def _count(node: TraceNode) -> int:
    return 1 + sum(_count(child) for child in node.children)


def _as_dict(node: TraceNode) -> dict[str, Any]:
    data: dict[str, Any] = {
        "span_id": node.span_id,
        "name": node.name,
        "kind": node.kind,
        "started_at": node.started_at.isoformat(),
        "duration_ms": node.duration_ms,
        "status": node.status,
        "error": node.error,
        "attributes": node.attributes,
        "children": [_as_dict(child) for child in node.children],
    }
    if node.call is not None:
        data["call"] = node.call.model_dump(mode="json", exclude={"messages", "output_text", "output_parsed"})
    return data
