"""A workflow run on one row as a tool: its schema, its calls through the agent's router, its spans."""

from __future__ import annotations

import json
import sys

import pytest

from trunkline.agents import Agent
from trunkline.errors import ConfigError, WorkflowError
from trunkline.providers.fake import FakeReply, ScriptedModel
from trunkline.types.calls import ModelRequest
from trunkline.types.messages import ToolCall
from trunkline.recording import recording
from trunkline.workflows import BatchRunner, load_workflow, workflow_function, workflow_tool
from unit.helpers import router_with

WORKFLOW = """
name = "shout-back"
description = "Repeat a message in capitals, with a model's comment."
output = "comment"

[inputs]
message = "text"

[params]
suffix = { default = "!", description = "Appended to the capitals." }

[[steps]]
name = "capitals"
kind = "tool"
function = "steps:capitals"

[[steps]]
name = "comment"
kind = "model"
prompt = "prompt.jinja"
"""

STEPS = '''
def capitals(message: str, suffix: str) -> dict:
    return {"loud": message.upper() + suffix}
'''


@pytest.fixture
def folder(tmp_path):
    folder = tmp_path / "shout-back"
    folder.mkdir()
    (folder / "workflow.toml").write_text(WORKFLOW)
    (folder / "steps.py").write_text(STEPS)
    (folder / "prompt.jinja").write_text("Comment on: {{ loud }}")
    return folder


def commenter(request: ModelRequest) -> FakeReply:
    """Play the agent and the workflow's model step on one scripted deployment."""
    if request.tools:
        if request.messages[-1].role == "tool":
            return FakeReply(f"The tool said {request.messages[-1].content}")
        return FakeReply("", tool_calls=(ToolCall(id="c1", name="shout_back", arguments='{"message": "hi"}'),))
    return FakeReply(f"so loud: {request.messages[-1].content}")


def test_schema_has_workflow_inputs(folder) -> None:
    tool = workflow_tool(folder)

    assert tool.name == "shout_back"
    assert tool.description == "Repeat a message in capitals, with a model's comment."
    parameters = tool.definition.parameters
    assert parameters["required"] == ["message"]
    assert parameters["properties"]["message"]["type"] == "string"
    assert "'text' value" in parameters["properties"]["message"]["description"]


async def test_agent_runs_workflow_tool(folder, exported) -> None:
    model = ScriptedModel(default=commenter)
    tool = workflow_tool(folder, descriptions={"message": "what to repeat"})
    result = await Agent(router_with(model), [tool]).run("Shout hi")

    assert result.answered
    assert result.output == "The tool said so loud: Comment on: HI!"
    assert tool.definition.parameters["properties"]["message"]["description"] == "what to repeat"
    # The workflow's model call went through the agent's router.
    assert len(model.requests) == 3
    tool_span = next(span for span in exported.spans if span.kind == "tool")
    inner = [span for span in exported.spans if span.name.startswith("shout-back ")]
    assert [span.name for span in inner] == ["shout-back capitals", "shout-back comment"]
    assert {span.parent_span_id for span in inner} == {tool_span.span_id}


async def test_outputs_and_params(folder) -> None:
    run = workflow_function(
        folder, params={"suffix": "?"}, outputs=["loud", "comment"], router=router_with(ScriptedModel(default=commenter))
    )

    assert await run(message="ok") == {"loud": "OK?", "comment": "so loud: Comment on: OK?"}


async def test_missing_output_named(folder) -> None:
    run = workflow_function(folder, outputs=["quiet"], router=router_with(ScriptedModel(default=commenter)))

    with pytest.raises(WorkflowError, match="produced no value named 'quiet'; its values are: comment, loud"):
        await run(message="ok")


async def test_no_router_outside_agent(folder) -> None:
    run = workflow_function(folder)

    with pytest.raises(ConfigError, match="needs a router"):
        await run(message="ok")


def test_missing_workflow_rejected(tmp_path) -> None:
    with pytest.raises(WorkflowError):
        workflow_tool(tmp_path / "nowhere")


async def test_tool_returns_outputs_as_json(folder) -> None:
    tool = workflow_tool(folder, outputs=["loud"], router=router_with(ScriptedModel(default=commenter)))
    value = await tool.call(tool.parse_arguments('{"message": "a"}'))

    assert json.loads(tool.serialise(value)) == {"loud": "A!"}


def test_resume_notices_tool_workflow_change(folder, tmp_path) -> None:
    agent_folder = tmp_path / "asker"
    agent_folder.mkdir()
    (agent_folder / "tools.py").write_text(
        "from trunkline.workflows import workflow_tool\n"
        f"shout = workflow_tool({str(folder)!r})\n"
    )
    (agent_folder / "prompt.jinja").write_text("{{ text }}")
    (agent_folder / "workflow.toml").write_text(
        'name = "asker"\noutput = "answer"\n[inputs]\ntext = "text"\n'
        '[[steps]]\nname = "answer"\nkind = "agent"\nprompt = "prompt.jinja"\ntools = ["tools:shout"]\n'
    )

    def workflow_hash() -> str:
        with recording(url=f"sqlite:///{tmp_path / 'r.db'}") as recorder:
            runner = BatchRunner(
                load_workflow(agent_folder),
                router=router_with(ScriptedModel([])),
                store=recorder.store,
                writer=recorder.writer,
                params={},
            )
            return runner.workflow_hash

    before = workflow_hash()
    (folder / "prompt.jinja").write_text("Say something about: {{ loud }}")
    # The tool module is loaded again, as a resumed run in a new process loads it.
    for name, module in list(sys.modules.items()):
        if str(getattr(module, "__file__", "")).startswith(str(agent_folder)):
            del sys.modules[name]
    after = workflow_hash()

    assert before != after


@pytest.mark.parametrize(
    ("change", "options", "fragment"),
    [
        (('message = "text"', 'class = "text"'), {}, "inputs that cannot be parameter names: 'class'"),
        (('message = "text"', '"customer-message" = "text"'), {}, "'customer-message'; rename them"),
        (None, {"outputs": []}, "outputs is empty"),
        (None, {"descriptions": {"mesage": "typo"}}, "descriptions names 'mesage', not inputs"),
    ],
)
def test_unusable_options_rejected(folder, change, options, fragment) -> None:  # noqa: ANN001
    if change is not None:
        toml = folder / "workflow.toml"
        toml.write_text(toml.read_text().replace(*change))

    with pytest.raises(ConfigError, match=fragment):
        workflow_tool(folder, **options)


async def test_tool_steps_need_no_router(folder) -> None:
    toml = folder / "workflow.toml"
    toml.write_text(toml.read_text().split("[[steps]]\nname = \"comment\"")[0].replace('output = "comment"', 'output = "loud"'))
    tool = workflow_tool(folder, max_uses=2)

    assert tool.max_uses == 2
    assert await workflow_function(folder)(message="hey") == "HEY!"
