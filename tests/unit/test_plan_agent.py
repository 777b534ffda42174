"""`plan_workflow` on agent steps: typical figures from recorded rows or an assumption, and the worst case."""

from __future__ import annotations

import json
from statistics import median

import pytest

from trunkline.errors import WorkflowError
from trunkline.providers.fake import FakeReply, ScriptedModel
from trunkline.recording import recording
from trunkline.routing import Router
from trunkline.store.agent_rows import agent_row_usage
from trunkline.store.runs import all_rows
from trunkline.tools import load_tool
from trunkline.types.calls import ModelRequest
from trunkline.workflows import BatchRunner, load_dataset, load_workflow
from trunkline.workflows.plan import plan_workflow
from trunkline.workflows.runner import map_inputs
from unit.helpers import fake_settings
from unit.test_agent_step import TOOLS, WORKFLOW, capital_agent

# fake_settings prices every model at 1 USD per million input tokens and 2 per million output tokens.
INPUT_PRICE, OUTPUT_PRICE = 1.0, 2.0
REPLY_CAP = 50


@pytest.fixture
def folder(tmp_path):
    folder = tmp_path / "capitals"
    folder.mkdir()
    workflow = WORKFLOW.replace("max_steps = 3", f"max_steps = 3\nmax_tokens = {REPLY_CAP}")
    (folder / "workflow.toml").write_text(workflow)
    (folder / "tools.py").write_text(TOOLS)
    (folder / "prompt.jinja").write_text("Name the capital of {{ country }}")
    (folder / "rows.csv").write_text("country,gold\nFrance,Paris\nNorway,Oslo\nAtlantis,Poseidonia\n")
    return folder


async def plan_of(folder, store=None):
    spec = load_workflow(folder)
    rows = [map_inputs(spec, row) for row in load_dataset(spec.default_data()).rows]
    plan = await plan_workflow(spec, fake_settings("d0"), rows, spec.parameters(), store=store)
    return {step.step: step for step in plan.steps}["answer"], plan


async def run_recorded(folder, tmp_path, script) -> tuple[str, str]:
    """Run the workflow in `folder` once on a scripted model; return the store's URL and the run id."""
    spec = load_workflow(folder)
    router = Router(fake_settings("d0"), providers={"d0": ScriptedModel(default=script)})
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    with recording(url=url) as recorder:
        runner = BatchRunner(spec, router=router, store=recorder.store, writer=recorder.writer, params={})
        summary = await runner.run(load_dataset(spec.default_data()))
    return url, summary.run_id


def tool_tokens(folder) -> int:
    definition = load_tool("tools:capital_of", folder).definition
    characters = len(definition.name) + len(definition.description) + len(json.dumps(definition.parameters))
    return characters // 4


def usd(input_tokens: float, output_tokens: float) -> float:
    return (input_tokens * INPUT_PRICE + output_tokens * OUTPUT_PRICE) / 1e6


async def test_agent_plan_not_batchable(folder) -> None:
    answer, plan = await plan_of(folder)

    assert answer.kind == "agent"
    assert answer.batchable is False
    assert answer.reason == (
        "an agent needs each reply before its next call, so its calls cannot wait for a batch job"
    )
    assert answer.batch_cost_usd is None
    assert answer.batch_wait is None
    assert plan.total("best") == pytest.approx(answer.online_cost_usd)


async def test_agent_worst_case_by_hand(folder) -> None:
    answer, _ = await plan_of(folder)
    tools = tool_tokens(folder)
    # "Name the capital of France" and "... Norway" are 26 characters, "... Atlantis" 28:
    # 7 tokens each at four characters a token, rounded up.
    prompt = 7
    # Three calls, each with the prompt and the tools; the second adds one reply at its cap, the third two.
    row_input = 3 * (prompt + tools) + (0 + 1 + 2) * REPLY_CAP
    row_output = 3 * REPLY_CAP
    estimate = answer.agent

    assert tools > 10
    assert estimate.tool_tokens == tools
    assert estimate.reply_tokens == REPLY_CAP
    assert estimate.worst_row.model_calls == 3
    assert estimate.worst_row.input_tokens == row_input
    assert estimate.worst_row.output_tokens == row_output
    assert estimate.worst_row.cost_usd == pytest.approx(usd(row_input, row_output))
    assert estimate.worst_run.model_calls == 9
    assert estimate.worst_run.input_tokens == 3 * row_input
    assert estimate.worst_run.output_tokens == 3 * row_output
    assert estimate.worst_run.cost_usd == pytest.approx(3 * usd(row_input, row_output))


async def test_output_schema_adds_worst_case_call(folder) -> None:
    toml = folder / "workflow.toml"
    toml.write_text(toml.read_text().replace("max_steps = 3", 'max_steps = 3\noutput_schema = "schema.json"'))
    (folder / "schema.json").write_text('{"type": "object", "properties": {"city": {"type": "string"}}}')
    answer, _ = await plan_of(folder)

    assert answer.agent.worst_row.model_calls == 4


async def test_agent_typical_without_history(folder) -> None:
    answer, _ = await plan_of(folder)
    tools = tool_tokens(folder)
    row_input = 2 * (7 + tools) + REPLY_CAP
    row_output = 2 * REPLY_CAP
    estimate = answer.agent

    assert estimate.recorded_rows == 0
    assert estimate.typical_source == (
        "an assumption, without recorded rows of earlier runs: 2 model calls per row "
        f"(a tool round and an answer), each reply up to {REPLY_CAP} tokens"
    )
    assert estimate.typical_row.model_calls == 2
    assert estimate.typical_row.input_tokens == row_input
    assert estimate.typical_run.output_tokens == 3 * row_output
    assert answer.input_tokens == 3 * row_input
    assert answer.output_tokens == 3 * row_output
    assert answer.input_source == estimate.typical_source
    assert answer.online_cost_usd == pytest.approx(3 * usd(row_input, row_output))


async def test_agent_typical_from_recorded_run(folder, tmp_path) -> None:
    url, run_id = await run_recorded(folder, tmp_path, capital_agent)
    with recording(url=url) as recorder:
        rows = all_rows(recorder.store, run_id)
        answer, _ = await plan_of(folder, store=recorder.store)
    # The agent step is the workflow's only model step, so each row's totals are its agent's calls.
    calls = median(row["details"]["answer"]["steps"] for row in rows)
    input_tokens = median(row["input_tokens"] for row in rows)
    output_tokens = median(row["output_tokens"] for row in rows)
    cost = median(row["cost_usd"] for row in rows)
    estimate = answer.agent

    # Atlantis loops to max_steps, so its row differs from the other two.
    assert [row["details"]["answer"]["steps"] for row in rows] == [2, 2, 3]
    assert estimate.recorded_rows == 3
    assert estimate.typical_source == "medians of 3 recorded rows of earlier runs"
    assert estimate.typical_row.model_calls == calls
    assert estimate.typical_row.input_tokens == input_tokens
    assert estimate.typical_row.output_tokens == output_tokens
    assert estimate.typical_row.cost_usd == pytest.approx(cost)
    assert estimate.typical_run.cost_usd == pytest.approx(3 * cost)
    assert answer.output_tokens == 3 * output_tokens
    # The worst case does not depend on history.
    assert estimate.worst_row.model_calls == 3


def agent_then_check(request: ModelRequest) -> FakeReply:
    """Play the capital agent on calls with tools, and reply briefly to the later model step's call."""
    if not request.tools:
        return FakeReply("yes", input_tokens=3, output_tokens=1)
    return capital_agent(request)


async def test_agent_rows_skip_other_steps(folder, tmp_path) -> None:
    workflow = WORKFLOW.replace('output = "answer"', 'output = "checked"') + (
        '\n[[steps]]\nname = "check"\nkind = "model"\nprompt = "check.jinja"\noutput = "checked"\n'
    )
    (folder / "workflow.toml").write_text(workflow)
    (folder / "check.jinja").write_text("Is {{ answer }} right?")
    url, run_id = await run_recorded(folder, tmp_path, agent_then_check)
    with recording(url=url) as recorder:
        usage = agent_row_usage(recorder.store, "capitals", "answer")
        rows = all_rows(recorder.store, run_id)
    by_row = {found.row_index: found for found in usage}

    assert sorted(by_row) == [0, 1, 2]
    # The check step's call adds to the answered rows' totals, but not to the agent's figures.
    assert rows[0]["input_tokens"] > by_row[0].input_tokens
    assert by_row[0].model_calls == 2
    assert by_row[0].input_tokens == 30
    assert by_row[0].output_tokens == 7
    assert by_row[2].model_calls == 3
    assert by_row[2].steps == 3


async def test_agent_plan_runs_earlier_tools(folder) -> None:
    workflow = WORKFLOW.replace(
        "[[steps]]", '[[steps]]\nname = "hint"\nkind = "tool"\nfunction = "tools:hint"\n\n[[steps]]', 1
    )
    (folder / "workflow.toml").write_text(workflow)
    (folder / "tools.py").write_text(TOOLS + '\n\ndef hint(country):\n    return {"hint": "x" * 40}\n')
    (folder / "prompt.jinja").write_text("Name the capital of {{ country }}{{ hint }}")
    spec = load_workflow(folder)
    rows = [map_inputs(spec, row) for row in load_dataset(spec.default_data()).rows]
    settings = fake_settings("d0")
    without = await plan_workflow(spec, settings, rows, spec.parameters())
    with_tools = await plan_workflow(spec, settings, rows, spec.parameters(), run_tools=True)
    before = {step.step: step for step in without.steps}["answer"]
    after = {step.step: step for step in with_tools.steps}["answer"]

    assert before.notes == [
        "its prompts render without hint, which earlier steps set, so the estimates leave out their tokens"
    ]
    assert after.notes == []
    # Forty more characters, ten more tokens, sent with each of the three calls.
    assert after.agent.worst_row.input_tokens == before.agent.worst_row.input_tokens + 3 * 10


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (("max_steps = 3", 'max_steps = 3\ntool_choice = "capital_off"'), "tool_choice 'capital_off' is not auto"),
        (("max_steps = 3", 'max_steps = 3\noutput_schema = "tools:Missing"'), "step 'answer', output_schema: tools has no attribute 'Missing'"),
        (('tools = ["tools:capital_of"]', 'tools = ["tools:capital_of", "tools:capital_of"]'), "more than once"),
    ],
)
async def test_plan_rejects_what_run_rejects(folder, change, fragment) -> None:  # noqa: ANN001
    toml = folder / "workflow.toml"
    toml.write_text(toml.read_text().replace(*change))

    with pytest.raises(WorkflowError, match=fragment):
        await plan_of(folder)
