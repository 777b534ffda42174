"""Cascade steps: a confident tool stage settles the row, and a model stage takes the rest."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from trunkline.cli.render import summary_table
from trunkline.cli.run import parse_params, parse_prompt_overrides
from trunkline.config import Settings
from trunkline.errors import WorkflowError
from trunkline.evals.experiments import with_route
from trunkline.prompts import PromptContent, PromptRegistry
from trunkline.providers.fake import FakeFailure, FakeReply, ScriptedModel
from trunkline.recording import recording
from trunkline.routing import Router
from trunkline.store.queries import list_calls
from trunkline.store.runs import all_rows, get_run
from trunkline.types.calls import ModelRequest
from trunkline.workflows import BatchRunner, load_dataset, load_workflow
from trunkline.workflows.steps import build_steps, model_steps
from trunkline.workflows.summary import RunSummary
from unit.helpers import fake_settings

WORKFLOW = """
name = "triage"
data = "rows.csv"
output = "label"
expected = "gold"
route = "main"

[inputs]
message = "text"

[params]
cut = { default = 0.5, type = "float" }

[[steps]]
name = "answer"
kind = "cascade"
threshold = "cut"

  [[steps.stages]]
  name = "guess"
  kind = "tool"
  function = "tools:guess"

  [[steps.stages]]
  name = "ask"
  kind = "model"
  prompt = "prompt.jinja"
  output_schema = "schema.json"
  output = "reply"

[[steps]]
name = "finish"
kind = "post"
function = "tools:finish"
"""

# The guess stage's confidence per message. The message "explode" makes it
# raise, and "silent" makes it return no confidence.
TOOLS = '''
CONFIDENCE = {"sure": 1.0, "fair": 0.6, "weak": 0.4, "blank": None, "big": 1.5, "word": "high"}


def guess(message):
    if message == "explode":
        raise RuntimeError("guess cannot read this row")
    reply = {"label": "guess-" + message}
    if message == "silent":
        return {"reply": reply}
    return {"reply": reply, "confidence": CONFIDENCE[message]}


def finish(reply):
    return {"label": reply["label"]}
'''

SCHEMA = '{"type": "object", "properties": {"label": {"type": "string"}}, "required": ["label"]}'

# Every model reply costs 10 input and 4 output tokens. At the prices of
# fake_settings, 1 and 2 USD per million tokens, a call costs 18e-6 USD.
CALL_TOKENS = 14
CALL_COST = (10 * 1.0 + 4 * 2.0) / 1e6


def write_workflow(
    folder: Path,
    text: str = WORKFLOW,
    rows: tuple[str, ...] = ("sure", "fair", "weak", "blank"),
) -> Path:
    folder.mkdir(exist_ok=True)
    (folder / "workflow.toml").write_text(text)
    (folder / "tools.py").write_text(TOOLS)
    (folder / "prompt.jinja").write_text("Label {{ message }}")
    (folder / "schema.json").write_text(SCHEMA)
    lines = ["text,gold"] + [f"{row},model-{row}" for row in rows]
    (folder / "rows.csv").write_text("\n".join(lines) + "\n")
    return folder


def prompts(model: ScriptedModel) -> list[str]:
    """Return the last message of every request the fake model received."""
    return [request.messages[-1].content for request in model.requests]


def model_labeller(request: ModelRequest) -> FakeReply:
    message = request.messages[-1].content.split()[-1]
    return FakeReply(json.dumps({"label": "model-" + message}), input_tokens=10, output_tokens=4)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return write_workflow(tmp_path / "triage")


async def run_workflow(
    folder: Path,
    database: Path,
    model: ScriptedModel,
    *,
    overrides: dict[str, str] | None = None,
    settings: Settings | None = None,
    prompt_overrides: dict[str, str] | None = None,
) -> tuple[RunSummary, list[dict[str, Any]], list[dict[str, Any]]]:
    """Run the workflow on one fake deployment; return the summary, stored rows and calls."""
    spec = load_workflow(folder)
    params = spec.parameters(overrides)
    router = Router(settings or fake_settings("d0"), providers={"d0": model})
    with recording(url=f"sqlite:///{database}") as recorder:
        runner = BatchRunner(
            spec,
            router=router,
            store=recorder.store,
            writer=recorder.writer,
            params=params,
            concurrency=1,
            prompt_overrides=prompt_overrides,
        )
        summary = await runner.run(load_dataset(spec.default_data()))
        rows = all_rows(recorder.store, summary.run_id)
        calls = list_calls(recorder.store, run_id=summary.run_id)
    return summary, rows, calls


# Confident and unsure stages


async def test_confident_stage_skips_model(tmp_path) -> None:
    folder = write_workflow(tmp_path / "triage", rows=("sure",))
    model = ScriptedModel(default=model_labeller)
    summary, rows, calls = await run_workflow(folder, tmp_path / "r.db", model)
    details = rows[0]["details"]["answer"]
    assert model.requests == []
    assert calls == []
    assert rows[0]["status"] == "ok"
    assert rows[0]["output"] == "guess-sure"
    assert details["kind"] == "cascade"
    assert details["answered_by"] == "guess"
    assert details["reason"] == "confidence 1.000 >= threshold 0.5"
    assert details["threshold"] == 0.5
    assert details["last_stage"] == "ask"
    assert details["stages"] == [
        {
            "stage": "guess",
            "calls": 0,
            "tokens": 0,
            "cost_usd": 0.0,
            "confidence": 1.0,
            "outcome": "answered",
            "reason": "confidence 1.000 >= threshold 0.5",
        }
    ]
    assert summary.input_tokens == 0


async def test_unsure_stage_escalates_to_model(tmp_path) -> None:
    folder = write_workflow(tmp_path / "triage", rows=("weak", "blank"))
    model = ScriptedModel(default=model_labeller)
    summary, rows, calls = await run_workflow(folder, tmp_path / "r.db", model)
    weak, blank = (row["details"]["answer"] for row in rows)
    assert prompts(model) == ["Label weak", "Label blank"]
    assert len(calls) == 2
    assert [row["output"] for row in rows] == ["model-weak", "model-blank"]
    assert summary.accuracy == 1.0
    assert weak["answered_by"] == "ask"
    assert weak["reason"] == "last stage"
    assert weak["stages"][0]["outcome"] == "escalated"
    assert weak["stages"][0]["confidence"] == 0.4
    assert weak["stages"][0]["reason"] == "confidence 0.400 < threshold 0.5"
    assert blank["stages"][0]["confidence"] is None
    assert blank["stages"][0]["reason"] == "the stage could not tell"
    assert blank["stages"][1]["outcome"] == "answered"
    assert blank["stages"][1]["calls"] == 1
    assert blank["stages"][1]["tokens"] == CALL_TOKENS
    assert blank["stages"][1]["cost_usd"] == pytest.approx(CALL_COST)


async def test_confidence_equal_to_threshold_answers(tmp_path) -> None:
    folder = write_workflow(tmp_path / "triage", rows=("fair",))
    model = ScriptedModel(default=model_labeller)
    _, rows, _ = await run_workflow(folder, tmp_path / "r.db", model, overrides={"cut": "0.6"})
    assert model.requests == []
    assert rows[0]["details"]["answer"]["answered_by"] == "guess"


# Threshold sweep through --param overrides


@pytest.mark.parametrize(
    ("cut", "guessed", "asked"),
    [
        # 0.0: the guess stage settles every row that has a confidence, and "blank" has none.
        ("0.0", 3, 1),
        ("0.5", 2, 2),
        # 1.0: only a confidence of exactly 1.0 still settles the row.
        ("1.0", 1, 3),
    ],
)
async def test_threshold_sweep_shares_and_savings(folder, tmp_path, cut, guessed, asked) -> None:
    model = ScriptedModel(default=model_labeller)
    overrides = parse_params([f"cut={cut}"])
    summary, rows, _ = await run_workflow(folder, tmp_path / "r.db", model, overrides=overrides)
    cascade = summary.cascades["answer"]
    assert len(model.requests) == asked
    assert cascade.threshold == float(cut)
    assert cascade.rows == 4
    assert cascade.last_stage == "ask"
    assert cascade.answered == {"guess": guessed, "ask": asked}
    assert cascade.share == {"guess": guessed / 4, "ask": asked / 4}
    assert cascade.last_stage_rows == asked
    assert cascade.tokens == asked * CALL_TOKENS
    # Every row sent to the model alone would have cost the mean model row.
    assert cascade.tokens_if_last_only == 4 * CALL_TOKENS
    assert cascade.cost_usd == pytest.approx(asked * CALL_COST)
    assert cascade.cost_if_last_only_usd == pytest.approx(4 * CALL_COST)
    assert cascade.saved_usd == pytest.approx(guessed * CALL_COST)
    assert summary.cost_usd == pytest.approx(asked * CALL_COST)
    assert summary.input_tokens + summary.output_tokens == cascade.tokens
    assert [row["details"]["answer"]["threshold"] for row in rows] == [float(cut)] * 4


async def test_no_row_reaching_model_saves_unknown(tmp_path) -> None:
    folder = write_workflow(tmp_path / "triage", rows=("sure", "fair", "weak"))
    model = ScriptedModel(default=model_labeller)
    summary, _, _ = await run_workflow(folder, tmp_path / "r.db", model, overrides={"cut": "0"})
    cascade = summary.cascades["answer"]
    assert model.requests == []
    assert cascade.answered["guess"] == 3
    assert cascade.last_stage_rows == 0
    assert cascade.tokens == 0
    assert cascade.cost_usd == 0.0
    assert cascade.tokens_if_last_only is None
    assert cascade.cost_if_last_only_usd is None
    assert cascade.saved_usd is None


async def test_unreached_stage_counts_zero(tmp_path) -> None:
    folder = write_workflow(tmp_path / "triage", rows=("sure", "fair"))
    model = ScriptedModel(default=model_labeller)
    summary, _, _ = await run_workflow(folder, tmp_path / "r.db", model, overrides={"cut": "0"})
    cascade = summary.cascades["answer"]
    assert cascade.answered == {"guess": 2, "ask": 0}
    assert cascade.share == {"guess": 1.0, "ask": 0.0}


async def test_unpriced_model_leaves_cost_unknown(tmp_path) -> None:
    folder = write_workflow(tmp_path / "triage", rows=("sure", "weak"))
    settings = fake_settings("d0").model_copy(update={"prices": {}})
    model = ScriptedModel(default=model_labeller)
    summary, _, _ = await run_workflow(folder, tmp_path / "r.db", model, settings=settings)
    cascade = summary.cascades["answer"]
    assert cascade.tokens == CALL_TOKENS
    assert cascade.tokens_if_last_only == 2 * CALL_TOKENS
    assert cascade.cost_usd is None
    assert cascade.cost_if_last_only_usd is None
    assert cascade.saved_usd is None


# Failing stages


async def test_failing_first_stage_hands_on(tmp_path, caplog) -> None:
    folder = write_workflow(tmp_path / "triage", rows=("explode",))
    model = ScriptedModel(default=model_labeller)
    with caplog.at_level(logging.WARNING, logger="trunkline.workflows.cascade"):
        summary, rows, _ = await run_workflow(folder, tmp_path / "r.db", model)
    assert "stage guess failed, so the next stage takes the row" in caplog.text
    details = rows[0]["details"]["answer"]
    assert len(model.requests) == 1
    assert rows[0]["status"] == "ok"
    assert rows[0]["output"] == "model-explode"
    assert details["answered_by"] == "ask"
    assert details["stages"][0]["outcome"] == "failed"
    assert details["stages"][0]["reason"] == "RuntimeError: guess cannot read this row"
    assert "confidence" not in details["stages"][0]
    assert summary.cascades["answer"].answered == {"guess": 0, "ask": 1}


async def test_failing_last_stage_is_row_error(tmp_path) -> None:
    folder = write_workflow(tmp_path / "triage", rows=("weak", "sure"))
    model = ScriptedModel([FakeFailure(400, body="prompt rejected")], default=model_labeller)
    summary, rows, calls = await run_workflow(folder, tmp_path / "r.db", model)
    assert len(model.requests) == 1
    assert rows[0]["status"] == "error"
    assert rows[0]["output"] is None
    assert rows[0]["error"].startswith("step answer: ")
    assert "prompt rejected" in rows[0]["error"]
    assert rows[1]["status"] == "ok"
    assert summary.errors == 1
    assert len(calls) == 1


async def test_failed_last_stage_counted_as_run(tmp_path) -> None:
    folder = write_workflow(tmp_path / "triage", rows=("weak", "sure"))
    model = ScriptedModel([FakeFailure(400, body="prompt rejected")], default=model_labeller)
    summary, rows, _ = await run_workflow(folder, tmp_path / "r.db", model)
    assert rows[0]["details"] is not None
    assert summary.cascades["answer"].last_stage_rows == 1


TWO_MODELS = """
name = "two-models"
data = "rows.csv"
output = "reply"
expected = "gold"

[inputs]
message = "text"

[[steps]]
name = "answer"
kind = "cascade"
threshold = 0.5

  [[steps.stages]]
  name = "small"
  kind = "model"
  prompt = "prompt.jinja"
  output_schema = "schema.json"
  output = "reply"
  route = "main"

  [[steps.stages]]
  name = "large"
  kind = "model"
  prompt = "prompt.jinja"
  output_schema = "schema.json"
  output = "reply"
  route = "large"
"""

# The small deployment costs 18e-6 USD a call, as in fake_settings; the large
# one ten times as much.
LARGE_COST = (10 * 10.0 + 4 * 20.0) / 1e6


def two_model_settings() -> Settings:
    return Settings.model_validate(
        {
            "deployments": {
                "d0": {"provider": "fake", "model": "d0-model"},
                "d1": {"provider": "fake", "model": "d1-model"},
            },
            "routes": {"main": {"deployments": ["d0"]}, "large": {"deployments": ["d1"]}},
            "default_route": "main",
            "prices": {
                "d0-model": {"input_per_mtok": 1.0, "output_per_mtok": 2.0},
                "d1-model": {"input_per_mtok": 10.0, "output_per_mtok": 20.0},
            },
        }
    )


def small_model_reply(request: ModelRequest) -> FakeReply | FakeFailure:
    """Reply with the confidence each message names; "fail" gets an HTTP 400."""
    message = request.messages[-1].content.split()[-1]
    if message == "fail":
        return FakeFailure(400, body="small model rejected the prompt")
    confidence = {"low": 0.2, "high": 0.9, "wild": 1.5}[message]
    return FakeReply(
        json.dumps({"label": "small-" + message, "confidence": confidence}),
        input_tokens=10,
        output_tokens=4,
    )


async def run_two_models(
    tmp_path: Path, rows: tuple[str, ...], large: ScriptedModel
) -> tuple[RunSummary, list[dict[str, Any]], ScriptedModel]:
    folder = write_workflow(tmp_path / "two", text=TWO_MODELS)
    lines = ["text,gold"] + [f"{row},x" for row in rows]
    (folder / "rows.csv").write_text("\n".join(lines) + "\n")
    (folder / "schema.json").write_text(
        '{"type": "object", "properties": {"label": {"type": "string"}, "confidence": {}}, '
        '"required": ["label"]}'
    )
    small = ScriptedModel(default=small_model_reply)
    spec = load_workflow(folder)
    router = Router(two_model_settings(), providers={"d0": small, "d1": large})
    with recording(url=f"sqlite:///{tmp_path / 'r.db'}") as recorder:
        runner = BatchRunner(
            spec,
            router=router,
            store=recorder.store,
            writer=recorder.writer,
            params={},
            concurrency=1,
        )
        summary = await runner.run(load_dataset(spec.default_data()))
        stored = all_rows(recorder.store, summary.run_id)
    return summary, stored, small


async def test_model_stage_confidence_inside_output(tmp_path) -> None:
    large = ScriptedModel(default=model_labeller)
    summary, rows, small = await run_two_models(tmp_path, ("low", "high", "fail"), large)
    low, high, fail = (row["details"]["answer"] for row in rows)
    cascade = summary.cascades["answer"]
    assert len(small.requests) == 3
    assert prompts(large) == ["Label low", "Label fail"]
    assert [row["output"] for row in rows] == [
        {"label": "model-low"},
        {"label": "small-high", "confidence": 0.9},
        {"label": "model-fail"},
    ]
    assert high["answered_by"] == "small"
    assert high["stages"][0]["confidence"] == 0.9
    assert low["stages"][0]["outcome"] == "escalated"
    assert low["stages"][0]["cost_usd"] == pytest.approx(CALL_COST)
    assert low["stages"][1]["cost_usd"] == pytest.approx(LARGE_COST)
    assert fail["stages"][0]["outcome"] == "failed"
    assert fail["stages"][0]["reason"].startswith("bad_request: ")
    assert "small model rejected the prompt" in fail["stages"][0]["reason"]
    assert fail["answered_by"] == "large"
    assert cascade.answered == {"small": 1, "large": 2}
    assert cascade.tokens == 4 * CALL_TOKENS
    assert cascade.cost_usd == pytest.approx(2 * CALL_COST + 2 * LARGE_COST)
    assert cascade.cost_if_last_only_usd == pytest.approx(3 * LARGE_COST)
    assert cascade.saved_usd == pytest.approx(LARGE_COST - 2 * CALL_COST)
    # The row's own figures include both stages' calls.
    assert rows[0]["input_tokens"] == 20
    assert rows[0]["cost_usd"] == pytest.approx(CALL_COST + LARGE_COST)


async def test_model_stage_bad_confidence_is_row_error(tmp_path) -> None:
    large = ScriptedModel(default=model_labeller)
    _, rows, small = await run_two_models(tmp_path, ("wild",), large)
    assert len(small.requests) == 1
    assert large.requests == []
    assert rows[0]["status"] == "error"
    assert "stage 'small' set confidence = 1.5" in rows[0]["error"]


async def test_failed_cascade_keeps_paid_calls(tmp_path) -> None:
    large = ScriptedModel([FakeFailure(400, body="large model rejected the prompt")])
    summary, rows, small = await run_two_models(tmp_path, ("low",), large)
    assert len(small.requests) == 1
    assert rows[0]["status"] == "error"
    assert summary.input_tokens == 10
    assert rows[0]["input_tokens"] == 10
    assert rows[0]["cost_usd"] == pytest.approx(CALL_COST)


# Bad confidence values and thresholds


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("silent", "stage 'guess' set no 'confidence' value; it returned reply"),
        ("big", "stage 'guess' set confidence = 1.5; a confidence must be a number from 0 to 1"),
        (
            "word",
            "stage 'guess' set confidence = 'high'; a confidence must be a number from 0 to 1",
        ),
    ],
)
async def test_bad_confidence_is_row_error(tmp_path, message, expected) -> None:
    folder = write_workflow(tmp_path / "triage", rows=(message,))
    model = ScriptedModel(default=model_labeller)
    _, rows, _ = await run_workflow(folder, tmp_path / "r.db", model)
    assert model.requests == []
    assert rows[0]["status"] == "error"
    assert rows[0]["error"].startswith("step answer: ValueError: cascade 'answer': ")
    assert expected in rows[0]["error"]


@pytest.mark.parametrize("value", ['"high"', "1.5", "-0.1"])
async def test_threshold_parameter_out_of_range(tmp_path, value) -> None:
    text = WORKFLOW.replace('cut = { default = 0.5, type = "float" }', f"cut = {value}")
    folder = write_workflow(tmp_path / "triage", text=text, rows=("sure",))
    model = ScriptedModel(default=model_labeller)
    with pytest.raises(WorkflowError) as raised:
        await run_workflow(folder, tmp_path / "r.db", model)
    message = str(raised.value)
    assert "cascade step 'answer' reads its threshold from parameter 'cut'" in message
    assert f"which holds {json.loads(value)!r}" in message
    assert "--param cut=0.5" in message
    assert model.requests == []


async def test_threshold_error_marks_run_failed(tmp_path) -> None:
    text = WORKFLOW.replace('cut = { default = 0.5, type = "float" }', 'cut = "high"')
    folder = write_workflow(tmp_path / "triage", text=text, rows=("sure",))
    with pytest.raises(WorkflowError):
        await run_workflow(folder, tmp_path / "r.db", ScriptedModel(default=model_labeller))
    with recording(url=f"sqlite:///{tmp_path / 'r.db'}") as recorder:
        with recorder.store.engine.connect() as connection:
            run_id = connection.exec_driver_sql("SELECT run_id FROM runs").scalar_one()
        assert get_run(recorder.store, run_id)["status"] == "failed"


def test_float_parameter_rejects_word(folder) -> None:
    spec = load_workflow(folder)
    with pytest.raises(WorkflowError, match="parameter cut expects a float, got 'high'"):
        spec.parameters(parse_params(["cut=high"]))


STAGE_ASK = """
  [[steps.stages]]
  name = "ask"
  kind = "model"
  prompt = "prompt.jinja"
  output = "reply"
"""

STAGE_GUESS = """
  [[steps.stages]]
  name = "guess"
  kind = "tool"
  function = "tools:guess"
"""

INNER_CASCADE = """
  [[steps.stages]]
  name = "inner"
  kind = "cascade"
  threshold = 0.5
  stages = [
    { name = "a", kind = "tool", function = "tools:guess" },
    { name = "b", kind = "tool", function = "tools:guess" },
  ]
"""

TOOL_STEP_ASK = """
[[steps]]
name = "ask"
kind = "tool"
function = "tools:guess"
"""


def invalid_workflow(step: str, *stages: str, after: str = "") -> str:
    """Return a workflow with one parameter, `cut`, and the step `step` followed by `stages`."""
    head = 'name = "bad"\noutput = "reply"\n\n[params]\ncut = 0.5\n\n[[steps]]\n'
    return head + step + "".join(stages) + after


CASCADE = 'name = "answer"\nkind = "cascade"\n'


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            invalid_workflow(CASCADE + "threshold = 0.5\n", STAGE_ASK),
            "cascade step 'answer' needs at least two [[steps.stages]], cheapest first",
        ),
        (
            invalid_workflow(CASCADE + "threshold = 0.5\n", STAGE_GUESS, INNER_CASCADE),
            "cascade step 'answer' has a cascade among its stages; nest no cascades",
        ),
        (
            invalid_workflow(CASCADE + 'threshold = "floor"\n', STAGE_GUESS, STAGE_ASK),
            "cascade step 'answer' takes its threshold from parameter 'floor', "
            "which [params] does not declare; declared: cut",
        ),
        (
            invalid_workflow(CASCADE + 'threshold = "0.5"\n', STAGE_GUESS, STAGE_ASK),
            "cascade step 'answer' has threshold = '0.5', a string; write the number without "
            "quotes (threshold = 0.5) or name a parameter",
        ),
        (
            invalid_workflow(CASCADE + "threshold = true\n", STAGE_GUESS, STAGE_ASK),
            "threshold = true is not a number; give one from 0 to 1 or a parameter name",
        ),
        (
            invalid_workflow(CASCADE + 'threshold = 0.5\nconfidence = ""\n', STAGE_GUESS, STAGE_ASK),
            "confidence",
        ),
        (
            invalid_workflow(CASCADE, STAGE_GUESS, STAGE_ASK),
            "cascade step 'answer' needs threshold = <number from 0 to 1> "
            "or the name of a parameter",
        ),
        (
            invalid_workflow(CASCADE + "threshold = 1.5\n", STAGE_GUESS, STAGE_ASK),
            "cascade step 'answer': threshold must be from 0 to 1, got 1.5",
        ),
        (
            invalid_workflow(
                CASCADE + "threshold = 0.5\n", STAGE_GUESS, STAGE_ASK, after=TOOL_STEP_ASK
            ),
            "step names must be unique, including cascade stages; repeated: ask",
        ),
        (
            invalid_workflow(
                CASCADE + "threshold = 0.5\n",
                STAGE_GUESS.replace('name = "guess"', 'name = "twice"'),
                STAGE_ASK.replace('name = "ask"', 'name = "twice"'),
            ),
            "repeated: twice",
        ),
        (
            invalid_workflow(
                'name = "answer"\nkind = "tool"\nfunction = "tools:guess"\n', STAGE_GUESS, STAGE_ASK
            ),
            "tool step 'answer' has stages; only a cascade step has them",
        ),
    ],
    ids=[
        "one-stage",
        "nested",
        "undeclared-parameter",
        "quoted-number",
        "boolean-threshold",
        "empty-confidence-name",
        "no-threshold",
        "threshold-above-one",
        "stage-named-like-step",
        "stages-share-name",
        "stages-on-tool",
    ],
)
def test_invalid_cascade_spec(tmp_path, text, expected) -> None:
    folder = write_workflow(tmp_path / "bad", text=text)
    with pytest.raises(WorkflowError) as raised:
        load_workflow(folder)
    assert expected in str(raised.value)


def test_missing_stage_template_is_reported(folder) -> None:
    (folder / "prompt.jinja").unlink()
    with pytest.raises(WorkflowError, match="prompt.jinja, which is not a file"):
        load_workflow(folder)


# Prompt overrides and routes reaching stages


async def test_prompt_override_reaches_stage(folder, tmp_path) -> None:
    database = tmp_path / "r.db"
    with recording(url=f"sqlite:///{database}") as recorder:
        PromptRegistry(recorder.store).create_version(
            "triage-ask",
            PromptContent.model_validate(
                {"messages": [{"role": "user", "content": "Registered {{ message }}"}]}
            ),
        )
    spec = load_workflow(folder)
    named = parse_prompt_overrides(spec, ["ask=triage-ask@1"])
    unnamed = parse_prompt_overrides(spec, ["triage-ask@1"])
    model = ScriptedModel(default=model_labeller)
    summary, rows, calls = await run_workflow(folder, database, model, prompt_overrides=named)
    assert named == {"ask": "triage-ask@1"}
    assert unnamed == named
    assert prompts(model) == ["Registered weak", "Registered blank"]
    assert [call["prompt_name"] for call in calls] == ["triage-ask", "triage-ask"]
    assert [call["prompt_version"] for call in calls] == ["1", "1"]
    assert summary.cascades["answer"].answered == {"guess": 2, "ask": 2}
    assert rows[3]["output"] == "model-blank"


def test_prompt_override_rejects_tool_stage(folder) -> None:
    spec = load_workflow(folder)
    expected = "no model step named guess in workflow 'triage'; its model steps: ask"
    with pytest.raises(WorkflowError, match=expected):
        build_steps(spec, prompt_overrides={"guess": "triage-ask@1"})


async def test_with_route_reroutes_stages(folder, tmp_path) -> None:
    spec = load_workflow(folder)
    routed = with_route(spec, "large")
    main = ScriptedModel(default=model_labeller)
    large = ScriptedModel(default=model_labeller)
    router = Router(two_model_settings(), providers={"d0": main, "d1": large})

    with recording(url=f"sqlite:///{tmp_path / 'r.db'}") as recorder:
        runner = BatchRunner(
            routed,
            router=router,
            store=recorder.store,
            writer=recorder.writer,
            params=routed.parameters(),
        )
        summary = await runner.run(load_dataset(routed.default_data()))

    assert routed.steps[0].stages[1].route == "large"
    assert routed.steps[0].stages[0].route is None
    assert spec.steps[0].stages[1].route is None
    assert [step.route for step in model_steps(runner.steps)] == ["large"]
    assert main.requests == []
    assert len(large.requests) == 2
    assert summary.cascades["answer"].answered == {"guess": 2, "ask": 2}


# Spans


async def test_cascade_span_names_answering_stage(folder, tmp_path, exported) -> None:
    model = ScriptedModel(default=model_labeller)
    await run_workflow(folder, tmp_path / "r.db", model)
    cascade_spans = [record for record in exported.spans if record.name == "answer"]
    stage_spans = [
        record for record in exported.spans if record.attributes.get("cascade") == "answer"
    ]
    answered_by = sorted(record.attributes["answered_by"] for record in cascade_spans)
    assert len(cascade_spans) == 4
    assert answered_by == ["ask", "ask", "guess", "guess"]
    assert all(record.kind == "step" for record in cascade_spans)
    assert all(record.attributes["step_kind"] == "cascade" for record in cascade_spans)
    assert all(record.attributes["last_stage"] == "ask" for record in cascade_spans)
    assert all(record.attributes["threshold"] == 0.5 for record in cascade_spans)
    # The trail of stages is a list, which spans do not carry.
    assert all("stages" not in record.attributes for record in cascade_spans)
    stage_names = sorted(record.name for record in stage_spans)
    assert stage_names == ["ask", "ask", "guess", "guess", "guess", "guess"]
    by_id = {record.span_id: record for record in exported.spans}
    assert all(by_id[record.parent_span_id].name == "answer" for record in stage_spans)


async def test_summary_table_shows_cascade(folder, tmp_path) -> None:
    model = ScriptedModel(default=model_labeller)
    summary, _, _ = await run_workflow(folder, tmp_path / "r.db", model)
    console = Console(record=True, width=200)
    console.print(summary_table("triage", summary))
    text = console.export_text()
    assert "answer: answered by" in text
    assert "guess 50% (2), ask 50% (2); threshold 0.5" in text
    assert "answer: ask ran on" in text
    assert "2 of 4 rows" in text
    assert "56 with ask alone" in text
    assert f"${2 * CALL_COST:.6f} against ask alone" in text
