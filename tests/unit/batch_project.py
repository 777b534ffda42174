"""The triage workflow with a batch step, and running it against a `FakeBatchServer`."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import select

from fakebatch import FakeBatchServer
from fakeserver import openai_completion
from trunkline.config import Settings
from trunkline.recording import recording
from trunkline.routing import Router
from trunkline.store.batches import run_batches
from trunkline.store.runs import all_rows
from trunkline.store.tables import calls as calls_table
from trunkline.workflows import BatchRunner, load_dataset, load_workflow

WORKFLOW = """
name = "triage"
data = "rows.csv"
output = "label"
expected = "gold"
route = "main"

[inputs]
message = "text"

[[steps]]
name = "shout"
kind = "tool"
function = "tools:shout"

[[steps]]
name = "classify"
kind = "model"
mode = "batch"
prompt = "prompt.jinja"
output_schema = "schema.json"
output = "answer"
max_tokens = 20

[[steps]]
name = "finish"
kind = "post"
function = "tools:finish"
"""

TOOLS = '''
def shout(message):
    if message == "explode":
        raise RuntimeError("tool cannot handle this row")
    return {"loud": message.upper() + "!"}


def finish(answer):
    return {"label": answer["label"]}
'''

#: Prices of the fake's model, per million tokens; the fake reports 12 input and 5 output tokens.
INPUT_PRICE, OUTPUT_PRICE = 1.0, 2.0
ONLINE_COST = (12 * INPUT_PRICE + 5 * OUTPUT_PRICE) / 1e6


def label_reply(body: dict) -> dict:
    """Reply with the shouted word of the prompt as the label, as a classifier would."""
    loud = body["messages"][-1]["content"].split()[1]
    return openai_completion(json.dumps({"label": loud}), model=body["model"] + "-2026-01-01")


def write_project(tmp_path: Path) -> Path:
    """Write the triage workflow, whose classify step runs as batch, and its four rows."""
    flow = tmp_path / "triage"
    flow.mkdir()
    (flow / "workflow.toml").write_text(WORKFLOW)
    (flow / "tools.py").write_text(TOOLS)
    (flow / "prompt.jinja").write_text("Label {{ loud }} please")
    (flow / "schema.json").write_text(
        '{"type": "object", "properties": {"label": {"type": "string"}}, "required": ["label"], '
        '"additionalProperties": false}'
    )
    (flow / "rows.csv").write_text("text,gold\nhello,HELLO!\nbye,BYE!\nexplode,x\nmiss,MISS!\n")
    return flow


def batch_settings(base_url: str, **deployment: str) -> Settings:
    return Settings.model_validate(
        {
            "deployments": {
                "gpt": {"provider": "openai", "model": "gpt-4o-mini", "base_url": base_url, **deployment}
            },
            "routes": {"main": {"deployments": ["gpt"]}},
            "default_route": "main",
            "prices": {"gpt-4o-mini": {"input_per_mtok": INPUT_PRICE, "output_per_mtok": OUTPUT_PRICE}},
        }
    )


def make_runner(folder, recorder, settings: Settings) -> tuple:
    spec = load_workflow(folder)
    runner = BatchRunner(
        spec,
        router=Router(settings),
        store=recorder.store,
        writer=recorder.writer,
        params=spec.parameters(),
        concurrency=2,
        batch_poll_s=0.01,
    )
    return spec, runner


def stored_calls(store, run_id: str) -> list[dict]:
    query = select(calls_table).where(calls_table.c.run_id == run_id)
    with store.engine.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(query)]


async def run_once(folder, tmp_path, fake: FakeBatchServer, settings: Settings | None = None, **options) -> tuple:
    settings = settings or batch_settings(fake.openai_base_url)
    with recording(url=f"sqlite:///{tmp_path / 'runs.db'}") as recorder:
        spec, runner = make_runner(folder, recorder, settings)
        try:
            summary = await runner.run(load_dataset(spec.default_data()), **options)
        finally:
            await runner.router.aclose()
        rows = all_rows(recorder.store, summary.run_id)
        calls = stored_calls(recorder.store, summary.run_id)
        jobs = run_batches(recorder.store, summary.run_id)
    return summary, rows, calls, jobs
