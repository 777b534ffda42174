"""Workflow files, steps and batch runs with resume, over scripted fake models."""

from __future__ import annotations

import json
import textwrap

import pytest

from trunkline.errors import WorkflowError
from trunkline.providers.fake import FakeFailure, FakeReply, ScriptedModel
from trunkline.recording import recording
from trunkline.routing import Router
from trunkline.store.runs import all_rows, get_run
from trunkline.store.queries import list_calls
from trunkline.workflows import BatchRunner, load_dataset, load_workflow
from trunkline.workflows.steps import ModelStep
from unit.helpers import fake_settings

WORKFLOW = """
name = "echo"
data = "rows.csv"
output = "label"
expected = "gold"
route = "main"

[inputs]
message = "text"

[params]
suffix = "!"
choices = ["HELLO!", "BYE!", "MISS!"]

[[steps]]
name = "shout"
kind = "tool"
function = "tools:shout"

[[steps]]
name = "classify"
kind = "model"
prompt = "prompt.jinja"
output_schema = "schema.json"
output = "answer"

[[steps]]
name = "finish"
kind = "post"
function = "tools:finish"
"""

TOOLS = '''
def shout(message, suffix):
    if message == "explode":
        raise RuntimeError("tool cannot handle this row")
    return {"loud": message.upper() + suffix}


async def finish(answer):
    return {"label": answer["label"]}
'''


@pytest.fixture
def workflow_folder(tmp_path):
    folder = tmp_path / "echo"
    folder.mkdir()
    (folder / "workflow.toml").write_text(WORKFLOW)
    (folder / "tools.py").write_text(TOOLS)
    (folder / "prompt.jinja").write_text("Label {{ loud }} from {{ choices | join(',') }}")
    (folder / "schema.json").write_text(
        '{"type": "object", "properties": {"label": {"enum": {{ choices | tojson }}}}, '
        '"required": ["label"]}'
    )
    (folder / "rows.csv").write_text("text,gold\nhello,HELLO!\nbye,BYE!\nexplode,x\nmiss,nope\n")
    return folder


def labeller(request):
    prompt = request.messages[-1].content
    loud = prompt.split()[1]
    return FakeReply(json.dumps({"label": loud}), input_tokens=10, output_tokens=4)


def make_runner(folder, recorder, model, **overrides):
    spec = load_workflow(folder)
    params = spec.parameters(overrides)
    router = Router(fake_settings("d0"), providers={"d0": model})
    return spec, BatchRunner(
        spec, router=router, store=recorder.store, writer=recorder.writer, params=params, concurrency=2
    )


async def test_run_scores_and_records(workflow_folder, tmp_path) -> None:
    model = ScriptedModel(default=labeller)
    with recording(url=f"sqlite:///{tmp_path / 'r.db'}") as recorder:
        spec, runner = make_runner(workflow_folder, recorder, model)
        summary = await runner.run(load_dataset(spec.default_data()))
        rows = all_rows(recorder.store, summary.run_id)
        calls = list_calls(recorder.store, run_id=summary.run_id)
    assert summary.rows == 4
    assert summary.ok == 3
    assert summary.errors == 1
    assert summary.accuracy == pytest.approx(0.5)
    assert summary.input_tokens == 30
    assert summary.cost_usd == pytest.approx(3 * (10 * 1 + 4 * 2) / 1e6)
    assert rows[2]["error"].startswith("step shout: RuntimeError")
    assert len(calls) == 3


async def test_resume_skips_finished_rows(workflow_folder, tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    flaky = ScriptedModel(
        [FakeFailure(400, body="refused"), FakeReply('{"label": "BYE!"}'), FakeReply('{"label": "MISS!"}')]
    )
    with recording(url=url) as recorder:
        spec, runner = make_runner(workflow_folder, recorder, flaky)
        runner.concurrency = 1
        first = await runner.run(load_dataset(spec.default_data()))
    assert first.errors == 2
    again = ScriptedModel(default=labeller)
    with recording(url=url) as recorder:
        spec, runner = make_runner(workflow_folder, recorder, again)
        second = await runner.run(load_dataset(spec.default_data()), resume_run_id=first.run_id)
        run = get_run(recorder.store, first.run_id)
    assert second.run_id == first.run_id
    assert second.resumed == 2
    assert len(again.requests) == 1
    assert second.rows == 4
    assert second.ok == 3
    assert run["status"] == "done"


async def test_resume_rejects_other_data(workflow_folder, tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    with recording(url=url) as recorder:
        spec, runner = make_runner(workflow_folder, recorder, ScriptedModel(default=labeller))
        first = await runner.run(load_dataset(spec.default_data()))
        other = tmp_path / "other.csv"
        other.write_text("text,gold\nnew,NEW!\n")
        with pytest.raises(WorkflowError, match="whose content differs"):
            await runner.run(load_dataset(other), resume_run_id=first.run_id)


async def test_missing_column_is_reported(workflow_folder, tmp_path) -> None:
    data = tmp_path / "bad.csv"
    data.write_text("body,gold\nx,y\n")
    with recording(url=f"sqlite:///{tmp_path / 'r.db'}") as recorder:
        _, runner = make_runner(workflow_folder, recorder, ScriptedModel(default=labeller))
        with pytest.raises(WorkflowError, match="lacks column"):
            await runner.run(load_dataset(data))


async def test_template_error_stops_run(workflow_folder, tmp_path) -> None:
    (workflow_folder / "prompt.jinja").write_text("{{ nowhere }}")
    with recording(url=f"sqlite:///{tmp_path / 'r.db'}") as recorder:
        spec, runner = make_runner(workflow_folder, recorder, ScriptedModel(default=labeller))
        with pytest.raises(WorkflowError, match="'nowhere' is undefined"):
            await runner.run(load_dataset(spec.default_data()))


def test_param_overrides_are_typed(workflow_folder) -> None:
    spec = load_workflow(workflow_folder)
    params = spec.parameters({"choices": '["A"]', "suffix": "?"})
    assert params["choices"] == ["A"]
    assert params["suffix"] == "?"


def test_unknown_param_override(workflow_folder) -> None:
    spec = load_workflow(workflow_folder)
    with pytest.raises(WorkflowError, match="has no parameter 'size'"):
        spec.parameters({"size": "3"})


def test_workflow_missing_prompt_file(workflow_folder) -> None:
    (workflow_folder / "prompt.jinja").unlink()
    with pytest.raises(WorkflowError, match="prompt.jinja, which is not a file"):
        load_workflow(workflow_folder)


def test_workflow_invalid_field(workflow_folder) -> None:
    (workflow_folder / "workflow.toml").write_text(WORKFLOW.replace('kind = "tool"', 'kind = "tol"'))
    with pytest.raises(WorkflowError, match="steps.0.kind"):
        load_workflow(workflow_folder)


def test_yaml_workflow(tmp_path) -> None:
    (tmp_path / "tools.py").write_text("def f(text):\n    return text\n")
    (tmp_path / "workflow.yaml").write_text(
        textwrap.dedent(
            """
            name: y
            output: f
            steps:
              - {name: f, kind: tool, function: "tools:f"}
            """
        )
    )
    assert load_workflow(tmp_path).steps[0].function == "tools:f"


def test_jsonl_dataset(tmp_path) -> None:
    file = tmp_path / "rows.jsonl"
    file.write_text('{"text": "a"}\n\n{"text": "b"}\n')
    dataset = load_dataset(file)
    assert [row["text"] for row in dataset.rows] == ["a", "b"]
    assert len(dataset.content_hash) == 64


def test_jsonl_line_not_object(tmp_path) -> None:
    file = tmp_path / "rows.jsonl"
    file.write_text('{"text": "a"}\n[1, 2]\n')
    with pytest.raises(WorkflowError, match="line 2: expected a JSON object"):
        load_dataset(file)


def test_dataset_wrong_suffix(tmp_path) -> None:
    file = tmp_path / "rows.txt"
    file.write_text("x")
    with pytest.raises(WorkflowError, match="expected .csv or .jsonl"):
        load_dataset(file)


def test_chat_messages_template(workflow_folder) -> None:
    (workflow_folder / "chat.jinja").write_text(
        '[{"role": "system", "content": "Be brief."},'
        '{"role": "user", "content": {{ loud | tojson }}}]'
    )
    text = (workflow_folder / "workflow.toml").read_text()
    (workflow_folder / "workflow.toml").write_text(
        text.replace('prompt = "prompt.jinja"', 'messages = "chat.jinja"')
    )
    spec = load_workflow(workflow_folder)
    step = ModelStep(spec.steps[1], spec)
    messages = step.messages({"loud": 'SAY "HI"'})
    assert [message.role for message in messages] == ["system", "user"]
    assert messages[1].content == 'SAY "HI"'


def test_chat_template_not_an_array(workflow_folder) -> None:
    (workflow_folder / "chat.jinja").write_text('{"role": "user"}')
    text = (workflow_folder / "workflow.toml").read_text()
    (workflow_folder / "workflow.toml").write_text(
        text.replace('prompt = "prompt.jinja"', 'messages = "chat.jinja"')
    )
    spec = load_workflow(workflow_folder)
    with pytest.raises(WorkflowError, match="must render a JSON array"):
        ModelStep(spec.steps[1], spec).messages({})


def test_messages_with_prompt_rejected(workflow_folder) -> None:
    text = (workflow_folder / "workflow.toml").read_text()
    (workflow_folder / "workflow.toml").write_text(
        text.replace('prompt = "prompt.jinja"', 'prompt = "prompt.jinja"\nmessages = "prompt.jinja"')
    )
    with pytest.raises(WorkflowError, match="sets messages together with prompt"):
        load_workflow(workflow_folder)


def test_template_syntax_error(workflow_folder) -> None:
    (workflow_folder / "prompt.jinja").write_text("{% for x in %}")
    spec = load_workflow(workflow_folder)
    with pytest.raises(WorkflowError, match="prompt.jinja, line 1, is invalid"):
        ModelStep(spec.steps[1], spec)


async def test_missing_output_is_row_error(workflow_folder, tmp_path) -> None:
    text = (workflow_folder / "workflow.toml").read_text()
    (workflow_folder / "workflow.toml").write_text(text.replace('output = "label"', 'output = "labelx"'))
    with recording(url=f"sqlite:///{tmp_path / 'r.db'}") as recorder:
        spec, runner = make_runner(workflow_folder, recorder, ScriptedModel(default=labeller))
        summary = await runner.run(load_dataset(spec.default_data()))
        rows = all_rows(recorder.store, summary.run_id)
    assert summary.errors == 4
    assert "no step produced 'labelx'" in rows[0]["error"]


async def test_jsonl_row_missing_key(workflow_folder, tmp_path) -> None:
    data = tmp_path / "rows.jsonl"
    data.write_text('{"text": "hello", "gold": "HELLO!"}\n{"gold": "x"}\n')
    with recording(url=f"sqlite:///{tmp_path / 'r.db'}") as recorder:
        _, runner = make_runner(workflow_folder, recorder, ScriptedModel(default=labeller))
        with pytest.raises(WorkflowError, match="row lacks text"):
            await runner.run(load_dataset(data))


def test_non_utf8_dataset(tmp_path) -> None:
    file = tmp_path / "rows.csv"
    file.write_bytes("text\ncaf\xe9\n".encode("latin-1"))
    with pytest.raises(WorkflowError, match="is not UTF-8"):
        load_dataset(file)


async def test_resume_rejects_changed_template(workflow_folder, tmp_path) -> None:
    with recording(url=f"sqlite:///{tmp_path / 'r.db'}") as recorder:
        spec, runner = make_runner(workflow_folder, recorder, ScriptedModel(default=labeller))
        first = await runner.run(load_dataset(spec.default_data()))
        (workflow_folder / "prompt.jinja").write_text("Changed {{ loud }} {{ choices }}")
        spec, runner = make_runner(workflow_folder, recorder, ScriptedModel(default=labeller))
        with pytest.raises(WorkflowError, match="changed since run"):
            await runner.run(load_dataset(spec.default_data()), resume_run_id=first.run_id)


def test_tool_module_concurrent_load_is_whole(tmp_path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from trunkline.workflows.loading import load_object

    # The pause at import time leaves a half-run module in sys.modules long
    # enough for the other threads to find it, unless loading is serialised.
    (tmp_path / "slow_tools.py").write_text("import time\ntime.sleep(0.3)\n\ndef pick(x):\n    return x\n")
    with ThreadPoolExecutor(4) as pool:
        found = list(pool.map(lambda _: load_object("slow_tools:pick", tmp_path), range(4)))
    assert all(item is found[0] for item in found)


def test_csv_long_field_is_read(tmp_path) -> None:
    long_text = "word " * 60_000
    (tmp_path / "rows.csv").write_text(f"text,gold\n{long_text},yes\n")
    (row,) = load_dataset(tmp_path / "rows.csv").rows
    assert row["text"] == long_text
