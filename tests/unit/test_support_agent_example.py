"""The support-agent example end to end, with a scripted model that follows its instructions."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from trunkline.config import Settings
from trunkline.errors import ToolError
from trunkline.providers.fake import FakeReply, ScriptedModel
from trunkline.recording import recording
from trunkline.routing import Router
from trunkline.store.runs import all_rows
from trunkline.types.calls import ModelRequest
from trunkline.types.messages import ToolCall
from trunkline.workflows import BatchRunner, load_dataset, load_workflow

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "support-agent"


def call(name: str, arguments: dict, step: int) -> FakeReply:
    return FakeReply("", tool_calls=(ToolCall(id=f"call_{step}", name=name, arguments=json.dumps(arguments)),))


def follows_instructions(request: ModelRequest) -> FakeReply:
    """Classify, then look up the policy or escalate, then answer, as the example's system prompt asks."""
    properties = (request.output_schema or {}).get("properties", {})
    if "intent" in properties and "action" not in properties:
        # The intent-triage workflow's own model step: take the strongest retrieval candidate.
        return FakeReply(json.dumps({"intent": properties["intent"]["enum"][0]}))
    messages = request.messages
    last = messages[-1]
    if last.role == "user":
        message = last.content.removeprefix("Customer message: ")
        return call("classify_intent", {"message": message}, len(messages))
    names = {tool.id: tool.name for item in messages for tool in item.tool_calls}
    result = json.loads(last.content)
    tool = names[last.tool_call_id]
    if tool == "classify_intent" and result["next_tool"] == "policy_answer":
        return call("policy_answer", {"intent": result["intent"]}, len(messages))
    if tool == "policy_answer" and result["action"] == "answer":
        answer = {"intent": result["intent"], "action": "answered", "reply": result["reply"]}
        return FakeReply(json.dumps(answer))
    if tool != "escalate":
        return call("escalate", {"reason": "no canned reply fits"}, len(messages))
    first = json.loads(next(item.content for item in messages if item.role == "tool"))
    reply = f"A person will reply; your ticket is {result['ticket']}."
    return FakeReply(json.dumps({"intent": first["intent"], "action": "escalated", "reply": reply}))


@pytest.fixture
def model() -> ScriptedModel:
    return ScriptedModel(default=follows_instructions)


@pytest.fixture
def router(model: ScriptedModel) -> Router:
    settings = Settings.model_validate(
        {
            "deployments": {"local": {"provider": "fake", "model": "scripted"}},
            "routes": {"local": {"deployments": ["local"]}},
            "default_route": "local",
        }
    )
    return Router(settings, providers={"local": model})


async def test_example_answers_or_escalates(router, model, tmp_path) -> None:
    spec = load_workflow(EXAMPLE)
    rows = tmp_path / "rows.csv"
    rows.write_text(
        "text,category\n"
        "ordered my card like 10 days ago and my letterbox is still empty.. any update?,card_arrival\n"
        "My bag got snatched on the bus and my card was inside it!!,lost_or_stolen_card\n"
        "hmm,card_arrival\n"
    )
    with recording(url=f"sqlite:///{tmp_path / 'r.db'}") as recorder:
        runner = BatchRunner(spec, router=router, store=recorder.store, writer=recorder.writer, params={})
        summary = await runner.run(load_dataset(rows))
        stored = all_rows(recorder.store, summary.run_id)

    assert summary.ok == 3
    arrival, stolen, unclear = stored
    with (EXAMPLE / "policies.csv").open() as handle:
        canned = {row["intent"]: row["reply"] for row in csv.DictReader(handle)}
    assert arrival["output"] == "card_arrival"
    assert arrival["details"]["support"]["by_tool"] == {"classify_intent": {"ok": 1}, "policy_answer": {"ok": 1}}
    assert arrival["details"]["support"]["steps"] == 3
    assert stolen["output"] == "lost_or_stolen_card"
    assert stolen["details"]["support"]["by_tool"]["escalate"] == {"ok": 1}
    # A message with no word in common with the memory file leaves the intent a guess.
    assert unclear["details"]["support"]["by_tool"] == {"classify_intent": {"ok": 1}, "escalate": {"ok": 1}}
    tool_results = [item.content for request in model.requests for item in request.messages if item.role == "tool"]
    assert any(canned["card_arrival"] in content for content in tool_results)
    assert any('"ticket":"ESC-' in content for content in tool_results)


def test_policy_rejects_unknown_intent() -> None:
    from trunkline.tools import load_tool

    policy = load_tool("tools:policy_answer", EXAMPLE)
    with pytest.raises(ToolError, match="invalid arguments for policy_answer"):
        policy.parse_arguments('{"intent": "pizza"}')
