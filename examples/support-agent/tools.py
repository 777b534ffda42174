"""Tools of the support-agent example: classify a message, look up a canned answer, escalate.

`classify_intent` runs the intent-triage example workflow on the message,
so its model call goes through the agent's router and sits under the tool
call in the trace. `policy_answer` reads `policies.csv`, a small table
written for this example: a canned reply for routine intents, and the
intents that always go to a person. `escalate` hands the message to a
person and returns the ticket.
"""

from __future__ import annotations

import csv
import uuid
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, Field

from trunkline.tools import tool
from trunkline.workflows import workflow_function

HERE = Path(__file__).resolve().parent

#: Below this share of the retrieval vote the intent is a guess, so a person
#: replies; README.md gives the figures behind the value.
MIN_CONFIDENCE = 0.4

_triage = workflow_function(HERE.parent / "intent-triage", outputs=["intent", "candidates", "votes"])


def _intents() -> tuple[str, ...]:
    with (HERE.parent / "intent-triage" / "memory.csv").open(newline="", encoding="utf-8") as handle:
        return tuple(sorted({row["category"] for row in csv.DictReader(handle)}))


#: The 77 intent names. As a Literal, they become an enum in the tools' and
#: the answer's JSON Schema, which a grammar-constrained model cannot leave.
Intent = Literal[_intents()]  # type: ignore[valid-type]

#: Bounds on free text, so that a small model's repetition ends inside the
#: output cap instead of being cut off mid-JSON.
Message = Annotated[str, Field(max_length=400)]
Reply = Annotated[str, Field(max_length=400)]


class Triage(BaseModel):
    """The intent of a message, how sure the classifier is, and the tool to call next."""

    intent: Intent
    confidence: float
    next_tool: Literal["policy_answer", "escalate"]


class Policy(BaseModel):
    """The bank's policy for an intent: a canned reply, or a person."""

    intent: Intent
    action: Literal["answer", "escalate"]
    reply: str


class Answer(BaseModel):
    """The agent's answer to a customer message: the step's output schema."""

    intent: Intent
    action: Literal["answered", "escalated"]
    reply: Reply


class Ticket(BaseModel):
    """A message handed to a person."""

    ticket: str
    queue: str


# Each tool is needed once per message. Offering it only once keeps a small
# model, which tends to repeat its first call, moving on to the next tool.
@tool(max_uses=1)
async def classify_intent(message: Message) -> Triage:
    """Classify an online-banking customer message into one of 77 intents.

    Args:
        message: the customer's message, word for word.
    """
    found = await _triage(message=message)
    votes = dict(zip(found["candidates"], found["votes"], strict=False))
    total = sum(votes.values())
    confidence = round(votes.get(found["intent"], 0.0) / total, 3) if total > 0 else 0.0
    next_tool = "policy_answer" if confidence >= MIN_CONFIDENCE else "escalate"
    return Triage(intent=found["intent"], confidence=confidence, next_tool=next_tool)


@tool(max_uses=1)
def policy_answer(intent: Intent) -> Policy:
    """Look up the bank's canned reply for an intent, or learn that a person must answer it.

    Args:
        intent: an intent name that classify_intent returned, such as "card_arrival".
    """
    action, reply = _policies().get(intent, ("escalate", ""))
    return Policy(intent=intent, action=action, reply=reply)


@tool(max_uses=1)
def escalate(reason: Message) -> Ticket:
    """Hand the customer's message to a person, when no canned reply fits or the intent is unsure.

    Args:
        reason: why a person must answer, in one sentence.
    """
    return Ticket(ticket=f"ESC-{uuid.uuid4().hex[:8]}", queue="support")


@lru_cache(maxsize=1)
def _policies() -> dict[str, tuple[str, str]]:
    with (HERE / "policies.csv").open(newline="", encoding="utf-8") as handle:
        return {row["intent"]: (row["action"], row["reply"]) for row in csv.DictReader(handle)}


def outcome(answer: dict) -> dict:
    """Spread the agent's structured answer into the row's values, so the run scores its intent."""
    return {"intent": answer["intent"], "action": answer["action"], "reply": answer["reply"]}
