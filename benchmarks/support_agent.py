"""The support-agent example on BANKING77 messages, beside the intent-triage workflow it calls.

Runs examples/support-agent on a spread of BANKING77 test messages (every
K-th row, so that many intents appear), then runs examples/intent-triage on
the same messages, both in this process with the configured settings (the
built-in local model unless a trunkline.toml says otherwise) and a
throwaway SQLite store. It prints, for the agent:

- how its runs ended (stop reasons) and how often it answered;
- steps, model calls and tool calls per message;
- tool-call validity: the share of tool calls that named a known tool with
  arguments that matched its schema, every failure by kind, and how often
  classify_intent received the customer's message word for word;
- how often it escalated, and the accuracy of the intents in its answers;
- tokens, the recorded cost and the cost at a hosted model's list price;

and the same accuracy, tokens and time for the workflow alone, with the
agent-to-workflow ratios. It exits with a message, and status 0, when the
BANKING77 files are missing.

    python benchmarks/support_agent.py [--rows 30] [--every 103] [--route ROUTE] [--store URL] [--json]

With ``--vote-shares``, it instead measures the classifier's confidence
threshold, with no model call: on every 6th test message, for each
threshold, the share of messages whose strongest retrieval intent holds at
least that share of the vote, and how often that intent is right.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from trunkline.config import load_settings
from trunkline.pricing import price_usage
from trunkline.recording import recording
from trunkline.routing import Router
from trunkline.store.runs import all_rows
from trunkline.tracing import add_exporter, remove_exporter
from trunkline.types.calls import CallRecord, Usage
from trunkline.types.spans import SpanRecord
from trunkline.workflows import BatchRunner, load_dataset, load_workflow

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "banking77"
AGENT = ROOT / "examples" / "support-agent"
TRIAGE = ROOT / "examples" / "intent-triage"
#: The hosted model whose list price the local model's tokens are priced at.
PRICED_AS = ("gpt-4o-mini", "openai")


class ToolSpans:
    """Keeps the tool spans of a run, which carry each call's outcome, error kind and arguments."""

    def __init__(self) -> None:
        self.spans: list[SpanRecord] = []

    def export_call(self, record: CallRecord) -> None:
        return None

    def export_span(self, record: SpanRecord) -> None:
        if record.kind == "tool":
            self.spans.append(record)


def sample_rows(every: int, count: int, folder: Path) -> tuple[Path, list[dict[str, str]]]:
    with (DATA / "test.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))[::every][:count]
    path = folder / "messages.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["text", "category"])
        writer.writeheader()
        writer.writerows(rows)
    return path, rows


async def run_workflow(folder: Path, data: Path, recorder: Any, router: Router, route: str | None, concurrency: int):
    spec = load_workflow(folder)
    if route is not None:
        spec = spec.model_copy(update={"route": route})
    runner = BatchRunner(
        spec,
        router=router,
        store=recorder.store,
        writer=recorder.writer,
        params=spec.parameters(),
        concurrency=concurrency,
    )
    started = time.perf_counter()
    summary = await runner.run(load_dataset(data))
    return summary, time.perf_counter() - started


def spread(values: list[float]) -> dict[str, float]:
    if not values:
        return {"mean": 0.0, "median": 0.0, "max": 0.0}
    return {"mean": statistics.fmean(values), "median": statistics.median(values), "max": max(values)}


def agent_report(rows: list[dict[str, Any]], messages: list[dict[str, str]], spans: list[SpanRecord]) -> dict[str, Any]:
    details = [(row.get("details") or {}).get("support", {}) for row in rows]
    answered = [row for row in rows if row["status"] == "ok"]
    kinds = Counter(span.attributes.get("error_kind") or "ok" for span in spans)
    classify = [span for span in spans if span.attributes.get("gen_ai.tool.name") == "classify_intent"]
    texts = {message["text"] for message in messages}
    copied = sum(
        1
        for span in classify
        if _argument(span, "message") in texts
    )
    escalated = sum(1 for item in details if "escalate" in item.get("by_tool", {}))
    correct = sum(1 for row in answered if row["score"] == 1.0)
    return {
        "messages": len(rows),
        "answered": len(answered),
        "stop_reasons": dict(Counter(item.get("stop_reason", "none") for item in details)),
        "steps_per_message": spread([item.get("steps", 0) for item in details]),
        "tool_calls_per_message": spread([item.get("tool_calls", 0) for item in details]),
        "tool_calls": len(spans),
        "tool_calls_valid": sum(
            count for kind, count in kinds.items() if kind not in ("unknown_tool", "arguments_not_json", "invalid_arguments")
        ),
        "tool_outcomes": dict(kinds),
        "classify_calls": len(classify),
        "classify_message_copied": copied,
        "escalated_messages": escalated,
        "intent_accuracy_answered": correct / len(answered) if answered else None,
        "intent_accuracy_all": correct / len(rows) if rows else None,
    }


def _argument(span: SpanRecord, name: str) -> Any:
    try:
        return json.loads(span.attributes.get("gen_ai.tool.call.arguments", "{}")).get(name)
    except (json.JSONDecodeError, AttributeError):
        return None


def spend(summary: Any, seconds: float) -> dict[str, Any]:
    usage = Usage(input_tokens=summary.input_tokens, output_tokens=summary.output_tokens)
    model, provider = PRICED_AS
    hosted = price_usage(usage, model, provider=provider, at=datetime.now(UTC), overrides={})
    rows = max(summary.rows, 1)
    return {
        "input_tokens_per_message": summary.input_tokens / rows,
        "output_tokens_per_message": summary.output_tokens / rows,
        "recorded_cost_usd": summary.cost_usd,
        f"cost_per_1000_messages_at_{model}_usd": None
        if hosted.total_usd is None
        else hosted.total_usd / rows * 1000,
        "seconds_per_message": seconds / rows,
        "accuracy": summary.accuracy,
    }


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    settings = load_settings(args.config)
    with tempfile.TemporaryDirectory() as folder:
        data, messages = sample_rows(args.every, args.rows, Path(folder))
        with recording(settings, url=args.store or f"sqlite:///{folder}/bench.db") as recorder:
            router = Router(settings)
            spans = ToolSpans()
            add_exporter(spans)
            try:
                agent, agent_s = await run_workflow(AGENT, data, recorder, router, args.route, args.concurrency)
            finally:
                remove_exporter(spans)
            triage, triage_s = await run_workflow(TRIAGE, data, recorder, router, None, args.concurrency)
            rows = all_rows(recorder.store, agent.run_id)
            await router.aclose()
    report = {
        "agent": agent_report(rows, messages, spans.spans) | spend(agent, agent_s),
        "workflow": spend(triage, triage_s),
    }
    agent_spend, workflow_spend = report["agent"], report["workflow"]
    report["ratios_agent_to_workflow"] = {
        key: agent_spend[key] / workflow_spend[key]
        for key in ("input_tokens_per_message", "output_tokens_per_message", "seconds_per_message")
        if workflow_spend[key]
    }
    return report


def show(report: dict[str, Any]) -> None:
    agent, workflow = report["agent"], report["workflow"]
    count = agent["messages"]
    print(f"support agent on {count} BANKING77 test messages")
    print(f"  answered            {agent['answered']} of {count}; stop reasons {agent['stop_reasons']}")
    for name in ("steps_per_message", "tool_calls_per_message"):
        values = agent[name]
        print(f"  {name:<19} mean {values['mean']:.2f}, median {values['median']:.1f}, max {values['max']:.0f}")
    valid = agent["tool_calls_valid"]
    total = agent["tool_calls"]
    print(f"  tool calls valid    {valid} of {total} ({valid / total:.1%})" if total else "  tool calls valid    none made")
    print(f"  tool outcomes       {agent['tool_outcomes']}")
    print(f"  classify_intent     {agent['classify_message_copied']} of {agent['classify_calls']} got the message word for word")
    print(f"  escalated           {agent['escalated_messages']} of {count}")
    for label, figures in (("agent", agent), ("workflow", workflow)):
        accuracy = figures["accuracy"]
        hosted = next(value for key, value in figures.items() if key.startswith("cost_per_1000"))
        print(
            f"{label:<9} accuracy {'n/a' if accuracy is None else f'{accuracy:.3f}'}, "
            f"{figures['input_tokens_per_message']:,.0f} in / {figures['output_tokens_per_message']:,.0f} out tokens "
            f"a message, {figures['seconds_per_message']:.2f} s a message, recorded cost "
            f"${figures['recorded_cost_usd'] or 0:.6f}, at {PRICED_AS[0]} prices "
            f"{'n/a' if hosted is None else f'${hosted:.4f}'} per 1,000 messages"
        )
    ratios = ", ".join(f"{key} {value:.1f}x" for key, value in report["ratios_agent_to_workflow"].items())
    print(f"agent / workflow: {ratios}")


def vote_shares(every: int, thresholds: tuple[float, ...] = (0.3, 0.4, 0.5)) -> None:
    sys.path.insert(0, str(TRIAGE))
    from tools import retrieve  # the intent-triage example's retrieval step

    with (DATA / "test.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))[::every]
    shares = []
    for row in rows:
        found = retrieve(row["text"], str(TRIAGE / "memory.csv"), 8, 4)
        total = sum(found["votes"])
        shares.append((found["votes"][0] / total if total else 0.0, found["candidates"][0] == row["category"]))
    print(f"retrieval vote on {len(rows)} BANKING77 test messages (every {every}th)")
    for threshold in thresholds:
        confident = [right for share, right in shares if share >= threshold]
        accuracy = sum(confident) / len(confident) if confident else 0.0
        print(f"  share >= {threshold:.1f}: {len(confident) / len(rows):.1%} of messages, right {accuracy:.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=30, help="messages to run")
    parser.add_argument("--every", type=int, default=103, help="take every K-th test message")
    parser.add_argument("--route", help="the agent's route; by default the example's (local)")
    parser.add_argument("--concurrency", type=int, default=1, help="rows in flight at once")
    parser.add_argument("--config", help="trunkline.toml to load; by default the usual search")
    parser.add_argument("--store", help="store URL to keep the runs in; by default a throwaway SQLite file")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "--vote-shares", action="store_true", help="measure the classifier's confidence threshold only"
    )
    args = parser.parse_args()
    if not (DATA / "test.csv").is_file():
        print(f"BANKING77 data not found in {DATA}; nothing to measure")
        return
    if args.vote_shares:
        vote_shares(6)
        return
    report = asyncio.run(measure(args))
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        print()
    else:
        show(report)


if __name__ == "__main__":
    main()
