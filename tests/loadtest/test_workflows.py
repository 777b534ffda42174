"""Workflow tasks in a load test, and the structured output the simulated providers return."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel, Field

from trunkline.config import Settings, builtin_defaults
from trunkline.errors import ConfigError
from trunkline.loadtest.engine import LoadTestOptions, run_loadtest
from trunkline.loadtest.instances import minimal_instance
from trunkline.loadtest.profile import Profile, load_profile_file
from trunkline.loadtest.report import build_report

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "intent-triage"

WORKFLOW = """
name = "tagger"
data = "rows.csv"
output = "tag"
route = "tagging"

[inputs]
text = "text"

[[steps]]
name = "check"
kind = "tool"
function = "tools:check"

[[steps]]
name = "tag"
kind = "model"
prompt = "prompt.jinja"
output_schema = "schema.json"
output = "answer"
max_tokens = 12

[[steps]]
name = "pick"
kind = "post"
function = "tools:pick"
"""

TOOLS = '''
def check(text: str) -> dict:
    if text.startswith("bad"):
        raise ValueError("a row the tool cannot handle")
    return {"checked": text}


def pick(answer: dict) -> dict:
    return {"tag": answer["tag"]}
'''

SCHEMA = '{"type": "object", "properties": {"tag": {"enum": ["red", "blue"]}}, "required": ["tag"]}'


class Inner(BaseModel):
    count: int = Field(ge=3)
    note: str | None = None


class Outer(BaseModel):
    items: list[Inner] = Field(min_length=2)
    name: str = Field(min_length=4)
    score: float = Field(gt=0.5, le=1.0)
    flag: bool


def test_minimal_instance_is_valid() -> None:
    value = minimal_instance(Outer.model_json_schema())

    parsed = Outer.model_validate(value)

    assert len(parsed.items) == 2
    assert parsed.items[0].count == 3
    assert parsed.name == "xxxx"
    assert parsed.score > 0.5
    assert minimal_instance({"enum": ["a", "b"]}) == "a"
    assert minimal_instance({"anyOf": [{"type": "null"}, {"type": "integer"}]}) == 0
    assert minimal_instance({"type": ["null", "string"]}) == ""


@pytest.fixture
def tagger(tmp_path: Path) -> Path:
    folder = tmp_path / "tagger"
    folder.mkdir()
    (folder / "workflow.toml").write_text(WORKFLOW)
    (folder / "tools.py").write_text(TOOLS)
    (folder / "schema.json").write_text(SCHEMA)
    (folder / "prompt.jinja").write_text("Tag this: {{ checked }}")
    (folder / "rows.csv").write_text("text\nfine one\nbad one\nfine two\nfine three\n")
    return folder


def tagging_settings() -> Settings:
    return Settings.model_validate(
        {
            "deployments": {"tagger": {"provider": "openai", "model": "tag-model"}},
            "routes": {"tagging": {"deployments": ["tagger"]}, "chat": {"deployments": ["tagger"]}},
            "prices": {"tag-model": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}},
        }
    )


async def test_workflow_rows_run_every_step(tagger: Path, tmp_path: Path) -> None:
    path = tmp_path / "profile.toml"
    path.write_text(
        'rate_rps = 40\nseed = 6\n[default_upstream]\nlatency_ms = 2\n'
        '[[tasks]]\nworkflow = "tagger"\nshare = 1\n'
        '[[tasks]]\nroute = "chat"\nshare = 1\n'
        'input_tokens = { median = 30 }\noutput_tokens = { median = 5 }\n'
    )
    profile = load_profile_file(path)

    result = await run_loadtest(tagging_settings(), profile, LoadTestOptions(duration_s=1.0, drain_s=10.0))
    figures = build_report(result).public()

    rows = figures["by_route"]["workflow:tagger"]
    chat = figures["by_route"]["chat"]
    assert rows["calls"] + chat["calls"] == figures["requests"]["finished"]
    assert chat["errors"] == 0
    assert rows["errors"] == figures["errors_by_kind"]["step_failed"]
    assert rows["errors"] > 0
    # A row that failed in its tool step made no model call.
    assert figures["upstreams"]["tagger"]["requests"] == rows["ok"] + chat["calls"]
    assert figures["upstreams"]["tagger"]["ok"] == rows["ok"] + chat["calls"]


async def test_example_workflow_replays(tmp_path: Path) -> None:
    profile = Profile.model_validate(
        {
            "rate_rps": 10,
            "tasks": [{"workflow": str(EXAMPLE)}],
            "default_upstream": {"latency_ms": 5.0},
        }
    )
    settings = Settings.model_validate(builtin_defaults())

    result = await run_loadtest(settings, profile, LoadTestOptions(duration_s=1.0, drain_s=20.0))
    figures = build_report(result).public()

    assert figures["requests"]["errors"] == 0
    assert figures["upstreams"]["local"]["requests"] == figures["requests"]["finished"]
    assert figures["cost"]["output_tokens"] == 48 * figures["requests"]["finished"]


async def test_workflow_tasks_need_simulation(tagger: Path) -> None:
    profile = Profile.model_validate({"rate_rps": 1, "tasks": [{"workflow": str(tagger)}]})
    options = LoadTestOptions(duration_s=1.0, target="http://127.0.0.1:9", api_key="tk")

    with pytest.raises(ConfigError, match="--target sends route tasks only"):
        await run_loadtest(tagging_settings(), profile, options)


@pytest.mark.parametrize(
    ("task", "expected"),
    [
        ({"route": "a", "workflow": "w"}, "give either route or workflow"),
        ({"share": 1}, "give either route or workflow"),
        ({"route": "a"}, "route task 'a' needs input_tokens and output_tokens"),
        ({"workflow": "w", "input_tokens": {"median": 1}}, "workflow task 'w' takes no input_tokens"),
        (
            {"route": "a", "params": {"k": "v"}, "input_tokens": {"median": 1}, "output_tokens": {"median": 1}},
            "route task 'a' takes no data or params",
        ),
    ],
)
def test_task_kind_is_checked(task: dict, expected: str) -> None:
    with pytest.raises(ValueError, match=expected):
        Profile.model_validate({"rate_rps": 1, "tasks": [task]})
