"""The embedding scorer with the real all-MiniLM-L6-v2 weights, where the extra is installed."""

from __future__ import annotations

import asyncio
import os

import pytest

from trunkline.evals import EmbeddingSimilarity, embeddings

pytestmark = pytest.mark.skipif(
    not embeddings.embeddings_available(),
    reason=f"the embeddings extra is not installed ({embeddings.INSTALL_HINT})",
)


def test_paraphrase_scores_above_unrelated_text() -> None:
    scorer = EmbeddingSimilarity()
    paraphrase = scorer("The cat sat on the mat.", "A cat was sitting on a mat.").value
    unrelated = scorer("The cat sat on the mat.", "Quarterly revenue grew by 4%.").value
    assert paraphrase > 0.8
    assert unrelated < 0.2
    same = scorer("Refund my card payment", "Refund my card payment").value
    assert same == pytest.approx(1.0, abs=1e-5)


def test_model_loads_once_and_offline(monkeypatch) -> None:
    for name in embeddings.OFFLINE_ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(embeddings, "_model", None)
    first = embeddings.load_model()
    assert embeddings.load_model() is first
    for name, value in embeddings.OFFLINE_ENVIRONMENT.items():
        assert os.environ[name] == value


def test_ascore_from_an_event_loop() -> None:
    scorer = EmbeddingSimilarity()
    value = asyncio.run(scorer.ascore("I lost my card", "My card is missing")).value
    assert value == pytest.approx(scorer("I lost my card", "My card is missing").value, abs=1e-6)
    assert 0.5 < value <= 1.0
