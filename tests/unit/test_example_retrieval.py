"""The intent-triage example's retrieval step, lexical and by meaning, over its own memory file."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from trunkline.evals.embeddings import embeddings_available

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "intent-triage"
MEMORY = str(EXAMPLE / "memory.csv")


@pytest.fixture(scope="module")
def tools():  # noqa: ANN201
    spec = importlib.util.spec_from_file_location("intent_triage_tools", EXAMPLE / "tools.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "retriever",
    [
        "bm25",
        pytest.param(
            "vectors",
            marks=pytest.mark.skipif(not embeddings_available(), reason="needs the embeddings extra"),
        ),
    ],
)
def test_retrieve_finds_stored_message(tools, retriever: str) -> None:
    # A message of the memory file is its own nearest neighbour under either retriever.
    text, intent = "Hello, the new card you promised still isn't here. Has it actually been posted?", "card_arrival"
    found = tools.retrieve(text, MEMORY, 8, 4, retriever)
    assert found["examples"][0] == {"text": text, "intent": intent}
    assert intent in found["candidates"]
    assert len(found["examples"]) == 4
    assert len(found["votes"]) == len(found["candidates"])
    assert found["votes"] == sorted(found["votes"], reverse=True)


def test_unknown_retriever(tools) -> None:
    with pytest.raises(ValueError, match="bm25 or vectors"):
        tools.retrieve("card", MEMORY, 8, 4, "grep")
