"""`trunkline trace`: a run's or call's spans as a tree, with each call's figures."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.tree import Tree

from trunkline.cli.render import format_cost, format_ms
from trunkline.config import load_settings
from trunkline.store.database import open_store
from trunkline.store.traces import (
    TraceNode,
    TraceReference,
    load_subtree,
    load_trace,
    resolve_reference,
)

console = Console()


def trace_command(
    reference: Annotated[str, typer.Argument(help="A trace id, a run id, or a call id or its prefix.")],
    max_nodes: Annotated[
        int, typer.Option("--max-nodes", min=1, help="Maximum number of spans printed.")
    ] = 200,
    as_json: Annotated[bool, typer.Option("--json", help="Print the tree as JSON.")] = False,
) -> None:
    """Print the span tree of a run or a call: durations, attempts, fallbacks, tokens and cost.

    A trace id or run id prints the whole trace. A call id prints that call's
    span with its attempts and children, after a line naming its trace and run.
    """
    store = open_store(load_settings().database_url(), must_exist=True)
    try:
        found = resolve_reference(store, reference)
        if found.kind == "call" and found.span_id is not None:
            roots = [load_subtree(store, found.trace_id, found.span_id)]
        else:
            roots = load_trace(store, found.trace_id)
    finally:
        store.dispose()
    kept_roots, omitted = _first_spans(roots, max_nodes)
    if as_json:
        _print_json(found, kept_roots, omitted)
    else:
        _print_tree(found, kept_roots, omitted)


def _print_json(found: TraceReference, roots: list[TraceNode], omitted: int) -> None:
    output = {
        "reference_kind": found.kind,
        "trace_id": found.trace_id,
        "run_id": found.run_id,
        "call_id": found.call_id,
        "roots": [_as_dict(node) for node in roots],
        # A script reads this count to tell a tree cut at --max-nodes from a whole one.
        "omitted_spans": omitted,
    }
    typer.echo(json.dumps(output, indent=2, default=str))


def _print_tree(found: TraceReference, roots: list[TraceNode], omitted: int) -> None:
    tree = Tree(_heading(found))
    for root in roots:
        _add(tree, root)
    console.print(tree)
    if omitted > 0:
        console.print(f"{omitted} more spans not shown; raise --max-nodes to see them")


def _heading(found: TraceReference) -> str:
    if found.kind != "call":
        return f"trace {found.trace_id}"
    call = f"call {escape(found.call_id or '')} in trace {found.trace_id}"
    if found.run_id is None:
        return f"{call}; `trunkline trace {found.trace_id}` shows the whole trace"
    run_id = escape(found.run_id)
    return f"{call}, run {run_id}; `trunkline trace {run_id}` shows the whole run"


def _first_spans(roots: list[TraceNode], max_nodes: int) -> tuple[list[TraceNode], int]:
    """Copy the first `max_nodes` spans in depth-first order; return them and the count left out."""
    budget = max_nodes

    def keep(node: TraceNode) -> TraceNode:
        nonlocal budget
        budget -= 1
        children: list[TraceNode] = []
        for child in node.children:
            if budget == 0:
                break
            children.append(keep(child))
        return replace(node, children=children)

    kept_roots: list[TraceNode] = []
    for root in roots:
        if budget == 0:
            break
        kept_roots.append(keep(root))
    total = sum(_count(root) for root in roots)
    return kept_roots, total - min(total, max_nodes)


def _label(node: TraceNode) -> str:
    status = "[green]ok[/]" if node.status == "ok" else f"[red]{escape(node.error or 'error')}[/]"
    parts = [f"[bold]{escape(node.name)}[/] ({node.kind})", format_ms(node.duration_ms), status]
    parts.extend(_agent_parts(node))
    call = node.call
    if call is not None:
        usage = call.usage
        parts.append(f"{escape(call.deployment or '-')} {escape(call.model_served or call.model_requested)}")
        parts.append(f"tokens {usage.input_tokens}/{usage.output_tokens}")
        parts.append(format_cost(call.cost.total_usd, 1 if call.cost.price_missing else 0))
        parts.append(f"attempts {len(call.attempts)}")
        # Rich reads "[broken: auth]" as a markup tag and drops it, so the
        # opening bracket is escaped.
        if call.fallbacks:
            hops = ", ".join(f"{hop.deployment}: {hop.reason}" for hop in call.fallbacks)
            parts.append(f"fallbacks \\[{escape(hops)}]")
        if call.downgrades:
            moves = ", ".join(f"{d.from_deployment}->{d.to_deployment} ({d.reason})" for d in call.downgrades)
            parts.append(f"downgrades \\[{escape(moves)}]")
    return "  ".join(parts)


def _agent_parts(node: TraceNode) -> list[str]:
    """Describe an agent, step or tool span by the attributes an `Agent` records on it."""
    attributes = node.attributes
    if node.kind == "tool":
        tool = escape(str(attributes.get("gen_ai.tool.name") or node.name))
        error_kind = attributes.get("error_kind")
        label = f"tool {tool} {escape(node.outcome)}"
        return [f"{label} ({escape(str(error_kind))})" if error_kind else label]
    if node.kind == "step" and attributes.get("tool_calls") is not None:
        return [f"tool calls {attributes['tool_calls']}"]
    if node.kind == "agent" and attributes.get("stop_reason") is not None:
        return [
            f"stop reason {escape(str(attributes['stop_reason']))}",
            f"steps {attributes.get('steps')}",
            f"tool calls {attributes.get('tool_calls')}",
        ]
    return []


def _add(parent: Tree, node: TraceNode) -> None:
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
        _add(branch, child)


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
