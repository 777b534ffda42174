"""`trunkline prompts` and workflows that use registered prompts, end to end in a subprocess."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from integration.cli import run_trunkline
from integration.test_cli import WORKFLOW as CLI_WORKFLOW
from integration.test_cli import write_project

PROMPT = """
messages:
  - role: system
    content: Answer yes or no.
  - role: user
    content: "{text}"
variables:
  question: string
metadata:
  purpose: yes-no questions
"""

# The yes-no workflow with its template files replaced by a registered prompt.
WORKFLOW = CLI_WORKFLOW.replace('prompt = "prompt.jinja"', 'prompt_ref = "yesno:production"')


def project(tmp_path: Path) -> Path:
    write_project(tmp_path)
    (tmp_path / "flow" / "workflow.toml").write_text(WORKFLOW)
    (tmp_path / "prompts").mkdir()
    write_prompt(tmp_path, "Question: {{ question }}")
    return tmp_path


def write_prompt(folder: Path, text: str) -> None:
    (folder / "prompts" / "yesno.yaml").write_text(PROMPT.replace("{text}", text))


def call_prompts(folder: Path, run_id: str) -> set[tuple[str, str]]:
    with sqlite3.connect(folder / ".trunkline" / "trunkline.db") as connection:
        rows = connection.execute(
            "select prompt_name, prompt_version from calls where run_id = ?", (run_id,)
        ).fetchall()
    return set(rows)


def run_id_of(completed) -> str:  # noqa: ANN001
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout)["run_id"]


def test_runs_record_the_labelled_version(tmp_path: Path) -> None:
    folder = project(tmp_path)
    assert run_trunkline(folder, "prompts", "push", "prompts").returncode == 0
    write_prompt(folder, "Is it so? {{ question }}")
    pushed = run_trunkline(folder, "prompts", "push", "prompts", "--author", "ana")
    assert "yesno@2" in pushed.stdout
    assert run_trunkline(folder, "prompts", "label", "yesno@1", "production").returncode == 0

    first = run_id_of(run_trunkline(folder, "run", "flow", "--json"))
    assert call_prompts(folder, first) == {("yesno", "1")}

    moved = run_trunkline(folder, "prompts", "label", "yesno@2", "production", "--by", "bo")
    assert "now points at version 2 (was version 1)" in moved.stdout
    second = run_id_of(run_trunkline(folder, "run", "flow", "--json"))
    assert call_prompts(folder, second) == {("yesno", "2")}

    pinned = run_id_of(run_trunkline(folder, "run", "flow", "--json", "--prompt", "yesno@1"))
    assert call_prompts(folder, pinned) == {("yesno", "1")}

    listed = run_trunkline(folder, "calls", "--run", pinned, "--json").stdout.splitlines()
    call = json.loads(listed[0])
    assert (call["prompt_name"], call["prompt_version"]) == ("yesno", "1")
    shown = run_trunkline(folder, "show", call["call_id"])
    assert "prompt yesno@1" in shown.stdout


def test_missing_variable_names_prompt_version_and_variable(tmp_path: Path) -> None:
    folder = project(tmp_path)
    write_prompt(folder, "Question: {{ question }} in {{ language }}")
    (folder / "prompts" / "yesno.yaml").write_text(
        (folder / "prompts" / "yesno.yaml").read_text().replace("question: string", "question: string\n  language: string")
    )
    run_trunkline(folder, "prompts", "push", "prompts")
    run_trunkline(folder, "prompts", "label", "yesno@1", "production")
    completed = run_trunkline(folder, "run", "flow", "--json")
    assert completed.returncode == 2
    assert "prompt yesno@1 needs variable 'language'" in completed.stderr
    assert "Traceback" not in completed.stderr


def test_missing_label_stops_before_the_run(tmp_path: Path) -> None:
    folder = project(tmp_path)
    run_trunkline(folder, "prompts", "push", "prompts")
    completed = run_trunkline(folder, "run", "flow", "--json")
    assert completed.returncode == 2
    assert "has no label 'production'" in completed.stderr
    assert "trunkline prompts label yesno@VERSION production" in completed.stderr


def test_list_show_diff_and_pull(tmp_path: Path) -> None:
    folder = project(tmp_path)
    run_trunkline(folder, "prompts", "push", "prompts")
    write_prompt(folder, "Is it so? {{ question }}")
    run_trunkline(folder, "prompts", "push", "prompts")
    run_trunkline(folder, "prompts", "label", "yesno@2", "staging", "--by", "ana")

    listed = json.loads(run_trunkline(folder, "prompts", "list", "--json").stdout)
    assert [(item["name"], item["latest_version"], item["labels"]) for item in listed] == [
        ("yesno", 2, {"staging": 2})
    ]
    described = json.loads(run_trunkline(folder, "prompts", "show", "yesno:staging", "--json", "--history").stdout)
    assert described["version"] == 2
    assert [move["moved_by"] for move in described["label_moves"]] == ["ana"]
    assert [item["version"] for item in described["versions"]] == [1, 2]

    diff = run_trunkline(folder, "prompts", "diff", "yesno@1", "yesno:staging")
    assert diff.returncode == 1
    assert "-  content: 'Question: {{ question }}'" in diff.stdout
    assert "+  content: Is it so? {{ question }}" in diff.stdout
    same = run_trunkline(folder, "prompts", "diff", "yesno@2", "yesno:staging")
    assert same.returncode == 0
    assert "have the same content" in same.stdout

    pulled = run_trunkline(folder, "prompts", "pull", "out", "--label", "staging")
    assert pulled.returncode == 0
    assert "Is it so?" in (folder / "out" / "yesno.yaml").read_text()
    unchanged = run_trunkline(folder, "prompts", "push", "out")
    assert "0 new versions, 1 unchanged" in unchanged.stdout

    missing = run_trunkline(folder, "prompts", "show", "yesno@7")
    assert missing.returncode == 2
    assert "has no version 7" in missing.stderr
