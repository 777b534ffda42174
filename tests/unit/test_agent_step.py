"""Agent steps in workflow files: tools by import path, answers per row, bounds as row errors."""

from __future__ import annotations

import json

import pytest

from trunkline.errors import WorkflowError
from trunkline.providers.fake import FakeReply, ScriptedModel
from trunkline.recording import recording
from trunkline.routing import Router
from trunkline.store.queries import list_calls
from trunkline.store.runs import all_rows
from trunkline.types.calls import ModelRequest
from trunkline.types.messages import ToolCall
from trunkline.workflows import BatchRunner, load_dataset, load_workflow
from trunkline.workflows.steps import build_steps
from unit.helpers import fake_settings

WORKFLOW = """
name = "capitals"
data = "rows.csv"
output = "answer"
expected = "gold"
route = "main"

[inputs]
country = "country"

[[steps]]
name = "answer"
kind = "agent"
prompt = "prompt.jinja"
tools = ["tools:capital_of"]
max_steps = 3
"""

TOOLS = '''
def capital_of(country: str) -> str:
    """Return the capital city of a country.

    Args:
        country: the country's English name.
    """
    return {"France": "Paris", "Norway": "Oslo"}[country]
'''


def capital_agent(request: ModelRequest) -> FakeReply:
    """Look the capital up once, then answer with the tool's result; loop forever on Atlantis."""
    last = request.messages[-1]
    country = request.messages[0].content.split()[-1]
    if last.role == "tool" and country != "Atlantis":
        return FakeReply(last.content, input_tokens=20, output_tokens=2)
    arguments = json.dumps({"country": country})
    call = ToolCall(id=f"call_{len(request.messages)}", name="capital_of", arguments=arguments)
    return FakeReply("", tool_calls=(call,), input_tokens=10, output_tokens=5)


@pytest.fixture
def workflow_folder(tmp_path):
    folder = tmp_path / "capitals"
    folder.mkdir()
    (folder / "workflow.toml").write_text(WORKFLOW)
    (folder / "tools.py").write_text(TOOLS)
    (folder / "prompt.jinja").write_text("Name the capital of {{ country }}")
    (folder / "rows.csv").write_text("country,gold\nFrance,Paris\nNorway,Oslo\nAtlantis,Poseidonia\n")
    return folder


async def test_agent_step_answers_rows(workflow_folder, tmp_path) -> None:
    spec = load_workflow(workflow_folder)
    router = Router(fake_settings("d0"), providers={"d0": ScriptedModel(default=capital_agent)})
    with recording(url=f"sqlite:///{tmp_path / 'r.db'}") as recorder:
        runner = BatchRunner(
            spec, router=router, store=recorder.store, writer=recorder.writer, params={}, concurrency=2
        )
        summary = await runner.run(load_dataset(spec.default_data()))
        rows = all_rows(recorder.store, summary.run_id)
        calls = list_calls(recorder.store, run_id=summary.run_id)

    assert summary.ok == 2
    assert summary.errors == 1
    assert summary.accuracy == pytest.approx(2 / 3)
    france, norway, atlantis = rows
    assert france["output"] == "Paris"
    assert france["details"]["answer"]["stop_reason"] == "answered"
    assert france["details"]["answer"]["by_tool"] == {"capital_of": {"ok": 1}}
    assert norway["output"] == "Oslo"
    assert atlantis["status"] == "error"
    assert "stopped by max_steps" in atlantis["error"]
    assert atlantis["details"]["answer"]["steps"] == 3
    # Two model calls for each answered row, and the stopped row's three are kept too.
    assert len(calls) == 7


def test_agent_step_tools_loaded_up_front(workflow_folder) -> None:
    [step] = build_steps(load_workflow(workflow_folder))

    assert [tool.name for tool in step.tools] == ["capital_of"]
    assert step.tools[0].definition.parameters["required"] == ["country"]


def test_missing_tool_fails_build(workflow_folder) -> None:
    (workflow_folder / "workflow.toml").write_text(WORKFLOW.replace("tools:capital_of", "tools:population_of"))

    with pytest.raises(WorkflowError, match="agent step 'answer', tool 'tools:population_of': .*has no attribute"):
        build_steps(load_workflow(workflow_folder))


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (('kind = "agent"', 'kind = "model"'), "model step 'answer' lists tools"),
        (('prompt = "prompt.jinja"\n', ""), "agent step 'answer' needs prompt"),
    ],
)
def test_invalid_agent_steps_rejected(workflow_folder, change, fragment) -> None:  # noqa: ANN001
    (workflow_folder / "workflow.toml").write_text(WORKFLOW.replace(*change))

    with pytest.raises(WorkflowError, match=fragment):
        load_workflow(workflow_folder)


async def test_agent_step_output_schema_gives_json(workflow_folder, tmp_path) -> None:
    (workflow_folder / "workflow.toml").write_text(
        WORKFLOW.replace("max_steps = 3", 'max_steps = 3\noutput_schema = "schema.json"')
    )
    schema = {"type": "object", "properties": {"capital": {"type": "string"}}, "required": ["capital"]}
    (workflow_folder / "schema.json").write_text(json.dumps(schema))
    (workflow_folder / "rows.csv").write_text("country,gold\nFrance,Paris\n")

    def structured(request: ModelRequest) -> FakeReply:
        if request.output_schema is not None:
            return FakeReply(json.dumps({"capital": request.messages[-3].content.split()[-1]}))
        return capital_agent(request)

    spec = load_workflow(workflow_folder)
    router = Router(fake_settings("d0"), providers={"d0": ScriptedModel(default=structured)})
    with recording(url=f"sqlite:///{tmp_path / 'r.db'}") as recorder:
        runner = BatchRunner(spec, router=router, store=recorder.store, writer=recorder.writer, params={})
        summary = await runner.run(load_dataset(spec.default_data()))
        [row] = all_rows(recorder.store, summary.run_id)

    assert summary.ok == 1
    assert row["output"] == {"capital": "Paris"}


def test_tool_module_in_workflow_hash(workflow_folder) -> None:
    before = load_workflow(workflow_folder).content_hash()
    (workflow_folder / "tools.py").write_text(TOOLS.replace('"Paris"', '"Lyon"'))

    assert load_workflow(workflow_folder).content_hash() != before
