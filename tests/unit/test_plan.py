"""`plan_workflow`: which steps can run as batch, and the cost estimates behind the choice."""

from __future__ import annotations

import pytest

from fakebatch import FakeBatchServer
from trunkline.config import Settings
from trunkline.recording import recording
from trunkline.workflows import load_dataset, load_workflow
from trunkline.workflows.plan import plan_workflow
from trunkline.workflows.runner import map_inputs
from unit.batch_project import INPUT_PRICE, OUTPUT_PRICE, batch_settings, label_reply, run_once, write_project


@pytest.fixture
def folder(tmp_path):
    return write_project(tmp_path)

async def plan_of(folder, settings: Settings, store=None, limit: int | None = None, run_tools: bool = False):
    spec = load_workflow(folder)
    rows = [map_inputs(spec, row) for row in load_dataset(spec.default_data()).rows[:limit]]
    return await plan_workflow(spec, settings, rows, spec.parameters(), store=store, run_tools=run_tools)


async def test_plan_says_which_steps_can_batch(folder) -> None:
    plan = await plan_of(folder, batch_settings("http://127.0.0.1:9/v1"))
    by_step = {step.step: step for step in plan.steps}
    assert by_step["shout"].batchable is False
    assert by_step["shout"].reason == "runs a local function; it makes no model call"
    classify = by_step["classify"]
    assert classify.batchable is True
    assert classify.mode == "batch"
    assert classify.batch_wait == "24h"
    assert classify.output_tokens == 4 * 20
    assert classify.output_source == "the step's max_tokens, an upper bound"
    assert classify.input_source == "prompts rendered for each row, without loud, which earlier steps set"
    assert classify.online_cost_usd == pytest.approx(
        (classify.input_tokens * INPUT_PRICE + classify.output_tokens * OUTPUT_PRICE) / 1e6
    )
    assert classify.batch_cost_usd == pytest.approx(classify.online_cost_usd * 0.5)
    assert plan.total("best") == pytest.approx(classify.batch_cost_usd)
    assert plan.total("online") == pytest.approx(classify.online_cost_usd)


async def test_plan_names_provider_without_batch(folder) -> None:
    settings = Settings.model_validate(
        {
            "deployments": {"small": {"provider": "anthropic", "model": "claude-haiku-4-5"}},
            "routes": {"main": {"deployments": ["small"]}},
            "default_route": "main",
        }
    )
    classify = {step.step: step for step in (await plan_of(folder, settings)).steps}["classify"]
    assert classify.batchable is False
    assert "provider 'anthropic', which has no Batch API" in classify.reason
    assert classify.batch_cost_usd is None


async def test_plan_uses_recorded_calls(folder, tmp_path) -> None:
    with FakeBatchServer(respond=label_reply) as fake:
        await run_once(folder, tmp_path, fake)
    settings = batch_settings("http://127.0.0.1:9/v1")
    with recording(url=f"sqlite:///{tmp_path / 'runs.db'}") as recorder:
        plan = await plan_of(folder, settings, store=recorder.store, limit=2)
    classify = {step.step: step for step in plan.steps}["classify"]
    assert classify.output_source == "mean of 3 recorded calls of earlier runs"
    assert classify.output_tokens == 2 * 5
    assert classify.input_tokens == 2 * 12
    assert classify.input_source == "mean of 3 recorded calls of earlier runs"
    # The latency of a recorded batch call is its job's duration, not an online wait.
    assert classify.online_wait_s is None



async def test_plan_runs_tools_for_prompts(folder) -> None:
    settings = batch_settings("http://127.0.0.1:9/v1")
    plan = await plan_of(folder, settings, run_tools=True)
    by_step = {step.step: step for step in plan.steps}
    shout_note = by_step["shout"].notes[0]
    assert shout_note.startswith("ran on 3 of 4 rows to render later prompts; the first failure: RuntimeError")
    # A step after the last model step renders no prompt, so it does not run.
    assert by_step["finish"].notes == []


async def test_plan_renders_tool_values(folder) -> None:
    (folder / "rows.csv").write_text("text,gold\nhello,HELLO!\nbye,BYE!\n")
    settings = batch_settings("http://127.0.0.1:9/v1")
    without = {step.step: step for step in (await plan_of(folder, settings)).steps}["classify"]
    classify = {step.step: step for step in (await plan_of(folder, settings, run_tools=True)).steps}["classify"]
    assert classify.input_source == "prompts rendered for each row"
    assert without.input_source == "prompts rendered for each row, without loud, which earlier steps set"
    # "Label HELLO! please" (19 characters) and "Label BYE! please" (17) against
    # "Label  please" (13) twice, at four characters a token, rounded up.
    assert classify.input_tokens == 5 + 5
    assert without.input_tokens == 4 + 4
