"""`trunkline trace`: the span tree of a run or a call, read back from the store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from integration.cli import run_trunkline
from integration.test_cli import write_project


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
    [root] = json.loads(completed.stdout)
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
