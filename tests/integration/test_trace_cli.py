"""`trunkline trace`: the span tree of a run or a call, read back from the store."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import delete, update

from gateway.agent_trace import record_agent_trace
from integration.cli import run_trunkline
from integration.test_cli import CONFIG, write_project
from trunkline.store.database import open_store
from trunkline.store.tables import calls, runs, spans

# Every call leaves the first deployment with an auth error, so each call has a fallback.
BROKEN_FIRST = CONFIG.replace('deployments = ["fake"]', 'deployments = ["broken", "fake"]') + """
[deployments.broken]
provider = "fake"
model = "broken-model"
options = { mode = "simulated", error_rate = 1.0, error_status = 401 }
"""

# Rich wraps output at 80 columns when it is not a terminal, which could split the text checked.
WIDE = {"COLUMNS": "300"}


@pytest.fixture
def traced_run(tmp_path: Path) -> tuple[Path, str]:
    write_project(tmp_path, "is water wet,yes\nis fire cold,no\n")
    completed = run_trunkline(tmp_path, "run", "flow", "--json")
    assert completed.returncode == 0, completed.stderr
    return tmp_path, json.loads(completed.stdout)["run_id"]


def test_trace_of_a_run_is_a_tree(traced_run) -> None:
    folder, run_id = traced_run
    completed = run_trunkline(folder, "trace", run_id, "--json")
    assert completed.returncode == 0, completed.stderr
    output = json.loads(completed.stdout)
    assert output["reference_kind"] == "run"
    assert output["run_id"] == run_id
    assert output["omitted_spans"] == 0
    [root] = output["roots"]
    assert root["kind"] == "run"
    rows = root["children"]
    assert [row["kind"] for row in rows] == ["row", "row"]
    steps = rows[0]["children"]
    assert [step["name"] for step in steps] == ["ask", "pick"]
    [call] = steps[0]["children"]
    assert call["kind"] == "call"
    assert call["call"]["usage"]["input_tokens"] > 0
    assert call["call"]["cost"]["total_usd"] > 0
    assert len(call["call"]["attempts"]) == 1
    assert "messages" not in call["call"]


def test_trace_by_call_id_prefix_and_table(traced_run) -> None:
    folder, run_id = traced_run
    listed = run_trunkline(folder, "calls", "--run", run_id, "--json")
    call_id = json.loads(listed.stdout.splitlines()[0])["call_id"]
    completed = run_trunkline(folder, "trace", call_id[:10])
    assert completed.returncode == 0, completed.stderr
    assert "attempt 1 at fake: ok" in completed.stdout
    assert "tokens" in completed.stdout


def count_spans(node: dict) -> int:
    return 1 + sum(count_spans(child) for child in node["children"])


def test_trace_json_respects_max_nodes(traced_run) -> None:
    folder, run_id = traced_run
    completed = run_trunkline(folder, "trace", run_id, "--json", "--max-nodes", "3")
    assert completed.returncode == 0, completed.stderr
    output = json.loads(completed.stdout)
    [root] = output["roots"]
    assert count_spans(root) == 3
    # One run span, and for each of the two rows a row, a step, a call and a post step.
    assert output["omitted_spans"] == 9 - 3
    [row] = root["children"]
    [step] = row["children"]
    assert step["name"] == "ask"


def test_trace_by_trace_id_shows_whole_trace(traced_run) -> None:
    folder, run_id = traced_run
    by_run = json.loads(run_trunkline(folder, "trace", run_id, "--json").stdout)
    completed = run_trunkline(folder, "trace", by_run["trace_id"], "--json")
    assert completed.returncode == 0, completed.stderr
    output = json.loads(completed.stdout)
    assert output["reference_kind"] == "trace"
    assert output["roots"] == by_run["roots"]


def test_trace_by_call_id_shows_call_subtree(traced_run) -> None:
    folder, run_id = traced_run
    listed = run_trunkline(folder, "calls", "--run", run_id, "--json")
    # Cut at one span, the whole run's tree would show only the run span.
    call_id = json.loads(listed.stdout.splitlines()[0])["call_id"]
    completed = run_trunkline(folder, "trace", call_id[:10], "--max-nodes", "1", env=WIDE)
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.splitlines()
    assert lines[0].startswith(f"call {call_id} in trace ")
    assert f"run {run_id}; `trunkline trace {run_id}` shows the whole run" in lines[0]
    assert "(call)" in lines[1]
    assert "(run)" not in completed.stdout
    assert "attempt 1 at fake: ok" in completed.stdout


def test_trace_json_by_call_id(traced_run) -> None:
    folder, run_id = traced_run
    listed = run_trunkline(folder, "calls", "--run", run_id, "--json")
    call_id = json.loads(listed.stdout.splitlines()[0])["call_id"]
    completed = run_trunkline(folder, "trace", call_id, "--json")
    assert completed.returncode == 0, completed.stderr
    output = json.loads(completed.stdout)
    assert output["reference_kind"] == "call"
    assert output["call_id"] == call_id
    assert output["run_id"] == run_id
    assert output["omitted_spans"] == 0
    [node] = output["roots"]
    assert node["kind"] == "call"
    assert node["call"]["call_id"] == call_id


def test_trace_by_call_id_without_its_span(traced_run) -> None:
    folder, run_id = traced_run
    listed = run_trunkline(folder, "calls", "--run", run_id, "--json")
    call_id = json.loads(listed.stdout.splitlines()[0])["call_id"]
    found = json.loads(run_trunkline(folder, "trace", call_id, "--json").stdout)
    span_id = found["roots"][0]["span_id"]
    store = open_store(f"sqlite:///{folder / '.trunkline' / 'trunkline.db'}")
    try:
        with store.engine.begin() as connection:
            connection.execute(delete(spans).where(spans.c.span_id == span_id))
    finally:
        store.dispose()
    completed = run_trunkline(folder, "trace", call_id, env=WIDE)
    assert completed.returncode == 2
    assert f"span {span_id} is not in trace {found['trace_id']}" in completed.stderr


def test_trace_tree_shows_fallback_hops(tmp_path: Path) -> None:
    write_project(tmp_path, "is water wet,yes\n")
    (tmp_path / "trunkline.toml").write_text(BROKEN_FIRST)
    ran = run_trunkline(tmp_path, "run", "flow", "--json")
    assert ran.returncode == 0, ran.stderr
    run_id = json.loads(ran.stdout)["run_id"]
    completed = run_trunkline(tmp_path, "trace", run_id, env=WIDE)
    assert completed.returncode == 0, completed.stderr
    assert "fallbacks [broken: auth]" in completed.stdout


def test_trace_of_an_unknown_id(traced_run) -> None:
    folder, _ = traced_run
    completed = run_trunkline(folder, "trace", "nothing-here")
    assert completed.returncode == 2
    assert "no trace, run or call with id 'nothing-here'" in completed.stderr


def test_prune_command(traced_run) -> None:
    folder, _ = traced_run
    planned = run_trunkline(folder, "prune", "--older-than", "1m", "--dry-run")
    assert planned.returncode == 0, planned.stderr
    assert planned.stdout.startswith("would delete 0 calls")
    missing = run_trunkline(folder, "prune")
    assert missing.returncode == 2
    assert "--older-than" in missing.stderr
    invalid = run_trunkline(folder, "prune", "--older-than", "soon")
    assert invalid.returncode == 2
    assert "30d" in invalid.stderr


@pytest.mark.parametrize("age", ["1000000w", "99999999999d", "36501d"])
def test_prune_rejects_too_large_age(traced_run, age) -> None:
    folder, _ = traced_run
    completed = run_trunkline(folder, "prune", "--older-than", age, "--dry-run", env=WIDE)
    assert completed.returncode == 2
    assert "above the maximum of 36500d" in completed.stderr
    assert "Traceback" not in completed.stderr


def test_prune_rejects_too_large_retention_days(traced_run) -> None:
    folder, _ = traced_run
    with (folder / "trunkline.toml").open("a") as config:
        config.write("\n[store]\nretention_days = 1e12\n")
    completed = run_trunkline(folder, "prune", "--dry-run", env=WIDE)
    assert completed.returncode == 2
    assert "retention_days = 1e+12 under [store] is above the maximum" in completed.stderr
    assert "Traceback" not in completed.stderr


def test_prune_prints_cutoff_to_second(traced_run) -> None:
    folder, _ = traced_run
    before = datetime.now(UTC)
    completed = run_trunkline(folder, "prune", "--older-than", "2h", "--dry-run")
    after = datetime.now(UTC)
    assert completed.returncode == 0, completed.stderr
    pattern = r"from before (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC$"
    match = re.search(pattern, completed.stdout.strip())
    assert match is not None, completed.stdout
    cutoff = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
    assert before - timedelta(hours=2, seconds=1) <= cutoff <= after - timedelta(hours=2)


def test_prune_keeps_trace_of_running_run(traced_run) -> None:
    folder, run_id = traced_run
    long_ago = datetime.now(UTC) - timedelta(days=40)
    store = open_store(f"sqlite:///{folder / '.trunkline' / 'trunkline.db'}")
    try:
        with store.engine.begin() as connection:
            connection.execute(update(runs).values(status="running", started_at=long_ago))
            connection.execute(update(calls).values(started_at=long_ago))
            connection.execute(update(spans).values(started_at=long_ago))
    finally:
        store.dispose()
    pruned = run_trunkline(folder, "prune", "--older-than", "30d")
    assert pruned.returncode == 0, pruned.stderr
    assert pruned.stdout.startswith("deleted 0 calls, 0 spans, 0 runs")
    completed = run_trunkline(folder, "trace", run_id, "--json")
    assert completed.returncode == 0, completed.stderr
    [root] = json.loads(completed.stdout)["roots"]
    assert count_spans(root) == 9


def test_trace_of_agent_names_tools_and_outcomes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'agent.db'}"
    store = open_store(url)
    try:
        trace = record_agent_trace(store)
    finally:
        store.dispose()
    completed = run_trunkline(
        tmp_path, "trace", trace.trace_id, env={**WIDE, "TRUNKLINE_DATABASE_URL": url}
    )
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.splitlines()
    tool_lines = [line for line in lines if "(tool)" in line]
    assert len(tool_lines) == 4
    assert "tool add ok" in tool_lines[0]
    assert "tool describe ok" in tool_lines[1]
    assert "tool explode error (exception)" in tool_lines[2]
    assert "tool divide error (unknown_tool)" in tool_lines[3]
    [agent_line] = [line for line in lines if "(agent)" in line]
    assert "stop reason max_steps" in agent_line
    assert "steps 3" in agent_line
    step_lines = [line for line in lines if "(step)" in line]
    assert ["tool calls 2" in line for line in step_lines] == [True, True, False]
    assert "tool calls 1" in step_lines[2]


def test_show_prints_tool_calls_and_results(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'agent.db'}"
    store = open_store(url)
    try:
        trace = record_agent_trace(store)
    finally:
        store.dispose()
    env = {**WIDE, "TRUNKLINE_DATABASE_URL": url}
    first, second = trace.result.calls[0], trace.result.calls[1]

    asked = run_trunkline(tmp_path, "show", first.call_id, env=env)
    answered = run_trunkline(tmp_path, "show", second.call_id, env=env)

    assert asked.returncode == 0, asked.stderr
    assert "tools add, describe, explode; tool choice default" in asked.stdout
    output = asked.stdout.split(" output ")[1]
    assert "tool call c1: add(" in output
    assert "tool call c2: describe(" in output
    assert "tool (c1): 5" in answered.stdout
    assert "tool call c1: add(" in answered.stdout.split(" output ")[0]
