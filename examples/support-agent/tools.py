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
from typing import Literal

from pydantic import BaseModel

from trunkline.workflows import workflow_function

HERE = Path(__file__).resolve().parent

#: Below this share of the retrieval vote the intent is a guess, so a person answers (README.md).
MIN_CONFIDENCE = 0.4

_triage = workflow_function(HERE.parent / "intent-triage", outputs=["intent", "candidates", "votes"])


class Triage(BaseModel):
    """The intent of a message, how sure the classifier is, and the tool to call next."""

    intent: str
    confidence: float
    next_tool: Literal["policy_answer", "escalate"]


class Policy(BaseModel):
    """What the bank's policy says to do about an intent."""

    intent: str
    action: Literal["answer", "escalate"]
    reply: str


class Ticket(BaseModel):
    """A message handed to a person."""

    ticket: str
    queue: str


async def classify_intent(message: str) -> Triage:
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


def policy_answer(intent: str) -> Policy:
    """Look up the bank's canned reply for an intent, or learn that a person must answer it.

    Args:
        intent: an intent name that classify_intent returned, such as "card_arrival".
    """
    policies = _policies()
    if intent not in _intents():
        raise ValueError(f"{intent!r} is not an intent; call classify_intent and pass the intent it returns")
    action, reply = policies.get(intent, ("escalate", ""))
    return Policy(intent=intent, action=action, reply=reply)


def escalate(reason: str) -> Ticket:
    """Hand the customer's message to a person, when no canned reply fits or the intent is unsure.

    Args:
        reason: why a person must answer, in one sentence.
    """
    return Ticket(ticket=f"ESC-{uuid.uuid4().hex[:8]}", queue="support")


@lru_cache(maxsize=1)
def _policies() -> dict[str, tuple[str, str]]:
    with (HERE / "policies.csv").open(newline="", encoding="utf-8") as handle:
        return {row["intent"]: (row["action"], row["reply"]) for row in csv.DictReader(handle)}


@lru_cache(maxsize=1)
def _intents() -> frozenset[str]:
    with (HERE.parent / "intent-triage" / "memory.csv").open(newline="", encoding="utf-8") as handle:
        return frozenset(row["category"] for row in csv.DictReader(handle))


def outcome(answer: dict) -> dict:
    """Spread the agent's structured answer into the row's values, so the run scores its intent."""
    return {"intent": answer["intent"], "action": answer["action"], "reply": answer["reply"]}
