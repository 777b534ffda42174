"""A real agent run for the dashboard's tests: scripted replies, real tools, its spans in a store.

The run has three steps. Step 1 runs two tool calls in parallel. Step 2 has
a tool that raises and a tool name that does not exist. Step 3 requests
another tool call, but `max_steps` stops the loop before it runs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from gateway.harness import GatewayServer, gateway_settings, running_gateway
from trunkline.agents import Agent, AgentResult
from trunkline.providers.fake import FakeReply, ScriptedModel
from trunkline.store.database import Store, open_store
from trunkline.store.writer import StoreWriter
from trunkline.tracing import add_exporter, remove_exporter
from trunkline.types.calls import CallRecord
from trunkline.types.messages import ToolCall
from unit.helpers import ListExporter, router_with

AGENT_NAME = "calculator"
#: A key in the first tool call's arguments; the agent redacts it before it records the span.
SECRET = "sk-test-" + "a1b2c3d4" * 4
HOSTILE = "<img src=x onerror=alert(1)>"
#: Longer than the tree's preview, so the full text shows only when expanded.
LONG_NOTE = "carry the one " * 20


def add(a: int, b: int, note: str = "") -> int:
    """Add two whole numbers.

    Args:
        a: the first number.
        b: the second number.
        note: a remark that the tool ignores.
    """
    return a + b


def describe(value: int, note: str = "") -> str:
    """Describe a number in words, at length.

    Args:
        value: the number.
        note: a remark that the tool ignores.
    """
    return f"{value} is a number; {LONG_NOTE.strip()}"


async def explode(reason: str) -> str:
    """Fail with the given reason."""
    raise RuntimeError(reason)


def _asks(*calls: ToolCall) -> FakeReply:
    return FakeReply("", tool_calls=calls, input_tokens=20, output_tokens=8)


SCRIPT = [
    _asks(
        ToolCall(id="c1", name="add", arguments=json.dumps({"a": 2, "b": 3, "note": SECRET})),
        ToolCall(id="c2", name="describe", arguments=json.dumps({"value": 5, "note": HOSTILE})),
    ),
    _asks(
        ToolCall(id="c3", name="explode", arguments='{"reason": "disk full"}'),
        ToolCall(id="c4", name="divide", arguments='{"a": 1, "b": 0}'),
    ),
    _asks(ToolCall(id="c5", name="add", arguments='{"a": 5, "b": 5}')),
]


@dataclass(frozen=True)
class AgentTrace:
    """The stored agent run: its trace id and what the agent returned."""

    trace_id: str
    result: AgentResult


def record_agent_trace(store: Store, other_calls: Sequence[CallRecord] = ()) -> AgentTrace:
    """Run the scripted agent and commit its call records and spans, and `other_calls`, to `store`."""
    captured = ListExporter()
    add_exporter(captured)
    try:
        agent = Agent(
            router_with(ScriptedModel(SCRIPT)),
            [add, describe, explode],
            name=AGENT_NAME,
            max_steps=3,
        )
        # A thread of its own, because Playwright's sync API keeps an event
        # loop running in this one, and asyncio.run cannot start inside it.
        with ThreadPoolExecutor(max_workers=1) as pool:
            result = pool.submit(agent.run_sync, "What is 2 + 3?").result()
    finally:
        remove_exporter(captured)
    writer = StoreWriter(store, batch_size=16, flush_interval_s=0.01)
    for record in [*captured.calls, *other_calls]:
        writer.export_call(record)
    for span in captured.spans:
        writer.export_span(span)
    writer.close()
    assert writer.failed_rows == 0
    [trace_id] = {span.trace_id for span in captured.spans}
    return AgentTrace(trace_id=trace_id, result=result)


@contextmanager
def agent_gateway(
    folder: Path, store_url: str, other_calls: Sequence[CallRecord] = ()
) -> Iterator[tuple[GatewayServer, AgentTrace]]:
    """Serve a gateway over a store that contains the agent run and `other_calls`.

    The run is recorded before the gateway starts, because the gateway's own
    writer would otherwise store the run's spans as well.
    """
    store = open_store(store_url)
    try:
        trace = record_agent_trace(store, other_calls)
    finally:
        store.dispose()
    # No route is called, so the upstream address is never used.
    with running_gateway(gateway_settings("http://127.0.0.1:9"), folder, store_url=store_url) as server:
        yield server, trace
